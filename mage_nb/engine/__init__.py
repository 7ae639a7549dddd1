"""The pure core of mage_nb: blocks, the DAG, expansion, scheduling and reduction.

Nothing here imports IPython, ipywidgets or Jupyter; the magics, the widget, the CLI and the
exporters are adapters on top and talk to it through ``Pipeline``, ``Run``, ``PipelineRun``
and ``RunListener`` events.
"""

from __future__ import annotations

from .dag import Block, Pipeline
from .decorators import custom, data_exporter, data_loader, exporter, loader, test, transformer
from .errors import BlockCodeError, GraphError, HeaderError, PipelineError, PreludeError
from .events import RunListener
from .executors import DaskExecutor, Executor, ProcessExecutor, SyncExecutor, ThreadExecutor
from .fanout import Fanout, Item
from .instance import BlockRun, Context, ErrorInfo
from .record import PipelineRun
from .scheduler import Run
from .spec import BlockSpec, parse_header

__all__ = [
    "Block",
    "BlockCodeError",
    "BlockRun",
    "BlockSpec",
    "Context",
    "DaskExecutor",
    "ErrorInfo",
    "Executor",
    "Fanout",
    "GraphError",
    "HeaderError",
    "Item",
    "Pipeline",
    "PipelineError",
    "PipelineRun",
    "PreludeError",
    "ProcessExecutor",
    "Run",
    "RunListener",
    "SyncExecutor",
    "ThreadExecutor",
    "custom",
    "data_exporter",
    "data_loader",
    "exporter",
    "loader",
    "parse_header",
    "test",
    "transformer",
]
