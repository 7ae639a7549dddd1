"""The exported ``prelude.py``: a notebook's plain cells as one plain Python module.

Same rules as a headless run of the notebook (``mage_nb.notebook``): cells tagged ``skip``
are already left out by the loader; IPython syntax is translated by IPython's own
transformer; ``!cmd`` stays as the ``get_ipython().system(...)`` call it translates to (which
``mage-nb run`` provides); magics, which need a kernel, are dropped and left in the file as
comments. Each cell is preceded by a comment naming its cell number, so a reader can find it
in the notebook.

Invariant: running the module does what running the cells one after another does in a
headless run. It is checked to compile, cell by cell and as a whole (a ``from __future__``
import below the first cell cannot move into one module); a cell that does not compile is an
``ExportError`` that names it, as ``mage-nb run`` would refuse the notebook.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Sequence

from ..notebook import PreludeCell, translate_ipython
from . import ExportError

#: Magics a headless run skips silently: it is the pipeline run they would set up.
_QUIET = {("load_ext", "mage_nb"), ("reload_ext", "mage_nb")}
_RULE = "# " + "-" * 90


def _magic_call(node: ast.stmt) -> tuple[str, str, str | None] | None:
    """(kind, name, line) of a statement that is just ``get_ipython().run_*_magic(...)``."""
    if not isinstance(node, ast.Expr) or not isinstance(node.value, ast.Call):
        return None
    call = node.value
    func = call.func
    if not (
        isinstance(func, ast.Attribute)
        and func.attr in ("run_line_magic", "run_cell_magic")
        and isinstance(func.value, ast.Call)
        and isinstance(func.value.func, ast.Name)
        and func.value.func.id == "get_ipython"
    ):
        return None
    try:
        args = [ast.literal_eval(a) for a in call.args]
    except ValueError:
        return None
    if func.attr == "run_line_magic" and len(args) >= 2:
        return "line", str(args[0]), str(args[1])
    if func.attr == "run_cell_magic" and len(args) >= 3:
        return "cell", str(args[0]), f"{args[1]}\n{args[2]}"
    return None


def _drop_magics(code: str, label: str) -> tuple[str, list[str]]:
    """Replace statements that only call a magic by comments; return (code, warnings)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code, []  # the compile check reports it
    lines = code.splitlines()
    warnings: list[tuple[int, str]] = []
    edits: list[tuple[int, int, list[str]]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.stmt):
            continue
        found = _magic_call(node)
        if found is None:
            continue
        kind, name, line = found
        first, *rest = (line or "").split("\n")
        typed = f"%{name} {first}".rstrip() if kind == "line" else f"%%{name} {first}".rstrip()
        quiet = (name, first.strip()) in _QUIET or name == "pipeline"
        why = "not needed: mage-nb runs this pipeline" if quiet else "IPython magic, needs a kernel"
        if not quiet:
            warnings.append((node.lineno, f"{label}: dropped {typed.split()[0]} ({why})"))
        indent = " " * node.col_offset
        text = [f"{indent}{'pass  ' if node.col_offset else ''}# dropped: {typed}  ({why})"]
        text += [f"{indent}# {body_line}".rstrip() for body_line in rest if kind == "cell"]
        if kind == "cell" and text[-1].strip() == "#":
            text.pop()
        edits.append((node.lineno, node.end_lineno or node.lineno, text))
    for start, end, text in sorted(edits, reverse=True):
        lines[start - 1 : end] = text
    return "\n".join(lines), [text for _, text in sorted(warnings)]


def _cell_code(cell: PreludeCell) -> tuple[str, list[str]]:
    label = f"cell {cell.number}"
    translated = translate_ipython(cell.source)
    if translated == cell.source:
        return cell.source, []
    return _drop_magics(translated, label)


def _check_compiles(code: str, label: str) -> None:
    try:
        compile(code, f"<{label}>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise ExportError(
            f"{label} (prelude) does not compile: {exc.msg} (line {exc.lineno}); "
            "fix it in the notebook, or tag it `skip`"
        ) from None


def prelude_module(cells: Sequence[PreludeCell], *, intro: str) -> tuple[str, list[str]]:
    """The text of ``prelude.py`` and the export's warnings (magics dropped).

    ``intro`` says where the cells come from; it opens the file as comments.
    """
    parts = [_comment(intro), ""]
    warnings: list[str] = []
    for cell in cells:
        code, dropped = _cell_code(cell)
        _check_compiles(code, f"cell {cell.number}")
        warnings += dropped
        parts += [_RULE, f"# cell {cell.number}", code.rstrip("\n"), ""]
    if not cells:
        parts.append("# (the notebook has no plain code cells)")
    text = "\n".join(parts).rstrip("\n") + "\n"
    try:
        compile(text, "prelude.py", "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise ExportError(
            f"the plain cells do not compile as one module (prelude.py line {exc.lineno}: "
            f"{exc.msg}); a `from __future__` import must be in the first plain cell"
        ) from None
    return text, warnings


def _comment(text: str) -> str:
    return "\n".join(f"# {line}".rstrip() for line in text.splitlines())


def reads_block_outputs(source: str, blocks: Iterable[str]) -> list[str]:
    """Block NAMEs a plain cell reads when it runs (not only inside functions it defines).

    In a kernel such a cell looks at results (``users[0]``); in a prelude, which runs before
    any block, it could only fail. Reads inside ``def``/``lambda`` bodies happen later and
    do not count; nor does a name the cell assigns itself.
    """
    names = set(blocks)
    try:
        tree = ast.parse(translate_ipython(source))
    except SyntaxError:
        return []
    read: list[tuple[int, int, str]] = []
    assigned: set[str] = set()
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assigned.add(node.name)
            defaults = [*node.args.defaults, *node.args.kw_defaults]
            stack.extend([*node.decorator_list, *(d for d in defaults if d is not None)])
            continue
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load) and node.id in names:
                read.append((node.lineno, node.col_offset, node.id))
            elif not isinstance(node.ctx, ast.Load):
                assigned.add(node.id)
        stack.extend(ast.iter_child_nodes(node))
    in_order = [name for _, _, name in sorted(read) if name not in assigned]
    return list(dict.fromkeys(in_order))
