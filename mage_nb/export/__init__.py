"""Exporting a notebook's pipeline out of Jupyter: a Python folder, or a Mage project.

Each target lives in its own module (``python``: a folder that ``mage-nb run`` runs;
``mage``: a Mage project). They share one error type: ``ExportError`` means the export was
refused (nothing written, or what was written removed) — a ``PipelineError``, so the CLI
exits 2 and the kernel raises ``UsageError``, as for any invalid command.
"""

from __future__ import annotations

from ..engine.errors import PipelineError


class ExportError(PipelineError):
    """An export that cannot be done as asked (target not empty, block not exportable...)."""


__all__ = ["ExportError"]
