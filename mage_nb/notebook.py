"""Reading a notebook file: block cells become block specs, plain cells the prelude.

The prelude is the notebook's plain code cells, in order (imports, helpers, constants), run
once into the namespace that block bodies read through to. Cells tagged ``skip`` are left
out. IPython syntax in plain cells is translated by IPython's own input transformer; ``!cmd``
runs in a shell, while magics, which need a kernel, are skipped with a warning (and
``%load_ext mage_nb`` / ``%pipeline`` silently, since a headless run is the pipeline).
"""

from __future__ import annotations

import builtins
import json
import linecache
import re
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .engine.errors import HeaderError, PipelineError, PreludeError
from .engine.spec import BLOCK_MAGICS, BlockSpec, parse_header, split_block_cell

SKIP_TAG = "skip"
#: The ``Notebook.path`` of a kernel's pipeline (a kernel has no notebook file to read).
KERNEL = Path("<kernel>")
_SILENT_MAGICS = {"load_ext", "reload_ext", "pipeline"}


@dataclass
class PreludeCell:
    number: int  # 1-based position among the notebook's cells
    source: str
    #: A Python file the code was read from (an exported folder's prelude.py): its code is
    #: plain Python, and tracebacks and messages name the file and its lines.
    file: str | None = None


@dataclass
class Notebook:
    """A notebook as mage_nb reads it."""

    path: Path  # the .ipynb file, or an exported folder
    specs: list[BlockSpec]
    prelude: list[PreludeCell]
    warnings: list[str] = field(default_factory=list)
    #: The name an exported folder gives its pipeline (else the notebook file's stem).
    pipeline_name: str | None = None

    @property
    def name(self) -> str:
        return self.pipeline_name or self.path.stem


def _read_cells(path: Path) -> list[dict[str, Any]]:
    """The cells of a notebook file.

    Version 4 files (every current Jupyter) are read as the JSON they are: importing
    nbformat's validator costs most of a second of start-up. Older versions go through
    nbformat's converter.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineError(f"no such notebook: {path}") from None
    except OSError as exc:
        raise PipelineError(f"cannot read notebook {path}: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise PipelineError(f"cannot read notebook {path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells", []), list):
        raise PipelineError(f"cannot read notebook {path}: not a Jupyter notebook")
    if data.get("nbformat") == 4:
        return [c for c in data.get("cells", []) if isinstance(c, dict)]
    import nbformat

    try:
        return list(nbformat.reads(text, as_version=4).cells)
    except Exception as exc:  # nbformat raises several kinds for a broken file
        raise PipelineError(f"cannot read notebook {path}: {exc}") from None


def load_notebook(path: str | Path) -> Notebook:
    """Read an ``.ipynb``, or a folder written by ``mage-nb export --to python`` (or its
    ``pipeline.toml``); raise ``PipelineError`` for a file or header that cannot be read."""
    path = Path(path)
    from .export.load import is_pipeline_path, load_folder

    if is_pipeline_path(path):
        return load_folder(path)
    cells = _read_cells(path)
    specs: list[BlockSpec] = []
    prelude: list[PreludeCell] = []
    for number, cell in enumerate(cells, start=1):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(source)
        origin = f"cell {number}"
        split = split_block_cell(source)
        if split is not None:
            header, body = split
            try:
                specs.append(parse_header(header, source=body, origin=origin))
            except HeaderError as exc:
                raise HeaderError(f"{origin}: {exc}") from None
            continue
        if SKIP_TAG in cell.get("metadata", {}).get("tags", []):
            continue
        if source.strip():
            prelude.append(PreludeCell(number, source))
    return Notebook(path=path, specs=specs, prelude=prelude)


class HeadlessShell:
    """Stands in for ``get_ipython()`` while the prelude runs without a kernel."""

    def __init__(self, warnings: list[str]):
        self.warnings = warnings
        self.cell = 0

    def _skip(self, what: str) -> None:
        self.warnings.append(f"cell {self.cell}: skipped {what} (IPython magics need a kernel)")

    def run_line_magic(self, name: str, line: str, _stack_depth: int = 1) -> None:
        if name in _SILENT_MAGICS and (name == "pipeline" or line.split()[:1] == ["mage_nb"]):
            return
        self._skip(f"%{name}")

    def run_cell_magic(self, name: str, line: str, cell: str) -> None:
        self._skip(f"%%{name}")

    def system(self, cmd: str) -> int:
        done = subprocess.run(cmd, shell=True, stdout=sys.stderr, stderr=sys.stderr, check=False)
        return done.returncode

    def getoutput(self, cmd: str, split: bool = True, depth: int = 0) -> list[str] | str:
        done = subprocess.run(cmd, shell=True, capture_output=True, text=True, check=False)
        return done.stdout.splitlines() if split else done.stdout


def _display(*objs: Any, **kwargs: Any) -> Any:
    """IPython's ``display``, imported only when a headless run first calls it."""
    from IPython.display import display

    return display(*objs, **kwargs)


def new_namespace() -> dict[str, Any]:
    """The namespace a headless notebook's prelude and blocks share."""
    return {"__name__": "__main__", "__builtins__": builtins, "display": _display}


# Lines IPython would translate: magics, shell escapes, help (obj?), and `x = !cmd`.
_IPYTHON_SYNTAX = re.compile(r"^\s*[%!]|^\s*\w+\s*=\s*[%!]|\?\s*$", re.M)


def translate_ipython(source: str) -> str:
    """Plain Python stays as it is; IPython syntax goes through IPython's own transformer."""
    if not _IPYTHON_SYNTAX.search(source):
        return source
    from IPython.core.inputtransformer2 import TransformerManager

    return str(TransformerManager().transform_cell(source))


def run_prelude(notebook: Notebook, namespace: dict[str, Any]) -> list[str]:
    """Run the plain cells into ``namespace``; return warnings; raise ``PreludeError``."""
    warnings: list[str] = []
    shell = HeadlessShell(warnings)
    namespace.setdefault("get_ipython", lambda: shell)
    for cell in notebook.prelude:
        shell.cell = cell.number
        filename = cell.file or f"<cell {cell.number}>"
        where = Path(cell.file).name if cell.file else f"cell {cell.number} (prelude)"
        try:
            code_text = cell.source if cell.file else translate_ipython(cell.source)
            linecache.cache[filename] = (len(code_text), None, code_text.splitlines(True), filename)
            code = compile(code_text, filename, "exec")
        except SyntaxError as exc:
            raise PreludeError(f"{where} does not compile: {exc.msg} (line {exc.lineno})") from None
        try:
            exec(code, namespace)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            tb = traceback.TracebackException.from_exception(exc)
            mine = [
                f for f in tb.stack if f.filename.startswith("<cell") or f.filename == cell.file
            ]
            tb.stack[:] = mine or tb.stack
            text = "".join(tb.format())
            raise PreludeError(
                f"{where} raised {type(exc).__name__}: {exc}; nothing ran\n{text}"
            ) from None
    return warnings


def prelude_namespace(path: str) -> dict[str, Any]:
    """A fresh namespace with the notebook's prelude run in it (what a worker process starts
    from; the prelude's warnings were already reported by the run that started it)."""
    namespace = new_namespace()
    run_prelude(load_notebook(path), namespace)
    return namespace


def namespace_from_cells(cells: tuple[str, ...]) -> dict[str, Any]:
    """A fresh namespace with these plain cells run in it: the kernel's prelude, as a worker
    process rebuilds it (a kernel has no notebook file to read)."""
    notebook = Notebook(
        path=KERNEL,
        specs=[],
        prelude=[PreludeCell(number, source) for number, source in enumerate(cells, start=1)],
    )
    namespace = new_namespace()
    run_prelude(notebook, namespace)
    return namespace


def is_prelude_cell(source: str) -> bool:
    """A plain cell that belongs in a worker's prelude: not a block, not a %pipeline command."""
    stripped = source.strip()
    if not stripped or split_block_cell(stripped) is not None:
        return False
    first = stripped.split(maxsplit=1)[0]
    if first in ("%pipeline", "%load_ext", "%reload_ext") or first.startswith("%%"):
        return False
    # IPython's history holds cells translated: a block cell there is a run_cell_magic call.
    return not any(f"run_cell_magic('{magic}'" in stripped for magic in BLOCK_MAGICS)
