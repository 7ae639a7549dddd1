"""Run a Mage pipeline through Mage's own block-run scheduler, synchronously, in one process.

Usage (with the Python of the Mage virtualenv, see scripts/mage-venv.sh):

    .mage-venv/bin/python tests/mage_driver.py PROJECT_DIR PIPELINE_UUID OUT.json [--timeout S]

`mage run` executes a pipeline without block runs, so dynamic blocks are not expanded by it.
This driver takes the path Mage's server takes instead:

1. an API trigger creates a PipelineRun in the project's own sqlite database
   (`mage_ai.orchestration.triggers.api.trigger_pipeline`);
2. the scheduler loop `mage_ai.orchestration.pipeline_scheduler.schedule_all()` starts it,
   creates its block runs and hands the runnable ones to the job manager, exactly as the
   server's scheduler does every few seconds;
3. the job manager's queue is replaced by an in-process queue (the server's is a pool of
   processes), so each block-run job (`run_block`) runs right here, one at a time; dynamic
   blocks then create their dynamic child block runs, and the loop goes on until the pipeline
   run is completed or failed.

OUT.json holds the pipeline run's status and, for every block run, its block_uuid (as Mage
names it), its status and the block's output read back through Mage's variable manager.
Exit code: 0 when the pipeline run completed, 1 when it failed, 2 on a time-out (--timeout,
default 300 s), when the run stops making progress, or on a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from typing import Any


class RunTimeout(BaseException):
    """Raised by SIGALRM; a BaseException so that Mage's `except Exception` cannot swallow it."""


# Scheduler ticks in a row that ran no job and left the run unfinished before it counts as stuck.
STUCK_TICKS = 50


class InProcessQueue:
    """Mage's job queue, run synchronously: jobs wait here until `run_pending` runs them."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, Any, tuple, dict]] = []
        self.running: str | None = None
        self.ran: list[str] = []

    # The interface of mage_ai.orchestration.queue.queue.Queue.
    def clean_up_jobs(self) -> None:
        pass

    def enqueue(self, job_id: str, target: Any, *args: Any, **kwargs: Any) -> None:
        if not self.has_job(job_id):
            self.pending.append((job_id, target, args, kwargs))

    def has_job(self, job_id: str, logger: Any = None, logging_tags: Any = None) -> bool:
        return job_id == self.running or any(job[0] == job_id for job in self.pending)

    def kill_job(self, job_id: str) -> None:
        self.pending = [job for job in self.pending if job[0] != job_id]

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def run_pending(self) -> int:
        jobs, self.pending = self.pending, []
        for job_id, target, args, kwargs in jobs:
            self.running = job_id
            try:
                target(*args, **kwargs)
            except Exception:
                # The block executor has already marked the block run failed (on_failure);
                # the server's worker process would log the error and exit the same way.
                print(f"mage_driver: job {job_id} raised:", file=sys.stderr)
                traceback.print_exc()
            finally:
                self.running = None
                self.ran.append(job_id)
        return len(jobs)


def _jsonable(value: Any) -> Any:
    """A block output as JSON: DataFrames as lists of records, other objects as their repr."""
    try:
        import pandas as pd

        if isinstance(value, pd.DataFrame):
            return json.loads(value.to_json(orient="records", date_format="iso"))
        if isinstance(value, pd.Series):
            return json.loads(value.to_json(orient="values", date_format="iso"))
    except ImportError:
        pass
    try:
        import polars as pl

        if isinstance(value, pl.DataFrame):
            return value.to_dicts()
    except ImportError:
        pass
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return repr(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project_dir")
    parser.add_argument("pipeline_uuid")
    parser.add_argument("out_json")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds (default 300)")
    parser.add_argument(
        "--variables", default="{}", help="runtime variables for the run, as a JSON object"
    )
    args = parser.parse_args(argv)

    project_dir = os.path.abspath(args.project_dir)
    if not os.path.isfile(os.path.join(project_dir, "metadata.yaml")):
        print(f"mage_driver: {project_dir} has no metadata.yaml", file=sys.stderr)
        return 2
    pipeline_yaml = os.path.join(project_dir, "pipelines", args.pipeline_uuid, "metadata.yaml")
    if not os.path.isfile(pipeline_yaml):
        print(
            f"mage_driver: no pipeline {args.pipeline_uuid}: {pipeline_yaml} is missing",
            file=sys.stderr,
        )
        return 2

    # Before importing mage_ai: the project, and Mage's data (sqlite database, block outputs,
    # logs) inside the project directory rather than in ~/.mage_data.
    os.environ["MAGE_REPO_PATH"] = project_dir
    if not os.environ.get("MAGE_DATA_DIR"):
        os.environ["MAGE_DATA_DIR"] = project_dir
    os.environ.setdefault("ENV", "prod")
    sys.path.insert(0, os.path.dirname(project_dir))
    os.chdir(project_dir)

    from mage_ai.orchestration.queue.queue_factory import QueueFactory

    queue = InProcessQueue()
    QueueFactory.queue = queue  # before the scheduler module builds its job manager

    from mage_ai.data_preparation.models.pipeline import Pipeline
    from mage_ai.orchestration.db import db_connection
    from mage_ai.orchestration.db.database_manager import database_manager
    from mage_ai.orchestration.db.models.schedules import BlockRun, PipelineRun
    from mage_ai.orchestration.pipeline_scheduler import schedule_all
    from mage_ai.orchestration.triggers.api import trigger_pipeline

    database_manager.run_migrations(log_level=40)
    db_connection.start_session()

    pipeline = Pipeline.get(args.pipeline_uuid, repo_path=project_dir)
    pipeline_run = trigger_pipeline(
        args.pipeline_uuid,
        variables=json.loads(args.variables),
        check_status=False,
        verbose=False,
    )
    run_id = pipeline_run.id
    done = {
        PipelineRun.PipelineRunStatus.COMPLETED,
        PipelineRun.PipelineRunStatus.FAILED,
        PipelineRun.PipelineRunStatus.CANCELLED,
    }

    def on_alarm(signum: int, frame: Any) -> None:
        raise RunTimeout

    # A block that hangs blocks this process, so the time limit is a signal, not a poll.
    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, args.timeout)
    ticks = 0
    idle = 0
    timed_out = False
    stuck = False
    try:
        while True:
            schedule_all()
            ticks += 1
            ran = queue.run_pending()
            db_connection.session.expire_all()
            pipeline_run = db_connection.session.get(PipelineRun, run_id)
            if pipeline_run.status in done:
                break
            idle = 0 if ran else idle + 1
            if idle >= STUCK_TICKS:
                stuck = True
                break
            if not ran:
                time.sleep(0.05)
    except RunTimeout:
        timed_out = True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    db_connection.session.rollback()
    db_connection.session.expire_all()
    pipeline_run = db_connection.session.get(PipelineRun, run_id)

    block_runs = (
        BlockRun.query.filter(BlockRun.pipeline_run_id == run_id).order_by(BlockRun.id).all()
    )
    records = []
    for block_run in block_runs:
        metrics = block_run.metrics or {}
        outputs = _read_outputs(pipeline, pipeline_run, block_run)
        records.append(
            dict(
                block_uuid=block_run.block_uuid,
                status=str(block_run.status.value),
                output=outputs.get("output_0"),
                outputs=outputs,
                dynamic_block_index=metrics.get("dynamic_block_index"),
                dynamic_upstream_block_uuids=metrics.get("dynamic_upstream_block_uuids"),
                error=metrics.get("error"),
            )
        )
    report = dict(
        pipeline_uuid=args.pipeline_uuid,
        pipeline_run_id=run_id,
        status=str(pipeline_run.status.value),
        timed_out=timed_out,
        stuck=stuck,
        scheduler_ticks=ticks,
        jobs=queue.ran,
        block_runs=records,
    )
    with open(args.out_json, "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)

    if timed_out:
        print(
            f"mage_driver: pipeline run {run_id} of {args.pipeline_uuid} did not finish within "
            f"{args.timeout:g} s (status {report['status']}); see {args.out_json}",
            file=sys.stderr,
        )
        return 2
    if stuck:
        print(
            f"mage_driver: pipeline run {run_id} of {args.pipeline_uuid} stopped making progress "
            f"(status {report['status']}, no block run to start in {STUCK_TICKS} scheduler "
            f"ticks); see {args.out_json}",
            file=sys.stderr,
        )
        return 2
    if pipeline_run.status != PipelineRun.PipelineRunStatus.COMPLETED:
        failed = [r["block_uuid"] for r in records if r["status"] != "completed"]
        print(
            f"mage_driver: pipeline run {run_id} of {args.pipeline_uuid} ended "
            f"{report['status']}; block runs not completed: {failed}; see {args.out_json}",
            file=sys.stderr,
        )
        return 1
    return 0


def _read_outputs(pipeline: Any, pipeline_run: Any, block_run: Any) -> dict[str, Any]:
    """Every output_N variable of a block run, read back through Mage's variable manager.

    A dynamic child's block run (`double:u1`) stores its output under the block's own folder
    and its dynamic_block_index (`double/0/output_0`); Mage's own helper maps one to the other.
    """
    from mage_ai.data_preparation.models.block.dynamic.utils import uuid_for_output_variables

    block = pipeline.get_block(block_run.block_uuid.split(":")[0])
    if block is None:
        return {}
    index = (block_run.metrics or {}).get("dynamic_block_index")
    try:
        folder, changed = uuid_for_output_variables(
            block, block_uuid=block_run.block_uuid, dynamic_block_index=index
        )
        names = pipeline.variable_manager.get_variables_by_block(
            pipeline.uuid,
            folder,
            partition=pipeline_run.execution_partition,
            clean_block_uuid=not changed,
            output_variable_only=True,
        )
        return {
            name: _jsonable(
                block.get_variable(
                    block_run.block_uuid,
                    name,
                    dynamic_block_index=index,
                    partition=pipeline_run.execution_partition,
                    raise_exception=True,
                )
            )
            for name in names
        }
    except Exception:
        return {"unreadable": traceback.format_exc(limit=2)}


if __name__ == "__main__":
    sys.exit(main())
