"""Running a notebook's pipeline without Jupyter: ``run_notebook``.

Order of checks, so that an invalid notebook never runs anything: the file and every
header are read, the DAG is built and checked, then the prelude runs, then bodies are
compiled and reduce strategies resolved against the prelude's namespace, and only then do
instances run.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .config import load_connections
from .engine.dag import Pipeline
from .engine.errors import PipelineError
from .engine.events import RunListener
from .engine.executors import (
    DaskExecutor,
    Executor,
    ProcessExecutor,
    SyncExecutor,
    ThreadExecutor,
)
from .engine.record import PipelineRun
from .engine.scheduler import OutputCapture, Run
from .notebook import load_notebook, new_namespace, prelude_namespace, run_prelude


def make_executor(
    executor: Executor | str | None, max_workers: int | None = None, address: str | None = None
) -> tuple[Executor, bool]:
    """Return (executor, whether the caller owns it and must close it).

    A Dask scheduler that cannot be reached is a ``PipelineError`` here, before anything runs.
    """
    if address and executor not in (None, "dask"):
        raise PipelineError("--address names a Dask scheduler: use it with --executor dask")
    if executor is None or executor == "threads":
        return ThreadExecutor(max_workers), True
    if executor == "sync":
        return SyncExecutor(), True
    if executor == "processes":
        return ProcessExecutor(max_workers), True
    if executor == "dask":
        dask = DaskExecutor(address, max_workers)
        try:
            dask.connect()
        except (OSError, TimeoutError) as exc:
            raise PipelineError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        return dask, True
    if isinstance(executor, str):
        raise PipelineError(f"unknown executor {executor!r}: use one of threads, processes, dask")
    return executor, False


def run_notebook(
    path: str | Path,
    params: Mapping[str, Any] | None = None,
    executor: Executor | str | None = None,
    *,
    max_workers: int | None = None,
    listeners: Iterable[RunListener] = (),
    run_id: str | None = None,
    address: str | None = None,
    capture: OutputCapture | None = None,
    keep_outputs: str = "all",
) -> PipelineRun:
    """Run every block of a notebook headless and return the run record.

    Raises ``PipelineError`` (nothing ran) for an invalid notebook; failures inside blocks
    are in the record, never raised. ``keep_outputs`` ("all", "preview", "none") is what
    the record keeps of each instance's output.
    """
    notebook = load_notebook(path)
    pipeline = Pipeline(notebook.specs)
    chosen, owned = make_executor(executor, max_workers, address)
    record: PipelineRun | None = None
    try:
        namespace = new_namespace()
        warnings = run_prelude(notebook, namespace)
        run = Run(
            pipeline,
            namespace,
            params=params,
            executor=chosen,
            listeners=list(listeners),
            run_id=run_id,
            capture=capture,
            connections=load_connections(Path(path).parent),
            keep_outputs=keep_outputs,
            setup=functools.partial(prelude_namespace, str(path)),
            executor_factory=lambda kind: make_executor(
                kind, max_workers, address if kind == "dask" else None
            )[0],
        )
        run.record.warnings.extend(warnings)
        record = run.execute()
        return record
    finally:
        if owned:
            # A finished run leaves idle workers: wait for them to go. A cancelled one may
            # leave a body running: do not wait on it.
            chosen.close(wait=record is not None and record.status != "cancelled")
