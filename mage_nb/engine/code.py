"""Python block bodies: what they read, and how they are compiled once and called per instance.

A body is compiled into one wrapper function whose globals are the notebook's namespace (the
live dict, never a copy) and whose parameters are ``context``, the upstream outputs and the
names a body finds bound without an import. So an instance costs one call: assignments stay
local to it, free names read through to the notebook, and nothing is parsed per instance.

Expression style returns the value of the last expression statement. Function style returns
the function marked ``@loader``/``@transformer``/... and the engine calls it with the
upstream outputs positionally plus the keyword arguments it accepts.

A name the body reads *before* assigning it (``df = df.dropna()``) would be a local of the
wrapper and fail; such names are passed in from the notebook namespace at call time.
"""

from __future__ import annotations

import ast
import linecache
import sys
from collections import ChainMap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .decorators import PROVIDED, ROLE_DECORATORS, TEST_DECORATOR
from .errors import BlockCodeError

_UNBOUND_PARAM = "__mage_nb_unbound__"
_UNBOUND = object()
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
CO_VARARGS = 0x04
CO_VARKEYWORDS = 0x08


@dataclass(frozen=True)
class BodyInfo:
    """What static analysis of a body found."""

    style: str  # "expression" | "function"
    free_names: tuple[str, ...]  # names read before any assignment, in order of appearance
    assigned: frozenset[str]  # names the body binds at its top level
    function: str | None  # the role-decorated function (function style)
    parameters: tuple[str, ...]  # its parameters, in order
    tests: tuple[str, ...]  # functions decorated @test


def _decorator_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _bound_names(nodes: Iterable[ast.AST]) -> set[str]:
    """Names bound in a scope's own code (not in the scopes nested inside it)."""
    names: set[str] = set()
    declared: set[str] = set()
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            stack.extend(node.decorator_list)
            continue
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, _COMPREHENSIONS):
            names.update(
                n.target.id
                for n in ast.walk(node)
                if isinstance(n, ast.NamedExpr) and isinstance(n.target, ast.Name)
            )
            stack.append(node.generators[0].iter)
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif (isinstance(node, ast.ExceptHandler) and node.name) or (
            isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name
        ):
            names.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            names.add(node.rest)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            declared.update(node.names)
        stack.extend(ast.iter_child_nodes(node))
    return names - declared


def _argument_names(args: ast.arguments) -> list[str]:
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    names = [a.arg for a in every]
    if args.vararg:
        names.append(args.vararg.arg)
    if args.kwarg:
        names.append(args.kwarg.arg)
    return names


class _ReadOrder(ast.NodeVisitor):
    """Walks a body in evaluation order and records the names it reads before binding them.

    Reads inside function bodies happen later, when called: they count as free only if the
    body never binds the name at its top level.
    """

    def __init__(self) -> None:
        self.scopes: list[tuple[str, set[str]]] = []  # (kind, local names), innermost last
        self.bound: set[str] = set()
        self.reads: dict[str, tuple[int, int]] = {}
        self.deferred: dict[str, tuple[int, int]] = {}

    # -- bookkeeping -------------------------------------------------------------------------
    def _read(self, name: str, node: ast.AST) -> None:
        # Whether a read is free follows evaluation order; the upstream order it gives
        # follows the text (line, column), as a reader sees it.
        position = (getattr(node, "lineno", 0), getattr(node, "col_offset", 0))
        for depth, (kind, names) in enumerate(reversed(self.scopes)):
            if kind == "class" and depth > 0:
                continue
            if name in names:
                return
        if any(kind == "function" for kind, _ in self.scopes):
            self._first(self.deferred, name, position)
        elif name not in self.bound:
            self._first(self.reads, name, position)

    @staticmethod
    def _first(found: dict[str, tuple[int, int]], name: str, position: tuple[int, int]) -> None:
        if name not in found or position < found[name]:
            found[name] = position

    def _bind(self, name: str) -> None:
        if not self.scopes:
            self.bound.add(name)
        elif self.scopes[-1][0] == "class":
            # A class body runs top to bottom: a name is its own only once assigned.
            self.scopes[-1][1].add(name)

    def free_names(self) -> tuple[str, ...]:
        found = dict(self.reads)
        for name, pos in self.deferred.items():
            if name not in self.bound:
                self._first(found, name, pos)
        return tuple(sorted(found, key=found.__getitem__))

    # -- names -------------------------------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self._read(node.id, node)
        else:
            self._bind(node.id)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for target in node.targets:
            self.visit(target)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name):
            self._read(node.target.id, node.target)
            self.visit(node.value)
            self._bind(node.target.id)
        else:
            self.visit(node.target)
            self.visit(node.value)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.visit(node.annotation)
        if node.value is not None:
            self.visit(node.value)
        self.visit(node.target)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        if not any(kind != "comprehension" for kind, _ in self.scopes):
            self.bound.add(node.target.id)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self.visit(node.target)
        for stmt in (*node.body, *node.orelse):
            self.visit(stmt)

    visit_AsyncFor = visit_For

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name == "*":
                raise BlockCodeError(
                    "'from ... import *' is not allowed in a block: import names explicitly"
                )
            self._bind((alias.asname or alias.name).split(".")[0])

    visit_ImportFrom = visit_Import

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self._bind(node.name)
        for stmt in node.body:
            self.visit(stmt)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.pattern is not None:
            self.visit(node.pattern)
        if node.name:
            self._bind(node.name)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self._bind(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        for key in node.keys:
            self.visit(key)
        for pattern in node.patterns:
            self.visit(pattern)
        if node.rest:
            self._bind(node.rest)

    # -- scopes ------------------------------------------------------------------------------
    def _visit_arguments_outside(self, args: ast.arguments) -> None:
        for default in (*args.defaults, *(d for d in args.kw_defaults if d is not None)):
            self.visit(default)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for deco in node.decorator_list:
            self.visit(deco)
        self._visit_arguments_outside(node.args)
        self._bind(node.name)
        local = set(_argument_names(node.args)) | _bound_names(node.body)
        self.scopes.append(("function", local))
        for stmt in node.body:
            self.visit(stmt)
        self.scopes.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._visit_arguments_outside(node.args)
        self.scopes.append(
            ("function", set(_argument_names(node.args)) | _bound_names([node.body]))
        )
        self.visit(node.body)
        self.scopes.pop()

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in (*node.decorator_list, *node.bases, *(k.value for k in node.keywords)):
            self.visit(expr)
        self.scopes.append(("class", set()))
        for stmt in node.body:
            self.visit(stmt)
        self.scopes.pop()
        self._bind(node.name)

    def _visit_comprehension(
        self, node: ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp
    ) -> None:
        first, *rest = node.generators
        self.visit(first.iter)
        targets = {
            n.id for g in node.generators for n in ast.walk(g.target) if isinstance(n, ast.Name)
        }
        self.scopes.append(("comprehension", targets))
        for i, gen in enumerate(node.generators):
            if i:
                self.visit(gen.iter)
            for cond in gen.ifs:
                self.visit(cond)
        if isinstance(node, ast.DictComp):
            self.visit(node.key)
            self.visit(node.value)
        else:
            self.visit(node.elt)
        self.scopes.pop()
        del rest

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _visit_comprehension


def _check_top_level(tree: ast.Module, name: str) -> None:
    """Refuse statements that only make sense inside a function."""
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (*_SCOPES,)):
            if isinstance(node, ast.ClassDef):
                stack.extend(node.body)
            continue
        if isinstance(node, (ast.Return, ast.Yield, ast.YieldFrom, ast.Await)):
            word = {
                ast.Return: "return",
                ast.Yield: "yield",
                ast.YieldFrom: "yield from",
                ast.Await: "await",
            }[type(node)]
            raise BlockCodeError(
                f"block {name!r}, line {node.lineno}: '{word}' outside a function "
                "(write a generator function and call it, or use function style)"
            )
        if isinstance(node, (ast.AsyncFor, ast.AsyncWith)):
            raise BlockCodeError(
                f"block {name!r}, line {node.lineno}: 'async' statements need a function"
            )
        stack.extend(ast.iter_child_nodes(node))


def _parse(source: str, name: str, first_line: int) -> ast.Module:
    try:
        tree = ast.parse(source, filename=f"<block {name}>")
    except SyntaxError as exc:
        line = (exc.lineno or 1) + first_line - 1
        raise BlockCodeError(f"block {name!r}, line {line}: {exc.msg}") from None
    if first_line != 1:
        ast.increment_lineno(tree, first_line - 1)
    return tree


def analyse(source: str, name: str = "block", *, first_line: int = 2) -> BodyInfo:
    """Find a body's style, the names it reads before binding, and its decorated functions.

    ``first_line`` is the cell line the body starts on (the header is line 1).
    """
    tree = _parse(source, name, first_line)
    _check_top_level(tree, name)
    reader = _ReadOrder()
    for stmt in tree.body:
        reader.visit(stmt)
    role_functions: list[ast.FunctionDef | ast.AsyncFunctionDef] = []
    tests: list[str] = []
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            decos = {_decorator_name(d) for d in stmt.decorator_list}
            if decos & set(ROLE_DECORATORS):
                role_functions.append(stmt)
            if TEST_DECORATOR in decos:
                tests.append(stmt.name)
    if len(role_functions) > 1:
        names = ", ".join(f.name for f in role_functions)
        raise BlockCodeError(
            f"block {name!r} decorates more than one function as the block: {names}"
        )
    function = parameters = None
    if role_functions:
        fn = role_functions[0]
        if isinstance(fn, ast.AsyncFunctionDef):
            raise BlockCodeError(
                f"block {name!r}: 'async def {fn.name}' is not supported; use a plain def"
            )
        function, parameters = fn.name, tuple(_argument_names(fn.args))
    return BodyInfo(
        style="function" if function else "expression",
        free_names=reader.free_names(),
        assigned=frozenset(reader.bound),
        function=function,
        parameters=parameters or (),
        tests=tuple(tests),
    )


def block_references(info: BodyInfo, block_names: Iterable[str]) -> list[str]:
    """Upstream blocks a body refers to, in positional order (parameters first, SPEC §1.3)."""
    known = set(block_names)
    ordered: dict[str, None] = {}
    for name in (*info.parameters, *info.free_names):
        if name in known:
            ordered.setdefault(name)
    return list(ordered)


@dataclass
class CompiledBody:
    """A body compiled once; ``run`` executes it for one instance."""

    name: str
    info: BodyInfo
    wrapper: Callable[..., Any]
    carried: tuple[str, ...]
    provided: tuple[Any, ...]
    namespace: Mapping[str, Any]
    n_inputs: int

    @property
    def function_style(self) -> bool:
        return self.info.function is not None

    def run(
        self, context: Any, inputs: tuple[Any, ...], kwargs: Callable[[], dict[str, Any]]
    ) -> Any:
        """Run the body for one instance and return its output.

        ``kwargs`` builds the keyword arguments of a function-style call; it is only called
        when the function accepts some.
        """
        if self.carried:
            ns = self.namespace
            carried = tuple(ns.get(n, _UNBOUND) for n in self.carried)
            value, tests = self.wrapper(context, *inputs, *carried, *self.provided)
        else:
            value, tests = self.wrapper(context, *inputs, *self.provided)
        if self.info.function is not None:
            fn = value
            accepted = _accepted_keywords(fn, len(inputs))
            if accepted is None:
                value = fn(*inputs)
            else:
                every = kwargs()
                if accepted is not _ALL:
                    every = {k: v for k, v in every.items() if k in accepted}
                value = fn(*inputs, **every)
        for check in tests:
            code = check.__code__
            if code.co_argcount > 1 or code.co_flags & CO_VARARGS:
                check(value, *inputs)
            else:
                check(value)
        return value


_ALL: frozenset[str] = frozenset()
_KEYWORD_CACHE: dict[tuple[Any, int], frozenset[str] | None] = {}


def _accepted_keywords(fn: Callable[..., Any], n_positional: int) -> frozenset[str] | None:
    """Keyword names ``fn`` accepts beyond its first ``n_positional`` parameters.

    ``_ALL`` means any (it takes ``**kwargs``); ``None`` means none. Cached per code object,
    so the per-instance cost is one dict lookup.
    """
    code = getattr(fn, "__code__", None)
    key = (code, n_positional)
    try:
        return _KEYWORD_CACHE[key]
    except KeyError:
        pass
    if code is None:
        result: frozenset[str] | None = _ALL
    elif code.co_flags & CO_VARKEYWORDS:
        result = _ALL
    else:
        n_args = code.co_argcount + code.co_kwonlyargcount
        names = code.co_varnames[:n_args]
        skip = (
            min(n_positional, code.co_argcount)
            if not code.co_flags & CO_VARARGS
            else code.co_argcount
        )
        keywords = frozenset(names[skip:]) - set(code.co_varnames[: code.co_posonlyargcount])
        result = keywords or None
    if len(_KEYWORD_CACHE) > 4096:
        _KEYWORD_CACHE.clear()
    _KEYWORD_CACHE[key] = result
    return result


def _globals_with_provided(namespace: dict[str, Any]) -> Callable[[], Mapping[str, Any]]:
    """``globals()`` as a block sees it: the notebook's names plus the decorators.

    Mage's block template guards its imports with ``if 'data_loader' not in globals()``;
    this keeps that guard false, so a pasted Mage block needs no ``mage_ai``.
    """
    provided = dict(PROVIDED)
    return lambda: ChainMap(provided, namespace)


def compile_body(
    source: str,
    name: str,
    upstream: tuple[str, ...],
    namespace: dict[str, Any],
    *,
    info: BodyInfo | None = None,
    first_line: int = 2,
    header: str = "",
) -> CompiledBody:
    """Compile a body into a wrapper function of (context, upstream outputs...)."""
    info = info or analyse(source, name, first_line=first_line)
    tree = _parse(source, name, first_line)
    taken = {"context", *upstream}
    loaded = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    provided_names = tuple(n for n in (*PROVIDED, "globals") if n in loaded and n not in taken)
    carried = tuple(
        n
        for n in info.free_names
        if n in info.assigned and n not in taken and n not in provided_names and n != _UNBOUND_PARAM
    )
    body: list[ast.stmt] = [
        ast.parse(f"if {n} is {_UNBOUND_PARAM}: del {n}").body[0] for n in carried
    ]
    body.extend(tree.body)
    tests = ast.Tuple(elts=[ast.Name(t, ast.Load()) for t in info.tests], ctx=ast.Load())
    if info.function is not None:
        result: ast.expr = ast.Name(info.function, ast.Load())
    elif body and isinstance(body[-1], ast.Expr):
        result = body.pop().value  # type: ignore[attr-defined]
    else:
        result = ast.Constant(None)
    ret = ast.Return(ast.Tuple(elts=[result, tests], ctx=ast.Load()))
    ast.copy_location(ret, result if hasattr(result, "lineno") else (body[-1] if body else tree))
    body.append(ret)
    params = ["context", *upstream, *carried]
    if carried:
        params.append(_UNBOUND_PARAM)
    params.extend(provided_names)
    args = ast.arguments(
        posonlyargs=[],
        args=[ast.arg(p) for p in params],
        kwonlyargs=[],
        kw_defaults=[],
        defaults=[],
    )
    extra: dict[str, Any] = {"type_params": []} if sys.version_info >= (3, 12) else {}
    fn = ast.FunctionDef(name=name, args=args, body=body, decorator_list=[], returns=None, **extra)
    last = max(
        (getattr(n, "end_lineno", None) or first_line)
        for n in ast.walk(tree)
        if hasattr(n, "lineno")
    )
    fn.lineno, fn.end_lineno, fn.col_offset, fn.end_col_offset = (
        first_line,
        max(last, first_line),
        0,
        0,
    )
    for node in body:
        if not hasattr(node, "lineno"):
            node.lineno, node.end_lineno, node.col_offset, node.end_col_offset = (
                first_line,
                first_line,
                0,
                0,
            )
    module = ast.Module(body=[fn], type_ignores=[])
    ast.fix_missing_locations(module)
    filename = f"<block {name}>"
    full = (header + "\n" if header else "\n" * (first_line - 1)) + source
    linecache.cache[filename] = (len(full), None, full.splitlines(True), filename)
    code = compile(module, filename, "exec")
    scratch: dict[str, Any] = {}
    exec(code, namespace, scratch)
    provided: tuple[Any, ...] = tuple(
        PROVIDED[n] if n != "globals" else _globals_with_provided(namespace) for n in provided_names
    )
    if carried:
        provided = (_UNBOUND, *provided)
    return CompiledBody(
        name=name,
        info=info,
        wrapper=scratch[name],
        carried=carried,
        provided=provided,
        namespace=namespace,
        n_inputs=len(upstream),
    )
