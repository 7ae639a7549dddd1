"""mage_nb: dynamic data pipelines inside Jupyter.

Tag notebook cells as blocks; a ``--dynamic`` block's list output fans out into one instance
of every downstream block per item; ``--reduce`` folds a fan-out back. Run the notebook in
the kernel, or headless with ``mage-nb run`` / ``run_notebook``.
"""

from __future__ import annotations

from .engine import (
    BlockRun,
    Context,
    DaskExecutor,
    Fanout,
    Item,
    PipelineError,
    PipelineRun,
    ProcessExecutor,
    RunListener,
    SyncExecutor,
    ThreadExecutor,
    custom,
    data_exporter,
    data_loader,
    exporter,
    loader,
    test,
    transformer,
)
from .runner import run_notebook

__version__ = "0.1.0"


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext mage_nb``: the block cell magics and ``%pipeline``."""
    from .magics import load

    load(ipython)


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The prebuilt JupyterLab extension (``labextension/``, built into ``mage_nb/labextension``)."""
    return [{"src": "labextension", "dest": "mage-nb"}]


__all__ = [
    "BlockRun",
    "Context",
    "DaskExecutor",
    "Fanout",
    "Item",
    "PipelineError",
    "PipelineRun",
    "ProcessExecutor",
    "RunListener",
    "SyncExecutor",
    "ThreadExecutor",
    "custom",
    "data_exporter",
    "data_loader",
    "exporter",
    "loader",
    "run_notebook",
    "test",
    "transformer",
]
