"""``mage-nb import MAGE_PROJECT PIPELINE OUT.ipynb``: a Mage pipeline as a notebook.

Each Mage block becomes one function-style block cell, its file as it is (Mage's
``if 'transformer' not in globals(): from mage_ai... import transformer`` guards taken off:
the decorators exist in every block without an import), under a header that says what
Mage's ``metadata.yaml`` says: kind, ``--dynamic`` for ``dynamic: true``, ``--reduce`` for
``reduce_output: true``, ``--upstream`` in Mage's order (Mage's parameters are rarely named
after blocks, so the edges are always given), ``--retries``/``--retry-delay`` and
``--timeout``. SQL blocks become ``%%block sql`` with ``{{ df_N }}`` replaced by the N-th
upstream block's NAME (a table there).

Mage hands a block's return value on by its own rules, which mage_nb's do not share: a
returned list or tuple is a list of separate outputs (one element: downstream gets the
element; ``None`` or ``[]``: an empty list), and keyword arguments reach only functions that
take ``**kwargs``. A plain cell defines ``mage_block``, a decorator that applies those
rules, and every non-dynamic Python block is decorated with it, so that the notebook computes
what Mage computes.

Refused (``MageImportError``, exit 2, nothing written): a missing project or pipeline, a
``metadata.yaml`` that is not YAML or not a pipeline, a missing block file, block types and
languages mage_nb has no block for (dbt, sensors, R...). Scratchpads, markdown and charts
are left out with a warning.
"""

from __future__ import annotations

import ast
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.code import _decorator_name
from ..engine.decorators import ROLE_DECORATORS
from ..engine.errors import PipelineError
from ..engine.spec import RESERVED_NAMES, BlockSpec, parse_header

#: Mage block type -> mage_nb kind (Python blocks; SQL blocks are kind sql whatever the type).
KINDS = {
    "data_loader": "loader",
    "transformer": "transformer",
    "data_exporter": "exporter",
    "custom": "custom",
}
FOLDERS = {
    "data_loader": "data_loaders",
    "transformer": "transformers",
    "data_exporter": "data_exporters",
    "custom": "custom",
}
SKIPPED_TYPES = ("scratchpad", "markdown", "chart")
LANGUAGES = {"python": "py", "sql": "sql"}

MAGE_BLOCK_HELPER = '''\
import inspect


def mage_block(function):
    """Mage's rules for a block function, in mage_nb (added by `mage-nb import`).

    Mage passes keyword arguments only to a function that takes **kwargs, and hands its
    return value on as separate outputs when it is a list or tuple: downstream blocks get
    the element of a one-element list, [] for None or an empty list, a list otherwise.
    """
    takes_kwargs = any(
        p.kind is p.VAR_KEYWORD for p in inspect.signature(function).parameters.values()
    )

    def block(*inputs, **kwargs):
        value = function(*inputs, **kwargs) if takes_kwargs else function(*inputs)
        if value is None:
            return []
        if isinstance(value, (list, tuple)):
            return value[0] if len(value) == 1 else list(value)
        return value

    block.__name__ = function.__name__
    block.__doc__ = function.__doc__
    return block
'''


class MageImportError(PipelineError):
    """A Mage project or pipeline that cannot be imported (nothing was written)."""


@dataclass
class _Cell:
    source: str
    markdown: bool = False


@dataclass
class ImportResult:
    cells: list[_Cell]
    warnings: list[str] = field(default_factory=list)


def _load_yaml(path: Path, what: str) -> Any:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MageImportError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise MageImportError(f"{what} {path} is not valid YAML{where}: {problem}") from None


def _pipelines(project: Path) -> list[str]:
    folder = project / "pipelines"
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / "metadata.yaml").is_file())


def _names(blocks: list[dict[str, Any]], warnings: list[str]) -> dict[str, str]:
    """Mage block uuid -> a block NAME mage_nb accepts (an identifier, not reserved, unique)."""
    import keyword

    names: dict[str, str] = {}
    taken: set[str] = set()
    for block in blocks:
        uuid = block["uuid"]
        name = re.sub(r"\W", "_", uuid)
        if not name or name[0].isdigit():
            name = f"block_{name}"
        if keyword.iskeyword(name) or name in RESERVED_NAMES:
            name = f"{name}_block"
        base, n = name, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        if name != uuid:
            warnings.append(
                f"Mage block {uuid!r} is named {name!r} (a block NAME is an identifier)"
            )
        taken.add(name)
        names[uuid] = name
    return names


def _block_file(project: Path, block: dict[str, Any], language: str) -> Path:
    configuration = block.get("configuration") or {}
    candidates = []
    source = (configuration.get("file_source") or {}).get("path") or configuration.get("file_path")
    if isinstance(source, str) and source:
        given = Path(source)
        candidates += [given] if given.is_absolute() else [project / given, project.parent / given]
    folder = FOLDERS[block["type"]]
    candidates.append(project / folder / f"{block['uuid']}.{LANGUAGES[language]}")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise MageImportError(
        f"Mage block {block['uuid']!r}: its file is missing "
        f"(looked for {', '.join(str(c) for c in candidates)})"
    )


def _is_guard(node: ast.stmt) -> bool:
    """``if 'transformer' not in globals(): from mage_ai.data_preparation.decorators import ...``."""
    if not isinstance(node, ast.If) or node.orelse:
        return False
    test = node.test
    if not (
        isinstance(test, ast.Compare)
        and len(test.ops) == 1
        and isinstance(test.ops[0], ast.NotIn)
        and isinstance(test.left, ast.Constant)
        and isinstance(test.comparators[0], ast.Call)
        and isinstance(test.comparators[0].func, ast.Name)
        and test.comparators[0].func.id == "globals"
    ):
        return False
    return all(
        isinstance(s, ast.ImportFrom) and (s.module or "").startswith("mage_ai.") for s in node.body
    )


def _python_body(
    text: str, uuid: str, dynamic: bool, warnings: list[str], project: str
) -> tuple[str, bool, list[str]]:
    """(body, whether mage_block decorates it, mage_ai imports it still has)."""
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise MageImportError(
            f"Mage block {uuid!r}: its file does not parse: {exc.msg} (line {exc.lineno})"
        ) from None
    lines = text.split("\n")
    drop: set[int] = set()
    for node in tree.body:
        if _is_guard(node):
            drop.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    roles = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and {_decorator_name(d) for d in node.decorator_list} & set(ROLE_DECORATORS)
    ]
    if len(roles) != 1:
        what = "no function decorated" if not roles else "more than one function decorated"
        raise MageImportError(
            f"Mage block {uuid!r}: its file has {what} @data_loader, @transformer, "
            "@data_exporter or @custom"
        )
    decorate = not dynamic
    insert_at = roles[0].lineno - 1  # the `def` line, below the decorators
    out = []
    for number, line in enumerate(lines, start=1):
        if number - 1 == insert_at and decorate:
            out.append(" " * roles[0].col_offset + "@mage_block")
        if number not in drop:
            out.append(line)
    body = "\n".join(out).strip("\n")
    body = re.sub(r"\n{3,}", "\n\n\n", body)
    mage_ai = sorted(
        {
            (n.module if isinstance(n, ast.ImportFrom) else a.name) or ""
            for n in ast.walk(tree)
            if isinstance(n, (ast.Import, ast.ImportFrom)) and not _inside_guard(n, tree)
            for a in n.names
            if ((n.module or "") if isinstance(n, ast.ImportFrom) else a.name).startswith("mage_ai")
        }
    )
    if mage_ai:
        warnings.append(
            f"Mage block {uuid!r} imports {', '.join(mage_ai)}: it needs mage-ai installed "
            "where the notebook runs"
        )
    local = sorted(
        {
            (n.module or "") if isinstance(n, ast.ImportFrom) else a.name
            for n in ast.walk(tree)
            if isinstance(n, (ast.Import, ast.ImportFrom))
            for a in n.names
            if ((n.module or "") if isinstance(n, ast.ImportFrom) else a.name).split(".")[0]
            == project
        }
    )
    if local:
        warnings.append(
            f"Mage block {uuid!r} imports {', '.join(local)} from the Mage project itself: "
            "run the notebook with the project's parent folder on PYTHONPATH"
        )
    return body, decorate, mage_ai


def _inside_guard(node: ast.AST, tree: ast.Module) -> bool:
    return any(_is_guard(g) and node in ast.walk(g) for g in tree.body if isinstance(g, ast.If))


_DF = re.compile(r"{{\s*df_(\d+)\s*}}")


def _sql_body(text: str, uuid: str, upstream: list[str], warnings: list[str]) -> str:
    def table(match: re.Match[str]) -> str:
        n = int(match.group(1))
        if not 1 <= n <= len(upstream):
            raise MageImportError(
                f"Mage block {uuid!r}: its SQL reads df_{n}, but the block has "
                f"{len(upstream)} upstream block{'s' * (len(upstream) != 1)}"
            )
        return upstream[n - 1]

    body = _DF.sub(table, text).strip("\n")
    from ..engine.sql import analyse_sql

    try:
        others = [t for t in analyse_sql(body).tables if t not in upstream]
    except PipelineError:
        others = []
    if others:
        warnings.append(
            f"Mage block {uuid!r} reads {', '.join(others)}, which "
            f"{'is not a block' if len(others) == 1 else 'are not blocks'}: Mage reads "
            f"{'it' if len(others) == 1 else 'them'} from the database of its io_config.yaml; "
            "the notebook from DuckDB's in-process database (create them in a plain cell, or "
            "add --connection)"
        )
    if "{{" in body or "{%" in body:
        warnings.append(
            f"Mage block {uuid!r}: its SQL has Jinja templates other than df_N, kept as they "
            "are; mage_nb's templates see the upstream outputs, the notebook's globals and "
            "`context`, and send values as bind parameters (Mage pastes them into the SQL)"
        )
    return body


def _header(
    kind: str, name: str, upstream: list[str], block: dict[str, Any], warnings: list[str]
) -> str:
    configuration = block.get("configuration") or {}
    words = ["%%block", kind, name]
    if configuration.get("dynamic"):
        words.append("--dynamic")
    if configuration.get("reduce_output"):
        words.append("--reduce")
    retry = block.get("retry_config") or {}
    if isinstance(retry, dict) and retry.get("retries"):
        words += ["--retries", str(int(retry["retries"]))]
        delay = retry.get("delay", 5)
        if delay:
            words += ["--retry-delay", f"{float(delay):g}"]
        if retry.get("exponential_backoff", True) and delay:
            warnings.append(
                f"Mage block {block['uuid']!r}: retries with exponential backoff become a "
                f"constant --retry-delay {float(delay):g}"
            )
    timeout = block.get("timeout")
    if timeout:
        words += ["--timeout", f"{float(timeout):g}"]
    if upstream:
        words += ["--upstream", *upstream]
    return " ".join(words)


def _check_pipeline(data: Any, path: Path) -> list[dict[str, Any]]:
    if not isinstance(data, dict):
        raise MageImportError(f"{path} is not a Mage pipeline (expected a mapping with blocks:)")
    kind = data.get("type", "python")
    if kind != "python":
        raise MageImportError(
            f"{path}: a {kind!r} pipeline; only standard (python) pipelines can be imported"
        )
    blocks = data.get("blocks")
    if not isinstance(blocks, list):
        raise MageImportError(f"{path} has no list of blocks (blocks:)")
    seen: set[str] = set()
    for i, block in enumerate(blocks):
        if not isinstance(block, dict) or not isinstance(block.get("uuid"), str):
            raise MageImportError(f"{path}: block {i + 1} has no uuid")
        uuid = block["uuid"]
        if uuid in seen:
            raise MageImportError(f"{path}: block {uuid!r} is listed twice")
        seen.add(uuid)
        ups = block.get("upstream_blocks") or []
        if not isinstance(ups, list) or not all(isinstance(u, str) for u in ups):
            raise MageImportError(f"{path}: block {uuid!r}: upstream_blocks is not a list of uuids")
    for block in blocks:
        for up in block.get("upstream_blocks") or []:
            if up not in seen:
                raise MageImportError(
                    f"{path}: block {block['uuid']!r} lists upstream {up!r}, which is not a block "
                    "of the pipeline"
                )
    return blocks


def import_pipeline(project: str | os.PathLike[str], pipeline: str) -> ImportResult:
    """Read a Mage project's pipeline as notebook cells; raise ``MageImportError``."""
    root = Path(project)
    if not root.is_dir():
        raise MageImportError(f"no such Mage project: {project} is not a folder")
    if not (root / "metadata.yaml").is_file():
        raise MageImportError(f"{project} is not a Mage project (it has no metadata.yaml)")
    path = root / "pipelines" / pipeline / "metadata.yaml"
    if not path.is_file():
        known = ", ".join(_pipelines(root)) or "none"
        raise MageImportError(
            f"the Mage project {project} has no pipeline {pipeline!r} (its pipelines: {known})"
        )
    data = _load_yaml(path, "pipeline")
    blocks = _check_pipeline(data, path)
    warnings: list[str] = []
    kept = []
    for block in blocks:
        kind = block.get("type")
        language = block.get("language", "python")
        if kind in SKIPPED_TYPES:
            warnings.append(f"Mage {kind} block {block['uuid']!r} left out (it is not run)")
            continue
        if kind not in KINDS:
            raise MageImportError(
                f"Mage block {block['uuid']!r} is a {kind!r} block; mage_nb has loaders, "
                "transformers, exporters, custom and SQL blocks"
            )
        if language not in LANGUAGES:
            raise MageImportError(
                f"Mage block {block['uuid']!r} is written in {language!r}; mage_nb runs Python "
                "and SQL blocks"
            )
        kept.append(block)
    left_out = {b["uuid"] for b in blocks} - {b["uuid"] for b in kept}
    for block in kept:
        dropped = [u for u in block.get("upstream_blocks") or [] if u in left_out]
        if dropped:
            raise MageImportError(
                f"Mage block {block['uuid']!r} reads {', '.join(dropped)}, which cannot be imported"
            )
    for section in ("callbacks", "conditionals", "widgets"):
        if data.get(section):
            warnings.append(f"the pipeline's {section} are left out (mage_nb has none)")
    names = _names(kept, warnings)
    cells = [
        _Cell(
            f"# {data.get('name') or pipeline}\n\n"
            f"Imported by `mage-nb import` from the Mage pipeline `{pipeline}` of "
            f"`{root.resolve().name}`: one block cell per Mage block, its file as it was. "
            "Run it cell by cell, or headless with `mage-nb run`.",
            markdown=True,
        ),
        _Cell("%load_ext mage_nb"),
    ]
    helper_needed = False
    specs: list[BlockSpec] = []
    for block in kept:
        language = block.get("language", "python")
        uuid = block["uuid"]
        name = names[uuid]
        upstream = [names[u] for u in block.get("upstream_blocks") or []]
        configuration = block.get("configuration") or {}
        text = _block_file(root, block, language).read_text(encoding="utf-8")
        if language == "sql":
            kind = "sql"
            body = _sql_body(text, uuid, upstream, warnings)
            provider = configuration.get("data_provider")
            if provider not in (None, "duckdb"):
                warnings.append(
                    f"Mage block {uuid!r} runs on {provider!r} in Mage; in the notebook it runs "
                    "on DuckDB unless you add --connection to its header"
                )
        else:
            kind = KINDS[block["type"]]
            body, decorated, _ = _python_body(
                text, uuid, bool(configuration.get("dynamic")), warnings, root.resolve().name
            )
            helper_needed = helper_needed or decorated
        header = _header(kind, name, upstream, block, warnings)
        try:
            specs.append(parse_header(header, source=body, origin=f"Mage block {uuid}"))
        except PipelineError as exc:
            raise MageImportError(f"Mage block {uuid!r}: {exc}") from None
        cells.append(_Cell(f"{header}\n{body}\n"))
    if helper_needed:
        cells.insert(2, _Cell(MAGE_BLOCK_HELPER.rstrip("\n")))
    _check_graph(specs, kept, names)
    return ImportResult(cells, warnings)


def _check_graph(
    specs: list[BlockSpec], blocks: list[dict[str, Any]], names: dict[str, str]
) -> None:
    """The notebook's DAG must be Mage's (a root block whose parameters happen to be named
    after blocks would otherwise gain edges)."""
    from ..engine.dag import Pipeline

    try:
        built = Pipeline(specs)
    except PipelineError as exc:
        raise MageImportError(f"the imported pipeline is not valid: {exc}") from None
    for block in blocks:
        name = names[block["uuid"]]
        want = [names[u] for u in block.get("upstream_blocks") or []]
        if list(built[name].upstream) != want:
            raise MageImportError(
                f"Mage block {block['uuid']!r} has no upstream blocks in Mage, but its function "
                f"reads {', '.join(built[name].upstream)} by name, which mage_nb would take for "
                "upstream blocks; rename those parameters"
            )


def write_notebook(
    result: ImportResult, out: str | os.PathLike[str], *, force: bool = False
) -> None:
    """Write the cells as an .ipynb (atomically); refuse an existing file unless ``force``."""
    import nbformat

    target = Path(out)
    if target.exists() and not force:
        raise MageImportError(f"{out} exists: choose another file, or pass --force to replace it")
    if target.is_dir():
        raise MageImportError(f"{out} is a folder")
    if not target.parent.is_dir():
        raise MageImportError(f"cannot write {out}: {target.parent} is not a folder")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    for cell in result.cells:
        if cell.markdown:
            nb.cells.append(nbformat.v4.new_markdown_cell(cell.source))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(cell.source))
    fd, scratch = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            nbformat.write(nb, fh)
        os.replace(scratch, target)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise


def import_mage(
    project: str | os.PathLike[str],
    pipeline: str,
    out: str | os.PathLike[str],
    *,
    force: bool = False,
) -> list[str]:
    """Import a Mage pipeline into the notebook ``out``; return warnings."""
    result = import_pipeline(project, pipeline)
    write_notebook(result, out, force=force)
    return result.warnings
