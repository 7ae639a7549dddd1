"""A block body rewritten into the function Mage calls (``export --to mage``).

Mage runs a block by calling the function its file decorates (``@transformer`` …) with the
upstream outputs positionally and the run's variables as keyword arguments. A mage_nb body
is already compiled that way (``engine.code``: the body becomes the body of a function of
the upstream outputs), so the rewrite is textual and small:

* the body is indented into ``def NAME(upstream..., *args, **kwargs):``, line by line (lines
  inside multi-line strings are left as they are, so string values do not change); comments
  and formatting stay;
* expression style: only the final expression statement changes, into ``return [EXPR]``
  (Mage splits a returned list into separate outputs; a one-element list hands the value
  on whole, whatever it is: a list, ``None``, a DataFrame); a dynamic block returns
  ``_mage_nb_fanout(EXPR)`` instead, Mage's ``[items, metadata]``;
* function style: the ``@transformer``/``@test``… decorators inside the body are taken off
  (Mage must find only the outer function) and the outer function calls the inner one with
  the keyword arguments it accepts (``_mage_nb_call``), then its ``@test`` functions;
* names the body reads before assigning them (``df = df.dropna()``) start from the file's
  globals (the prelude), as in mage_nb.

Invariant, checked on every rewrite: the function's syntax tree equals the tree of the
intended rewrite built node by node. When text surgery cannot give that (tabs mixed with
spaces, a decorator sharing a line with code), the function is generated from the tree
instead (``from_tree``): same code, comments lost.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Sequence
from dataclasses import dataclass

from ..engine.code import BodyInfo, _decorator_name
from ..engine.decorators import PROVIDED, ROLE_DECORATORS, TEST_DECORATOR

INDENT = "    "
OUTPUT = "_mage_nb_output"
_TAKEN_OFF = frozenset((*ROLE_DECORATORS, TEST_DECORATOR))
_COMPOUND = (
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.If,
    ast.For,
    ast.While,
    ast.With,
    ast.Try,
    ast.Match,
)


class RewriteError(Exception):
    """A body that cannot be turned into a Mage function (the exporter says why)."""


@dataclass(frozen=True)
class MageFunction:
    """The decorated function of one Mage block file."""

    text: str  # its source, at column 0, ending with a newline
    from_tree: bool  # True when regenerated from the syntax tree (comments lost)


def _char_col(line: str, byte_col: int) -> int:
    """ast column offsets count UTF-8 bytes; text slicing counts characters."""
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="replace"))


def _string_lines(tree: ast.AST) -> set[int]:
    """1-based lines that continue a multi-line string (indenting them would change it)."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) or (
            isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes))
        ):
            end = getattr(node, "end_lineno", None) or node.lineno
            inside.update(range(node.lineno + 1, end + 1))
    return inside


def names_in(tree: ast.AST) -> set[str]:
    """Every identifier a body uses (loads, stores, parameters, imports, definitions)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.arg):
            found.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
        elif isinstance(node, ast.alias):
            found.add((node.asname or node.name).split(".")[0])
    return found


def carried_names(info: BodyInfo, params: Sequence[str]) -> list[str]:
    """Names read before the body assigns them: they start from the notebook's globals."""
    skip = {*params, "context", "globals", *PROVIDED}
    return [n for n in info.free_names if n in info.assigned and n not in skip]


def _role_function(tree: ast.Module, info: BodyInfo) -> ast.FunctionDef:
    for stmt in tree.body:
        if (
            isinstance(stmt, ast.FunctionDef)
            and stmt.name == info.function
            and {_decorator_name(d) for d in stmt.decorator_list} & set(ROLE_DECORATORS)
        ):
            return stmt
    raise RewriteError(f"the function {info.function!r} is not at the top level of the body")


def _removable_decorators(tree: ast.Module) -> list[ast.expr]:
    """Decorators the rewrite takes off: role markers and ``@test`` (top-level defs only)."""
    found = []
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found += [d for d in stmt.decorator_list if _decorator_name(d) in _TAKEN_OFF]
    return found


def _result(value: ast.expr, fanout: bool) -> ast.expr:
    if fanout:
        return ast.Call(ast.Name("_mage_nb_fanout", ast.Load()), [value], [])
    return ast.List([value], ast.Load())


@dataclass(frozen=True)
class _Plan:
    """What changes, as statements (for the tree) and as text (for the source)."""

    final_text: tuple[str, str] | None  # (before, after) around the last expression's text
    final_node: ast.stmt | None  # what the last expression statement becomes
    epilogue: list[str]  # statements appended after the body


def _plan(
    tree: ast.Module,
    info: BodyInfo,
    *,
    params: Sequence[str],
    fanout: bool,
    kwargs_name: str,
    pass_context: bool,
) -> _Plan:
    tests = list(info.tests)
    inputs = f"({params[0]},)" if len(params) == 1 else f"({', '.join(params)})"
    wrap_open, wrap_close = ("_mage_nb_fanout(", ")") if fanout else ("[", "]")
    checks = [f"_mage_nb_test({t}, {OUTPUT}, {inputs})" for t in tests]
    if info.function is not None:
        context = ", context=context" if pass_context else ""
        call = f"_mage_nb_call({info.function}, {inputs}, {kwargs_name}{context})"
        if tests:
            epilogue = [f"{OUTPUT} = {call}", *checks, f"return {wrap_open}{OUTPUT}{wrap_close}"]
        else:
            epilogue = [f"return {wrap_open}{call}{wrap_close}"]
        return _Plan(None, None, epilogue)
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.Expr):
        value = last.value
        if tests:
            node: ast.stmt = ast.Assign([ast.Name(OUTPUT, ast.Store())], value)
            around = (f"{OUTPUT} = ", "")
            epilogue = [*checks, f"return {wrap_open}{OUTPUT}{wrap_close}"]
        else:
            node = ast.Return(_result(value, fanout))
            tuple_parens = isinstance(value, ast.Tuple)
            around = (
                f"return {wrap_open}{'(' if tuple_parens else ''}",
                f"{')' if tuple_parens else ''}{wrap_close}",
            )
            epilogue = []
        return _Plan(around, node, epilogue)
    # No final expression: the output is None (mage_nb's rule).
    if tests:
        epilogue = [f"{OUTPUT} = None", *checks, f"return {wrap_open}{OUTPUT}{wrap_close}"]
    else:
        epilogue = [f"return {wrap_open}None{wrap_close}"]
    return _Plan(None, None, epilogue)


def _signature(name: str, params: Sequence[str], args_name: str, kwargs_name: str) -> str:
    return f"def {name}({''.join(f'{p}, ' for p in params)}*{args_name}, **{kwargs_name}):"


def _expected_tree(
    tree: ast.Module,
    plan: _Plan,
    *,
    decorator: str,
    header: str,
    prologue: Sequence[str],
) -> ast.Module:
    """The rewrite built from nodes: what the text surgery must come to."""
    body = copy.deepcopy(tree)
    for stmt in body.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            stmt.decorator_list = [
                d for d in stmt.decorator_list if _decorator_name(d) not in _TAKEN_OFF
            ]
    statements = list(body.body)
    if plan.final_node is not None:
        node = copy.deepcopy(plan.final_node)
        last = statements[-1]
        assert isinstance(last, ast.Expr)
        if isinstance(node, ast.Assign):
            node.value = last.value
        elif isinstance(node, ast.Return) and isinstance(node.value, ast.List):
            node.value.elts = [last.value]
        elif isinstance(node, ast.Return) and isinstance(node.value, ast.Call):
            node.value.args = [last.value]
        statements[-1] = node
    extra_before = [s for line in prologue for s in ast.parse(line).body]
    extra_after = [s for line in plan.epilogue for s in ast.parse(line).body]
    function = ast.parse(f"@{decorator}\n{header}\n{INDENT}pass\n").body[0]
    assert isinstance(function, ast.FunctionDef)
    function.body = [*extra_before, *statements, *extra_after]
    module = ast.Module(body=[function], type_ignores=[])
    return ast.fix_missing_locations(module)


def _text_surgery(
    body: str,
    tree: ast.Module,
    plan: _Plan,
    *,
    decorator: str,
    header: str,
    prologue: Sequence[str],
) -> str | None:
    """The rewrite as edited source text, or None when the text cannot be edited safely."""
    lines = body.split("\n")
    keep_as_is = _string_lines(tree)
    flags = [i + 1 in keep_as_is for i in range(len(lines))]
    if plan.final_text is not None:
        # The statement's span: it includes parentheses around the expression, which the
        # expression's own span leaves out.
        statement = tree.body[-1]
        assert isinstance(statement, ast.Expr) and statement.end_lineno is not None
        last = statement.end_lineno - 1
        end = _char_col(lines[last], statement.end_col_offset or 0)
        lines[last] = lines[last][:end] + plan.final_text[1] + lines[last][end:]
        first = statement.lineno - 1
        start = _char_col(lines[first], statement.col_offset)
        lines[first] = lines[first][:start] + plan.final_text[0] + lines[first][start:]
    dropped: set[int] = set()
    for deco in _removable_decorators(tree):
        first, last_line = deco.lineno, deco.end_lineno or deco.lineno
        text = lines[first - 1]
        at = _char_col(text, deco.col_offset) - 1
        if at < 0 or text[at] != "@" or text[:at].strip():
            return None
        tail = lines[last_line - 1][_char_col(lines[last_line - 1], deco.end_col_offset or 0) :]
        if tail.strip() and not tail.strip().startswith("#"):
            return None
        dropped.update(range(first, last_line + 1))
    out = [f"@{decorator}", header]
    out += [INDENT + line for line in prologue]
    for number, (line, as_is) in enumerate(zip(lines, flags), start=1):
        if number in dropped:
            continue
        out.append(line if as_is or not line.strip() else INDENT + line)
    while len(out) > 2 and not out[-1].strip():
        out.pop()
    if plan.epilogue and tree.body and isinstance(tree.body[-1], _COMPOUND):
        out.append("")
    out += [INDENT + line for line in plan.epilogue]
    return "\n".join(out) + "\n"


def _same(text: str, expected: ast.Module) -> bool:
    try:
        got = ast.parse(text)
    except SyntaxError:
        return False
    return ast.dump(got) == ast.dump(expected)


def mage_function(
    body: str,
    info: BodyInfo,
    *,
    name: str,
    decorator: str,
    params: Sequence[str],
    fanout: bool = False,
    prologue: Sequence[str] = (),
    pass_context: bool = False,
    args_name: str = "args",
    kwargs_name: str = "kwargs",
) -> MageFunction:
    """The decorated function Mage calls for a block whose body is ``body``.

    ``params`` are the upstream NAMEs in upstream order; ``prologue`` statements open the
    function (``context = ...``); ``fanout`` makes it return Mage's ``[items, metadata]``;
    ``pass_context`` hands ``context`` to a function-style body's function.
    """
    try:
        tree = ast.parse(body)
    except SyntaxError as exc:  # the pipeline was checked; this only guards direct callers
        raise RewriteError(f"the body does not parse: {exc.msg} (line {exc.lineno})") from None
    if info.function is not None:
        _role_function(tree, info)
    prologue = [
        *prologue,
        *(
            f'{n} = globals()["{n}"]  # read before assigned: the prelude\'s value'
            for n in carried_names(info, params)
        ),
    ]
    plan = _plan(
        tree,
        info,
        params=params,
        fanout=fanout,
        kwargs_name=kwargs_name,
        pass_context=pass_context,
    )
    header = _signature(name, params, args_name, kwargs_name)
    expected = _expected_tree(tree, plan, decorator=decorator, header=header, prologue=prologue)
    text = _text_surgery(body, tree, plan, decorator=decorator, header=header, prologue=prologue)
    if text is not None and _same(text, expected):
        return MageFunction(text, from_tree=False)
    return MageFunction(ast.unparse(expected) + "\n", from_tree=True)


# -- SQL -----------------------------------------------------------------------------------------
_CLAUSE_ENDS = frozenset(
    {
        "WHERE",
        "GROUP_BY",
        "ORDER_BY",
        "HAVING",
        "LIMIT",
        "QUALIFY",
        "WINDOW",
        "UNION",
        "EXCEPT",
        "INTERSECT",
        "SEMICOLON",
        "SELECT",
        "OFFSET",
        "FETCH",
    }
)


def sql_tables_to_mage(sql: str, upstream: Sequence[str], tables: Sequence[str]) -> str:
    """Replace table references to upstream blocks by Mage's ``{{ df_N }}`` variables.

    ``upstream`` is the block's upstream order (``df_1`` is the first), ``tables`` the
    upstream NAMEs the query reads as tables. A reference keeps its name as an alias
    (``FROM users`` becomes ``FROM {{ df_1 }} AS users``) so that ``users.id`` still means
    what it meant. Only names right after FROM, JOIN, or a comma of a FROM list are table
    references; the caller checks that none is left (``analyse_sql`` of the result).
    """
    import sqlglot
    from sqlglot.tokens import TokenType

    wanted = {name: upstream.index(name) + 1 for name in tables}
    tokens = sqlglot.Dialect.get_or_raise("duckdb").tokenize(sql)
    in_from = [False]  # per parenthesis depth: inside a FROM list
    edits: list[tuple[int, int, str]] = []
    for i, token in enumerate(tokens):
        kind = token.token_type
        if kind == TokenType.L_PAREN:
            in_from.append(False)
            continue
        if kind == TokenType.R_PAREN:
            if len(in_from) > 1:
                in_from.pop()
            continue
        if kind == TokenType.FROM:
            in_from[-1] = True
            continue
        if kind.name in _CLAUSE_ENDS:
            in_from[-1] = False
            continue
        # A block NAME may be a keyword to the tokenizer (`row`, `values`): match the text.
        if token.text not in wanted or kind in (TokenType.STRING, TokenType.NATIONAL_STRING):
            continue
        before = tokens[i - 1].token_type if i else None
        after = tokens[i + 1].token_type if i + 1 < len(tokens) else None
        if before == TokenType.DOT or after == TokenType.DOT:
            continue
        joined = before is not None and before.name.endswith("JOIN")
        listed = before == TokenType.COMMA and in_from[-1]
        if not (before == TokenType.FROM or joined or listed):
            continue
        aliased = after in (TokenType.ALIAS, TokenType.VAR, TokenType.IDENTIFIER)
        text = "{{ df_" + str(wanted[token.text]) + " }}"
        if not aliased:
            text += f" AS {sql[token.start : token.end + 1]}"
        edits.append((token.start, token.end + 1, text))
    for start, end, text in reversed(edits):
        sql = sql[:start] + text + sql[end:]
    return sql
