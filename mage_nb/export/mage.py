"""``export --to mage``: a Mage project (mage-ai 0.9.80) that Mage itself runs.

```
OUT_DIR/
  metadata.yaml                    the project (standalone)
  io_config.yaml                   only with SQL blocks: DuckDB, as mage_nb's default
  pipelines/NAME/metadata.yaml     the pipeline: blocks, edges, dynamic / reduce_output
  data_loaders/ transformers/ data_exporters/ custom/   one file per block
  README.md                        what was exported, the warnings, how to run it
```

Every Python block becomes a function-style Mage block (``rewrite``): the notebook's plain
cells open each file (Mage runs each block file on its own), then the decorated function,
then the few helpers (``mage_helpers``) that make Mage keep mage_nb's semantics: outputs
handed on whole, dynamic outputs in every form mage_nb accepts and items named as mage_nb
names them, ``context`` where Mage can tell it.

What Mage 0.9.80 cannot express, or runs wrongly, is decided per construct (the table is
in docs/mage.md): a refusal is an ``ExportError`` that lists every offending block, raised
before anything is written; an approximation is exported with a warning. Never silently.
"""

from __future__ import annotations

import ast
import inspect
import math
import re
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.code import BodyInfo
from ..engine.dag import Block, Pipeline
from ..engine.spec import BlockSpec
from ..engine.sql import analyse_sql
from ..notebook import KERNEL, Notebook
from . import ExportError
from . import mage_helpers as helpers
from .prelude import prelude_module
from .rewrite import RewriteError, mage_function, names_in, sql_tables_to_mage

#: Block kind -> (Mage block type, folder, decorator).
MAGE_TYPES = {
    "loader": ("data_loader", "data_loaders", "data_loader"),
    "transformer": ("transformer", "transformers", "transformer"),
    "exporter": ("data_exporter", "data_exporters", "data_exporter"),
    "custom": ("custom", "custom", "custom"),
}
#: ``context`` attributes Mage can tell a block; the rest need mage_nb's scheduler.
CONTEXT_ANYWHERE = frozenset({"params", "block", "attempt", "index"})
CONTEXT_STATIC = frozenset({"uuid", "lineage", "metadata"})
MAGE_VERSION = "0.9.80"
DUCKDB_FILE = "mage_nb.duckdb"
_PIPELINE_NAME = re.compile(r"[^a-z0-9_]+")


@dataclass
class _Findings:
    refusals: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def refuse(self, block: Block | None, message: str) -> None:
        self.refusals.append(f"block {block.name!r}: {message}" if block else message)

    def warn(self, block: Block | None, message: str) -> None:
        self.warnings.append(f"block {block.name!r}: {message}" if block else message)


# -- what Mage can express ------------------------------------------------------------------
def _fanout_problem(block: Block, pipeline: Pipeline) -> str | None:
    """Why the block's place among fan-outs cannot be run by Mage, or None."""
    scope = block.scope
    nested = [s for s in scope if pipeline[s].scope]
    if block.dynamic and scope:
        outer = ", ".join(repr(s) for s in scope)
        reduce = " (--dynamic --reduce reduces, then fans out again)" if block.reduce else ""
        return (
            f"it is --dynamic inside the fan-out of {outer}{reduce}: a nested fan-out, which "
            f"Mage {MAGE_VERSION} runs wrongly (wrong items, or an AttributeError)"
        )
    if nested:
        return None  # reported once, at the nested dynamic block
    if len(scope) > 1:
        return (
            f"it combines the independent fan-outs of {' and '.join(map(repr, scope))} "
            "(a Cartesian product of their items), which Mage cannot express"
        )
    if not scope:
        return None
    carriers = [u for u in block.upstream if pipeline[u].out_scope == scope]
    if len(carriers) > 1:
        names = " and ".join(map(repr, carriers))
        if scope[0] in carriers:
            return (
                f"it reads {names}: the dynamic block and a block inside its fan-out, which "
                f"mage_nb zips item by item; Mage {MAGE_VERSION} hands every instance the "
                "first item instead"
            )
        return (
            f"it reads {names}, two blocks inside the fan-out of {scope[0]!r}, which mage_nb "
            f"zips item by item; Mage {MAGE_VERSION} makes a product of them with wrong "
            "inputs (read one of them, or merge them in one block first)"
        )
    return None


def _is_direct_child(block: Block, pipeline: Pipeline) -> bool:
    """Inside a fan-out and reading its dynamic block itself (Mage gives metadata only then)."""
    return bool(block.scope) and block.scope[0] in block.upstream


def _context_uses(tree: ast.AST) -> tuple[set[str], list[str]]:
    """(attributes read on ``context``, other uses of it as text)."""
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    attributes: set[str] = set()
    other: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "context" and isinstance(node.ctx, ast.Load):
            parent = parents.get(node)
            if isinstance(parent, ast.Attribute) and parent.value is node:
                attributes.add(parent.attr)
            else:
                other.append(f"line {node.lineno}")
    return attributes, other


def _mage_nb_imports(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "mage_nb"]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mage_nb":
            found.append(f"from {node.module} import {', '.join(a.name for a in node.names)}")
    return found


def _role_function(tree: ast.Module, info: BodyInfo) -> ast.FunctionDef | None:
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef) and stmt.name == info.function:
            return stmt
    return None


def _yields(function: ast.FunctionDef) -> bool:
    """A generator function (a ``yield`` in its own body, not in nested functions)."""
    stack: list[ast.AST] = list(function.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            return True
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        stack.extend(ast.iter_child_nodes(node))
    return False


def _streams(tree: ast.Module, info: BodyInfo) -> bool:
    """Whether a body visibly returns a generator (stream mode, SPEC §4)."""
    if info.function is not None:
        function = _role_function(tree, info)
        return function is not None and _yields(function)
    last = tree.body[-1] if tree.body else None
    return isinstance(last, ast.Expr) and isinstance(last.value, ast.GeneratorExp)


@dataclass
class _Python:
    """What a Python block's file needs besides its body."""

    context: bool = False  # the body reads `context`
    metadata_for_children: bool = False  # a dynamic block: children read context.metadata


def _check_options(block: Block, findings: _Findings) -> None:
    spec = block.spec
    if spec.reduce is not None and spec.reduce != "list":
        findings.refuse(
            block,
            f"--reduce {spec.reduce}: Mage's reduce_output only collects a list; use "
            f"--reduce (list) and apply {spec.reduce} in the block that reads it",
        )
    if spec.reduce_policy == "partial":
        findings.refuse(
            block,
            "--reduce-policy partial: Mage fails whatever reads a reduce when one instance "
            "failed; it has no partial reduce",
        )
    if spec.window is not None:
        findings.warn(
            block,
            f"--window {spec.window} dropped: Mage does not stream a fan-out (it holds the "
            "items as one list)",
        )
    if spec.max_concurrency is not None:
        findings.warn(
            block,
            f"--max-concurrency {spec.max_concurrency} dropped: Mage limits block runs per "
            "pipeline (concurrency_config), not per block",
        )
    if spec.executor is not None:
        findings.warn(
            block,
            f"--executor {spec.executor} dropped: Mage runs block runs in its own executor",
        )
    if spec.timeout is not None:
        findings.warn(
            block,
            f"--timeout {spec.timeout:g} exported as Mage's timeout of "
            f"{max(1, math.ceil(spec.timeout))} s: Mage checks it from its scheduler loop, "
            "between ticks, in whole seconds, so a stuck instance fails later than in mage_nb",
        )


def _check_sql(block: Block, findings: _Findings, names: Iterable[str]) -> None:
    spec = block.spec
    info = block.sql
    if block.dynamic or block.scope:
        where = "--dynamic" if block.dynamic else f"inside the fan-out of {block.scope[0]!r}"
        findings.refuse(
            block,
            f"a SQL block {where}: Mage {MAGE_VERSION} does not create the upstream tables of "
            "dynamic SQL blocks or of their children",
        )
    if spec.connection is not None:
        findings.refuse(
            block,
            f"--connection {spec.connection}: the export writes SQL blocks for DuckDB only "
            "(add the connection to io_config.yaml and change the block by hand)",
        )
    if info is not None and (info.variables or "{%" in spec.source):
        what = ", ".join(info.variables) or "template tags"
        findings.refuse(
            block,
            f"its SQL is a template ({what}): Mage pastes template values into the SQL text "
            "and sees neither the notebook's globals nor upstream values; mage_nb binds them",
        )
    if info is not None and not info.parsed:
        findings.refuse(
            block,
            "its SQL could not be parsed, so its table references cannot be rewritten for Mage",
        )
    if info is not None:
        others = [t for t in info.tables if t not in set(names)]
        if others:
            findings.warn(
                block,
                f"reads {', '.join(others)}, which {'is not a block' if len(others) == 1 else 'are not blocks'}: "
                f"Mage runs SQL on the DuckDB file of io_config.yaml ({DUCKDB_FILE}), not in "
                "the process the notebook's plain cells ran in; create the tables there",
            )
        read = [u for u in block.upstream if u in info.tables]
        if read:
            findings.warn(
                block,
                f"Mage copies {', '.join(read)} into DuckDB tables with cleaned column names "
                "(lower case, other characters as _, and a _ before some 800 words it holds "
                "reserved, among them name, value, count, rank, user and zone), and makes no "
                "table of an empty output: name such columns otherwise",
            )


def _check_python(
    block: Block, pipeline: Pipeline, findings: _Findings, tree: ast.Module
) -> _Python:
    info = block.info
    assert info is not None
    result = _Python()
    imports = _mage_nb_imports(tree)
    if imports:
        findings.refuse(
            block,
            f"it imports mage_nb ({'; '.join(imports)}), which Mage's environment does not "
            "have (return [items, metadata] instead of Fanout / Item)",
        )
    attributes, other = _context_uses(tree)
    role = _role_function(tree, info) if info.function else None
    takes_context = role is not None and "context" in {
        a.arg for a in (*role.args.args, *role.args.kwonlyargs, *role.args.posonlyargs)
    }
    result.context = bool(attributes or other or takes_context)
    if other:
        findings.refuse(
            block,
            f"it uses `context` other than by reading an attribute ({', '.join(other)}); "
            "Mage can only provide context.params, .metadata, .block, .attempt and .index",
        )
    unknown = attributes - CONTEXT_ANYWHERE - CONTEXT_STATIC
    fanout_only = attributes & CONTEXT_STATIC
    if block.scope and "metadata" in fanout_only and _is_direct_child(block, pipeline):
        fanout_only = fanout_only - {"metadata"}
    if unknown:
        findings.refuse(
            block,
            f"it reads context.{', context.'.join(sorted(unknown))}, which Mage does not "
            "provide (it has no record of reduced or failed instances)",
        )
    if block.scope and fanout_only:
        why = {
            "metadata": "Mage gives an item's metadata only to the blocks that read the "
            "dynamic block itself",
            "uuid": "Mage names instances below a fan-out differently",
            "lineage": "Mage has no lineage",
        }
        for attribute in sorted(fanout_only):
            findings.refuse(
                block,
                f"it reads context.{attribute} inside the fan-out of {block.scope[0]!r}: "
                f"{why[attribute]}",
            )
    if block.dynamic and _streams(tree, info):
        findings.warn(
            block,
            "it returns a generator (stream mode): Mage gets its items as one list, so "
            "children start when the generator is exhausted and nothing is folded "
            "incrementally; the outputs are the same",
        )
    if role is not None:
        if "block_uuid" in {a.arg for a in (*role.args.args, *role.args.kwonlyargs)}:
            findings.warn(
                block,
                f"{role.name}() takes block_uuid: Mage passes its own (the item's name for a "
                "block reading a dynamic block, else the block's NAME), not mage_nb's "
                "instance uuid",
            )
        if block.scope and not _is_direct_child(block, pipeline):
            findings.warn(
                block,
                f"{role.name}() runs inside the fan-out of {block.scope[0]!r} but does not "
                f"read {block.scope[0]!r}: Mage passes the items' metadata as keyword arguments "
                "only to the blocks that read the dynamic block itself",
            )
    return result


# -- the project ---------------------------------------------------------------------------
def _pipeline_name(notebook: Notebook, name: str | None, findings: _Findings) -> str:
    given = name if name is not None else notebook.name
    if given == KERNEL.stem:  # a kernel's pipeline that nobody named
        given = "pipeline"
    cleaned = _PIPELINE_NAME.sub("_", given.lower()).strip("_")
    if not cleaned:
        raise ExportError(f"cannot make a Mage pipeline name of {given!r}: pass --name")
    if name is not None and cleaned != name:
        raise ExportError(
            f"--name {name!r}: a Mage pipeline name is lower case letters, digits and _ "
            f"(try {cleaned!r})"
        )
    if cleaned != given:
        findings.warn(None, f"the pipeline is named {cleaned!r} (Mage's form of {given!r})")
    return cleaned


def _prelude(notebook: Notebook, findings: _Findings) -> tuple[str, set[str]]:
    """The plain cells as the opening of every block file; the names they define."""
    if not notebook.prelude:
        return "", set()
    source = notebook.path.name if notebook.path != KERNEL else "the kernel"
    intro = textwrap.fill(
        f"The plain cells of {source} (imports, helpers, constants): Mage runs each block "
        "file on its own, so every block file starts with them.",
        width=90,
    )
    text, dropped = prelude_module(notebook.prelude, intro=intro)
    text = text.replace("(not needed: mage-nb runs this pipeline)", "(not needed in Mage)")
    findings.warnings += [f"{w}" for w in dropped]
    text, shell = _drop_shell_commands(text)
    findings.warnings += shell
    tree = ast.parse(text)
    imports = _mage_nb_imports(tree)
    if imports:
        findings.refuse(
            None,
            f"the plain cells import mage_nb ({'; '.join(imports)}), which Mage's environment "
            "does not have",
        )
    defined = names_in(ast.Module(body=list(tree.body), type_ignores=[]))
    return text, defined


def _drop_shell_commands(text: str) -> tuple[str, list[str]]:
    """``!cmd`` lines became ``get_ipython().system(...)``: Mage has no get_ipython."""
    tree = ast.parse(text)
    lines = text.split("\n")
    edits = []
    warnings = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign)):
            continue
        if not any(isinstance(n, ast.Name) and n.id == "get_ipython" for n in ast.walk(node)):
            continue
        end = node.end_lineno or node.lineno
        shown = " ".join(line.strip() for line in lines[node.lineno - 1 : end])
        indent = " " * node.col_offset
        edits.append(
            (node.lineno, end, f"{indent}{'pass  ' if node.col_offset else ''}# dropped: {shown}")
        )
        cell = next(
            (
                line[2:]
                for line in reversed(lines[: node.lineno])
                if re.fullmatch(r"# cell \d+", line)
            ),
            "the plain cells",
        )
        warnings.append(
            f"{cell}: dropped a shell command or IPython call ({shown}): Mage has no IPython"
        )
    for start, end, replacement in sorted(edits, reverse=True):
        lines[start - 1 : end] = [replacement]
    return "\n".join(lines), warnings


def _body(spec: BlockSpec, from_folder: bool) -> str:
    """A block's body; read from an exported Python folder, without the comments that export
    put above it (they describe the folder, not the Mage block)."""
    if not from_folder:
        return spec.source
    from .layout import block_file
    from .python import _without_preamble

    return _without_preamble(spec.source, block_file(spec))


def _free_name(preferred: str, taken: set[str]) -> str:
    name = preferred
    while name in taken:
        name = f"_mage_nb_{name.lstrip('_')}"
    return name


def _yaml(data: Any) -> str:
    import yaml

    return str(yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100))


def _comment(lines: Iterable[str], prefix: str = "#") -> str:
    return "\n".join(f"{prefix} {line}".rstrip() for line in lines)


def _upstream_note(block: Block, pipeline: Pipeline) -> list[str]:
    notes = []
    for up in block.upstream:
        other = pipeline[up]
        if other.dynamic:
            what = "one item of its fan-out (this block runs once per item)"
        elif other.reduce is not None:
            what = "the list of its instances' outputs (reduce_output)"
        elif other.scope:
            what = "the output of its instance for the same item"
        else:
            what = "its output"
        notes.append(f"  {up}: {what}")
    return notes


@dataclass
class _BlockFile:
    path: str
    text: str
    mage: dict[str, Any]


def _python_file(
    block: Block,
    pipeline: Pipeline,
    *,
    needs: _Python,
    prelude: str,
    prelude_names: set[str],
    pipeline_name: str,
    source: str,
    findings: _Findings,
    folder_export: bool,
) -> tuple[str, str]:
    spec = block.spec
    info = block.info
    assert info is not None
    _, folder, decorator = MAGE_TYPES[spec.kind]
    # Names the function's own scope sees (not the parameters of functions inside it).
    taken = {*info.free_names, *info.assigned, *block.upstream, "context"}
    args_name = _free_name("args", taken)
    kwargs_name = _free_name("kwargs", taken)
    function_name = spec.name if spec.name not in prelude_names else f"{spec.name}_block"
    prologue = []
    if needs.context:
        prologue.append(
            f"context = _mage_nb_context({spec.name!r}, {kwargs_name}, fanout={bool(block.scope)})"
        )
    try:
        function = mage_function(
            _body(spec, folder_export),
            info,
            name=function_name,
            decorator=decorator,
            params=block.upstream,
            fanout=block.dynamic,
            prologue=prologue,
            pass_context=needs.context and info.function is not None,
            args_name=args_name,
            kwargs_name=kwargs_name,
        )
    except RewriteError as exc:
        raise ExportError(f"block {spec.name!r}: {exc}") from None
    if function.from_tree:
        findings.warn(
            block,
            "its body could not be re-indented as text (tabs, or a decorator sharing a "
            "line); it was written from its syntax tree, without its comments",
        )
    where = f"{spec.origin} of {source}" if spec.origin else source
    head = [
        f"Block `{spec.name}` ({spec.kind}) of the mage_nb pipeline `{pipeline_name}`,",
        f"exported by `mage-nb export --to mage` from {where}.",
        "",
    ]
    if block.upstream:
        head.append("Mage calls it with, positionally:")
        head += _upstream_note(block, pipeline)
    else:
        head.append("It has no upstream blocks.")
    head.append("")
    if block.dynamic:
        head += [
            "It is dynamic: it returns Mage's [items, metadata] (_mage_nb_fanout), each item",
            "named as mage_nb names it, and every block below runs once per item.",
        ]
    else:
        head += [
            "It returns its output inside a one-element list: Mage splits a returned list into",
            "separate outputs, and one output hands the value on whole.",
        ]
    if spec.reduce is not None:
        head.append("reduce_output: what reads it receives one list of every instance's output.")
    if info.style == "expression":
        head.append("(Expression style in the notebook: its last expression is what it returns.)")
    parts = [_comment(head), ""]
    if prelude:
        parts += [prelude.rstrip("\n"), ""]
    parts += [
        "# " + "-" * 90,
        "# The block",
        f"if {decorator!r} not in globals():",
        f"    from mage_ai.data_preparation.decorators import {decorator}",
        "",
        "",
        function.text.rstrip("\n"),
    ]
    used = _helpers_used(function.text)
    if used:
        parts += [
            "",
            "",
            "# " + "-" * 90,
            "# mage_nb's rules, as Mage runs them (mage_nb.export.mage_helpers)",
        ]
        for helper in used:
            parts += ["", "", inspect.getsource(helper).rstrip("\n")]
        if block.dynamic:
            spec_args = (
                f"{spec.name!r}, children={bool(block.downstream)}, "
                f"max_children={spec.max_children!r}, on_overflow={spec.on_overflow!r}, "
                f"keep_metadata={needs.metadata_for_children}"
            )
            parts += [
                "",
                "",
                "def _mage_nb_fanout(output):",
                f'    """`{spec.name}`\'s output as Mage\'s [items, metadata]."""',
                f"    return _mage_nb_items(output, {spec_args})",
            ]
    return f"{folder}/{spec.name}.py", "\n".join(parts) + "\n"


def _helpers_used(text: str) -> list[Any]:
    used = []
    if "_mage_nb_fanout(" in text:
        used.append(helpers._mage_nb_items)
    for name in ("_mage_nb_call", "_mage_nb_test", "_mage_nb_context"):
        if f"{name}(" in text:
            used.append(getattr(helpers, name))
    return used


def _sql_file(
    block: Block, pipeline: Pipeline, *, pipeline_name: str, source: str, folder_export: bool
) -> tuple[str, str]:
    spec = block.spec
    info = block.sql
    assert info is not None
    read = [u for u in block.upstream if u in info.tables]
    sql = sql_tables_to_mage(_body(spec, folder_export), block.upstream, read)
    check = analyse_sql(sql)
    left = [u for u in read if u in check.tables]
    if left:
        raise ExportError(
            f"block {spec.name!r}: cannot rewrite its references to {', '.join(left)} as "
            "Mage's df_N variables (only table names right after FROM, JOIN or a comma of a "
            "FROM list are rewritten); give the tables an explicit FROM clause"
        )
    folder = "transformers" if block.upstream else "data_loaders"
    where = f"{spec.origin} of {source}" if spec.origin else source
    head = [
        f"Block `{spec.name}` (sql) of the mage_nb pipeline `{pipeline_name}`, exported by",
        f"`mage-nb export --to mage` from {where}. It runs on DuckDB (io_config.yaml).",
    ]
    for n, up in enumerate(block.upstream, start=1):
        head.append(f"df_{n} is the table Mage makes of the output of `{up}`.")
    body = sql if sql.endswith("\n") else sql + "\n"
    return f"{folder}/{spec.name}.sql", _comment(head, "--") + "\n" + body


def _mage_block(block: Block) -> dict[str, Any]:
    spec = block.spec
    if spec.kind == "sql":
        mage_type = "transformer" if block.upstream else "data_loader"
    else:
        mage_type = MAGE_TYPES[spec.kind][0]
    configuration: dict[str, Any] = {}
    if block.dynamic:
        configuration["dynamic"] = True
    if spec.reduce is not None:
        configuration["reduce_output"] = True
    if spec.kind == "sql":
        configuration.update(
            data_provider="duckdb",
            data_provider_profile="default",
            export_write_policy="replace",
        )
    entry: dict[str, Any] = {
        "uuid": spec.name,
        "name": spec.name,
        "type": mage_type,
        "language": "sql" if spec.kind == "sql" else "python",
        "upstream_blocks": list(block.upstream),
        "downstream_blocks": list(block.downstream),
        "configuration": configuration,
    }
    if spec.retries:
        entry["retry_config"] = {
            "retries": spec.retries,
            "delay": spec.retry_delay,
            # Mage gives up once the delays so far plus the next reach max_delay.
            "max_delay": spec.retries * spec.retry_delay + 1,
            "exponential_backoff": False,
        }
    if spec.timeout is not None:
        entry["timeout"] = max(1, math.ceil(spec.timeout))
    return entry


def export_mage(notebook: Notebook, out_dir: Path, *, name: str | None = None) -> list[str]:
    """Write a Mage project for ``notebook`` into ``out_dir``; return the export's warnings.

    Raises ``ExportError`` (before writing anything) when a block uses something Mage cannot
    express or runs wrongly, listing every such block.
    """
    pipeline = Pipeline(notebook.specs)
    findings = _Findings()
    pipeline_name = _pipeline_name(notebook, name, findings)
    prelude, prelude_names = _prelude(notebook, findings)
    source = notebook.path.name if notebook.path != KERNEL else "the kernel"
    from_folder = notebook.path != KERNEL and notebook.path.is_dir()
    names = list(pipeline.blocks)
    needs: dict[str, _Python] = {}
    for block in pipeline:
        problem = _fanout_problem(block, pipeline)
        if problem:
            findings.refuse(block, problem)
        _check_options(block, findings)
        if block.spec.kind == "sql":
            _check_sql(block, findings, names)
            continue
        tree = ast.parse(_body(block.spec, from_folder))
        needs[block.name] = _check_python(block, pipeline, findings, tree)
    for block in pipeline:
        if block.dynamic and not block.scope:
            needs_of = needs.get(block.name)
            if needs_of is not None:
                needs_of.metadata_for_children = any(
                    needs.get(child, _Python()).context for child in block.downstream
                )
    dynamic = [b.name for b in pipeline if b.dynamic and b.downstream]
    if findings.refusals:
        listed = "\n".join(f"  - {r}" for r in findings.refusals)
        raise ExportError(
            f"cannot export {source} to Mage {MAGE_VERSION} "
            f"({len(findings.refusals)} problem{'s' * (len(findings.refusals) != 1)}); "
            f"nothing was written:\n{listed}"
        )
    if dynamic:
        findings.warn(
            None,
            f"{', '.join(map(repr, dynamic))}: a fan-out of zero items fails in Mage "
            f"{MAGE_VERSION} (it runs each block below once, with no input); the exported "
            "dynamic block raises a clear error instead, where mage_nb would run none",
        )
    files: list[_BlockFile] = []
    for block in pipeline:
        if block.spec.kind == "sql":
            path, text = _sql_file(
                block,
                pipeline,
                pipeline_name=pipeline_name,
                source=source,
                folder_export=from_folder,
            )
        else:
            path, text = _python_file(
                block,
                pipeline,
                needs=needs[block.name],
                prelude=prelude,
                prelude_names=prelude_names,
                pipeline_name=pipeline_name,
                source=source,
                findings=findings,
                folder_export=from_folder,
            )
        files.append(_BlockFile(path, text, _mage_block(block)))
    has_sql = any(b.spec.kind == "sql" for b in pipeline)
    _write_project(out_dir, pipeline_name, source, files, has_sql, findings.warnings, pipeline)
    return findings.warnings


def _write_project(
    out_dir: Path,
    pipeline_name: str,
    source: str,
    files: list[_BlockFile],
    has_sql: bool,
    warnings: list[str],
    pipeline: Pipeline,
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    project = {
        "project_type": "standalone",
        "variables_dir": "~/.mage_data",
        "help_improve_mage": False,
    }
    _write(out_dir / "metadata.yaml", _yaml(project))
    if has_sql:
        io_config = {"version": "0.1.1", "default": {"DUCKDB_DATABASE": DUCKDB_FILE}}
        _write(out_dir / "io_config.yaml", _yaml(io_config))
    metadata = {
        "name": pipeline_name,
        "uuid": pipeline_name,
        "type": "python",
        "description": f"Exported by mage_nb (mage-nb export --to mage) from {source}.",
        "blocks": [f.mage for f in files],
    }
    _write(out_dir / "pipelines" / pipeline_name / "metadata.yaml", _yaml(metadata))
    _write(out_dir / "pipelines" / pipeline_name / "__init__.py", "")
    for folder in {f.path.split("/")[0] for f in files}:
        _write(out_dir / folder / "__init__.py", "")
    for f in files:
        _write(out_dir / f.path, f.text)
    _write(out_dir / "README.md", _readme(pipeline_name, source, files, warnings, pipeline))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)


def _readme(
    pipeline_name: str,
    source: str,
    files: list[_BlockFile],
    warnings: list[str],
    pipeline: Pipeline,
) -> str:
    rows = []
    for f in files:
        block = pipeline[f.mage["uuid"]]
        config = ", ".join(
            f"{k}: true" for k in ("dynamic", "reduce_output") if f.mage["configuration"].get(k)
        )
        rows.append(
            f"| `{block.name}` | {f.mage['type']} | [{f.path}]({f.path}) | "
            f"{', '.join(block.upstream) or '—'} | {config or '—'} |"
        )
    noted = "\n".join(f"- {w}" for w in warnings) or "None."
    return f"""# {pipeline_name}

A Mage project (mage-ai {MAGE_VERSION}) exported from `{source}` by
`mage-nb export --to mage`. Open it with `mage start PATH_TO_THIS_FOLDER` and run the pipeline
`{pipeline_name}` from a trigger: dynamic blocks fan out in block runs (`mage run` runs a
pipeline without block runs, so it does not expand them).

Every block is a function-style Mage block. Each Python block file starts with the notebook's
plain cells, then the function Mage calls, then the helpers it uses (mage_nb's rules for
outputs, fan-outs and `context`, as Mage runs them).

## Blocks

| block | type | file | upstream | configuration |
| --- | --- | --- | --- | --- |
{chr(10).join(rows)}

## Warnings of the export

{noted}
"""
