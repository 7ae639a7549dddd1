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
from .engine.dag import Pipeline, block_versions
from .engine.errors import PipelineError
from .engine.events import RunListener
from .engine.executors import (
    DaskExecutor,
    Executor,
    ProcessExecutor,
    SyncExecutor,
    ThreadExecutor,
)
from .engine.record import PipelineRun, jsonable
from .engine.scheduler import OutputCapture, Run
from .notebook import load_notebook, new_namespace, prelude_namespace, run_prelude
from .store import ResumedRunWriter, RunStoreWriter, StoredRun, default_runs_dir, new_run_id


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
    store: str | Path | bool | None = None,
    resume: str | None = None,
) -> PipelineRun:
    """Run every block of a notebook headless and return the run record.

    Raises ``PipelineError`` (nothing ran) for an invalid notebook; failures inside blocks
    are in the record, never raised. ``keep_outputs`` ("all", "preview", "none") is what
    the record keeps of each instance's output. ``store`` records the run in a run store
    (True: ``.mage_nb/runs`` beside the notebook; or that directory); ``resume`` continues
    the stored run of that id: only what did not complete (and what depends on it) runs.
    """
    notebook = load_notebook(path)
    pipeline = Pipeline(notebook.specs)
    listeners = list(listeners)
    stored: StoredRun | None = None
    if resume and store is False:
        raise PipelineError("store=False contradicts resume: a resumed run is a stored run")
    if store or resume:
        runs_dir = default_runs_dir(path) if store in (None, True) else Path(str(store))
        versions = block_versions(pipeline)
        if resume:
            stored = _stored_run(runs_dir, resume, versions, params)
            params, run_id = stored.params, resume
        run_id = run_id or new_run_id()
        recorded: dict[str, Any] = {
            "notebook": str(Path(path).resolve()),
            "params": params or {},
            "versions": versions,
        }
        listeners.append(
            RunStoreWriter(runs_dir / run_id, **recorded)
            if stored is None
            else ResumedRunWriter(runs_dir / run_id, completed=stored.completed(), **recorded)
        )
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
            listeners=listeners,
            run_id=run_id,
            capture=capture,
            connections=load_connections(_project_dir(path)),
            keep_outputs=keep_outputs,
            setup=functools.partial(prelude_namespace, str(path)),
            executor_factory=lambda kind: make_executor(
                kind, max_workers, address if kind == "dask" else None
            )[0],
            restore=stored,
        )
        run.record.warnings.extend(warnings)
        record = run.execute()
        if stored is not None:
            record.warnings.extend(stored.warnings)
        return record
    finally:
        if owned:
            # A finished run leaves idle workers: wait for them to go. A cancelled one may
            # leave a body running: do not wait on it.
            chosen.close(wait=record is not None and record.status != "cancelled")


def _stored_run(
    runs_dir: Path, run_id: str, versions: Mapping[str, str], params: Mapping[str, Any] | None
) -> StoredRun:
    """The stored run to resume, refusing when its results would not be valid now."""
    directory = runs_dir / run_id
    if not directory.is_dir():
        raise PipelineError(f"no stored run {run_id!r} in {runs_dir} (see `mage-nb runs`)")
    stored = StoredRun(directory)
    changed = stored.changed_blocks(versions)
    if changed:
        raise PipelineError(
            f"cannot resume run {run_id!r}: block(s) {', '.join(changed)} changed since it ran "
            "(their code or an upstream block's), so their stored results may be wrong; "
            "start a new run instead"
        )
    if params and jsonable(dict(params)) != stored.params:
        raise PipelineError(
            f"cannot resume run {run_id!r} with other parameters: it ran with "
            f"{stored.params}; resume without --param, or start a new run"
        )
    return stored


def _project_dir(path: str | Path) -> Path:
    """Where a notebook's config lives: beside the notebook, or inside an exported folder."""
    source = Path(path)
    return source if source.is_dir() else source.parent
