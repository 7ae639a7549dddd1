"""Exporting a notebook's pipeline out of Jupyter: a Python folder, or a Mage project.

Each target lives in its own module (``python``: a folder that ``mage-nb run`` runs;
``mage``: a Mage project). They share one error type: ``ExportError`` means the export was
refused (nothing written, or what was written removed) — a ``PipelineError``, so the CLI
exits 2 and the kernel raises ``UsageError``, as for any invalid command.

``export_notebook`` is what the CLI and ``%pipeline export`` call: it refuses an invalid
pipeline, then lets the target write into an empty staging folder that becomes OUT_DIR only
when the target returns (``folder``). A target is ``f(notebook, out_dir, *, name=None) ->
warnings``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine.errors import PipelineError

if TYPE_CHECKING:
    from ..notebook import Notebook


class ExportError(PipelineError):
    """An export that cannot be done as asked (target not empty, block not exportable...)."""


#: Target name -> (module, function) of its exporter, imported when first used.
TARGETS = {
    "python": ("mage_nb.export.python", "export_python"),
    "mage": ("mage_nb.export.mage", "export_mage"),
}


def _exporter(to: str) -> Callable[..., list[str]]:
    if to not in TARGETS:
        raise ExportError(f"unknown export target {to!r}: use one of {', '.join(TARGETS)}")
    module_name, function = TARGETS[to]
    try:
        module: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise ExportError(f"export --to {to} is not available in this version yet") from None
    exporter: Callable[..., list[str]] = getattr(module, function)
    return exporter


def export_notebook(
    notebook: Notebook,
    out_dir: str | Path,
    *,
    to: str,
    force: bool = False,
    name: str | None = None,
) -> list[str]:
    """Export ``notebook`` to OUT_DIR as ``to`` ("python" or "mage"); return warnings.

    Raises ``PipelineError`` (nothing written) for an invalid pipeline, ``ExportError`` for
    an OUT_DIR that is not empty (unless ``force``) or an export that cannot be done.
    """
    from ..engine.dag import Pipeline
    from .folder import staged_folder

    exporter = _exporter(to)
    Pipeline(notebook.specs)  # cycles, duplicates, bad bodies... refused before writing
    with staged_folder(out_dir, force=force) as staging:
        return exporter(notebook, staging, name=name)


__all__ = ["TARGETS", "ExportError", "export_notebook"]
