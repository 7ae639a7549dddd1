"""``mage-nb``: run a notebook's pipeline headless (``run``); ``export`` and ``graph`` follow.

Exit status: 0 every instance completed; 1 some instance failed or the run was cancelled
(the rest still ran, the record is still written); 2 the notebook or command is invalid and
nothing ran. Progress goes to stderr, the summary to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import os
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from .engine.errors import PipelineError
from .engine.events import RunListener
from .engine.instance import COMPLETED
from .engine.record import PipelineRun
from .runner import run_notebook
from .store import RunStoreError
from .summary import format_summary, format_tree


class ProgressBar(RunListener):
    """A tqdm bar on stderr whose total grows as fan-outs create instances."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.total = 0
        self.done = 0
        self.failed = 0
        self.bar: Any = None
        self._next = 0.0

    def run_started(self, *, run: PipelineRun) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=0, unit=" inst", desc=f"run {run.run_id}", file=sys.stderr, leave=True
        )

    def instance_created(self, *, run: PipelineRun, instance: Any) -> None:
        self.total += 1

    def instance_finished(self, *, run: PipelineRun, instance: Any) -> None:
        self.done += 1
        if instance.status != COMPLETED:
            self.failed += 1
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.interval
            self._refresh()

    def _refresh(self) -> None:
        if self.bar is None:
            return
        self.bar.total = self.total
        self.bar.n = self.done
        if self.failed:
            self.bar.set_postfix_str(f"{self.failed} not completed", refresh=False)
        self.bar.refresh()

    def run_finished(self, *, run: PipelineRun) -> None:
        self._refresh()
        if self.bar is not None:
            self.bar.close()


class EchoOutput(RunListener):
    """Writes what each instance printed in one piece when it finishes.

    Instances run on several threads; their prints are captured per instance (see
    ``mage_nb.capture``) so that two siblings' lines never interleave mid-line.
    """

    def __init__(self, stdout: TextIO, progress: ProgressBar | None = None):
        self.stdout = stdout
        self.progress = progress

    def instance_finished(self, *, run: PipelineRun, instance: Any) -> None:
        captured = instance.captured
        if not captured:
            return
        for text, stream in ((captured.stdout, self.stdout), (captured.stderr, sys.stderr)):
            if text:
                bar = self.progress.bar if self.progress is not None else None
                if bar is not None and stream is sys.stderr:
                    bar.write(text.rstrip("\n"), file=stream)
                else:
                    stream.write(text)
                    stream.flush()


def _capturing(stdout: TextIO, progress: ProgressBar | None = None) -> tuple[Any, EchoOutput]:
    from .capture import InstanceCapture, install

    install()
    return InstanceCapture(), EchoOutput(stdout, progress)


def _params(pairs: Sequence[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise PipelineError(f"--param expects KEY=VALUE, got {pair!r}")
        params[key.strip()] = value
    return params


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mage-nb", description="Dynamic data pipelines from Jupyter notebooks."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a notebook's blocks headless")
    run.add_argument("notebook")
    run.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a run parameter (repeatable)",
    )
    run.add_argument("--json", metavar="PATH", help="write the run record as JSON")
    run.add_argument(
        "--executor", choices=("threads", "processes", "dask", "sync"), default="threads"
    )
    run.add_argument(
        "--address", metavar="DASK_SCHEDULER", help="a Dask scheduler (with --executor dask)"
    )
    run.add_argument(
        "--max-workers", type=int, metavar="N", help="worker threads (default min(32, CPUs + 4))"
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    run.add_argument(
        "--tree", action="store_true", help="also print every instance, nested by lineage"
    )
    run.add_argument(
        "--keep-outputs",
        choices=("all", "preview", "none"),
        default=None,
        help="what the run keeps of each output (default: all with --json, else none)",
    )
    run.add_argument(
        "--store",
        metavar="DIR",
        help="where runs are recorded (default: .mage_nb/runs beside the notebook)",
    )
    run.add_argument("--no-store", action="store_true", help="do not record this run")
    run.add_argument(
        "--resume",
        metavar="RUN_ID",
        help="continue a stored run: only what did not complete (and what needs it) runs",
    )
    _add_runs_parser(sub)
    _add_export_parser(sub)
    _add_graph_parser(sub)
    _add_import_parser(sub)
    return parser


# -- mage-nb export ---------------------------------------------------------------------------
def _add_export_parser(sub: Any) -> None:
    export = sub.add_parser(
        "export",
        help="write the pipeline as a Python folder (mage-nb run runs it) or a Mage project",
    )
    export.add_argument("notebook", help="a notebook (or an exported folder)")
    export.add_argument("--to", required=True, choices=("python", "mage"), help="what to write")
    export.add_argument("out_dir", metavar="OUT_DIR", help="the folder to write (new or empty)")
    export.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty OUT_DIR (files of the same name are replaced)",
    )
    export.add_argument("--name", help="the pipeline's name (default: the notebook's)")


def _export_command(args: argparse.Namespace) -> int:
    """``mage-nb export``: 0 written; 2 invalid notebook or refused (nothing written)."""
    from .export import export_notebook
    from .notebook import load_notebook

    try:
        notebook = load_notebook(args.notebook)
        warnings = export_notebook(
            notebook, args.out_dir, to=args.to, force=args.force, name=args.name
        )
    except PipelineError as exc:
        print(f"mage-nb: error: {exc}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"mage-nb export: warning: {warning}", file=sys.stderr)
    blocks = len(notebook.specs)
    print(f"exported {blocks} block{'s' * (blocks != 1)} to {args.out_dir} ({args.to})")
    if args.to == "python":
        print(f"run it with: mage-nb run {args.out_dir}")
    return 0


# -- mage-nb graph ----------------------------------------------------------------------------
def _add_graph_parser(sub: Any) -> None:
    graph = sub.add_parser("graph", help="draw the DAG (or, with --expanded, a run) as DOT or SVG")
    graph.add_argument("notebook")
    graph.add_argument(
        "--expanded",
        action="store_true",
        help="run the notebook headless first and draw its instances",
    )
    graph.add_argument(
        "-o", "--output", metavar="FILE", help="write FILE.dot (DOT) or FILE.svg (needs `dot`)"
    )
    graph.add_argument(
        "--limit",
        type=int,
        default=20,
        metavar="N",
        help="instances shown per block with --expanded (the rest are counted; default 20)",
    )


def _graph_command(args: argparse.Namespace) -> int:
    """``mage-nb graph``: DOT on stdout, or a .dot/.svg file; 2 if nothing could be drawn."""

    from . import graph

    output: str | None = args.output
    fmt = "dot"
    if output is not None:
        fmt = os.path.splitext(output)[1].lower().lstrip(".")
        if fmt == "gv":
            fmt = "dot"
        if fmt not in ("dot", "svg"):
            print(f"mage-nb: error: -o {output}: expected a .dot or .svg file", file=sys.stderr)
            return 2
        if fmt == "svg" and shutil.which("dot") is None:
            print(
                "mage-nb: error: writing SVG needs Graphviz's `dot` program, which is not "
                "installed (install graphviz, or write a .dot file)",
                file=sys.stderr,
            )
            return 2
    if args.limit < 1:
        print("mage-nb: error: --limit must be at least 1", file=sys.stderr)
        return 2
    try:
        if args.expanded:
            # Whatever the blocks print must not end up in the DOT on stdout.
            capture, echo = _capturing(sys.stderr)
            record = run_notebook(args.notebook, listeners=[echo], capture=capture)
            source = graph.run_dot(record, limit=args.limit)
            if record.status != COMPLETED:
                print(f"mage-nb graph: run {record.run_id} {record.status}", file=sys.stderr)
        else:
            from .engine.dag import Pipeline
            from .notebook import load_notebook

            source = graph.pipeline_dot(Pipeline(load_notebook(args.notebook).specs))
    except PipelineError as exc:
        print(f"mage-nb: error: {exc}", file=sys.stderr)
        return 2
    if output is None:
        sys.stdout.write(source)
        return 0
    text = source if fmt == "dot" else graph.render_svg(source)
    if text is None:  # `dot` went away since the check
        print("mage-nb: error: Graphviz's `dot` program is not installed", file=sys.stderr)
        return 2
    try:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        print(f"mage-nb: error: cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


# -- mage-nb runs -----------------------------------------------------------------------------
def _add_runs_parser(sub: Any) -> None:
    runs = sub.add_parser("runs", help="list the stored runs of a notebook")
    runs.add_argument(
        "notebook", nargs="?", default=".", help="a notebook or folder (default: the current one)"
    )
    runs.add_argument("--store", metavar="DIR", help="the runs directory, if not the default")


def _runs_command(args: argparse.Namespace) -> int:
    """``mage-nb runs``: one line per stored run, oldest first."""
    from .store import default_runs_dir, list_runs

    runs_dir = Path(args.store) if args.store else default_runs_dir(args.notebook)
    rows = [("RUN_ID", "STATUS", "STARTED", "DURATION", "INSTANCES", "NOTEBOOK")]
    for run in list_runs(runs_dir):
        started = (
            _dt.datetime.fromtimestamp(run.started).strftime("%Y-%m-%d %H:%M:%S")
            if run.started
            else "-"
        )
        duration = f"{run.ended - run.started:.1f}s" if run.started and run.ended else "-"
        counts = " ".join(f"{status}={n}" for status, n in run.counts.items())
        if run.resumes:
            counts += f" (resumed {run.resumes}x)"
        rows.append((run.run_id, run.status, started, duration, counts, run.notebook))
    if len(rows) == 1:
        print(f"no stored runs in {runs_dir}")
        return 0
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    return 0


# -- mage-nb import ---------------------------------------------------------------------------
def _add_import_parser(sub: Any) -> None:
    imp = sub.add_parser("import", help="write a Mage project's pipeline as a notebook")
    imp.add_argument("project", metavar="MAGE_PROJECT", help="the Mage project's folder")
    imp.add_argument("pipeline", metavar="PIPELINE", help="the pipeline's uuid")
    imp.add_argument("out", metavar="OUT.ipynb", help="the notebook to write")
    imp.add_argument("--force", action="store_true", help="replace OUT.ipynb if it exists")


def _import_command(args: argparse.Namespace) -> int:
    """``mage-nb import``: 0 written; 2 a project, pipeline or file that cannot be imported."""
    from .export.mage_import import import_mage

    try:
        warnings = import_mage(args.project, args.pipeline, args.out, force=args.force)
    except PipelineError as exc:
        print(f"mage-nb: error: {exc}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"mage-nb import: warning: {warning}", file=sys.stderr)
    print(f"imported the Mage pipeline {args.pipeline} to {args.out}")
    return 0


def _depths(path: str) -> dict[str, int]:
    from .engine.dag import Pipeline
    from .notebook import load_notebook

    pipeline = Pipeline(load_notebook(path).specs)
    return {b.name: len(b.scope) for b in pipeline}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "graph":
        return _graph_command(args)
    if args.command == "export":
        return _export_command(args)
    if args.command == "import":
        return _import_command(args)
    if args.command == "runs":
        return _runs_command(args)
    if args.command != "run":
        print(f"mage-nb {args.command}: not available in this version yet", file=sys.stderr)
        return 2
    if args.max_workers is not None and args.max_workers < 1:
        print("mage-nb: error: --max-workers must be at least 1", file=sys.stderr)
        return 2
    if args.no_store and (args.store or args.resume):
        print("mage-nb: error: --no-store contradicts --store/--resume", file=sys.stderr)
        return 2
    progress = None if args.no_progress else ProgressBar()
    capture, echo = _capturing(sys.stdout, progress)
    listeners: list[RunListener] = [echo] if progress is None else [progress, echo]
    try:
        record = run_notebook(
            args.notebook,
            params=_params(args.param),
            executor=args.executor,
            max_workers=args.max_workers,
            listeners=listeners,
            capture=capture,
            keep_outputs=args.keep_outputs or ("all" if args.json else "none"),
            address=args.address,
            store=False if args.no_store else (args.store or True),
            resume=args.resume,
        )
    except PipelineError as exc:
        print(f"mage-nb: error: {exc}", file=sys.stderr)
        return 2
    except RunStoreError as exc:  # blocks ran, but the record could not be kept
        print(f"mage-nb: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # while the prelude ran: no instance had started
        print("mage-nb: interrupted before any block ran", file=sys.stderr)
        return 1
    if args.json:
        record.write_json(args.json)
    if args.tree:
        print(format_tree(record))
        print()
    print(format_summary(record, _depths(args.notebook)))
    if not args.no_store and record.status != COMPLETED:
        store = ["--store", args.store] if args.store else []
        again = shlex.join(["mage-nb", "run", args.notebook, *store, "--resume", record.run_id])
        print(
            f"mage-nb: run {record.run_id} is stored; continue it with `{again}`", file=sys.stderr
        )
    return 0 if record.status == COMPLETED else 1


def entry() -> None:
    """The console script: ``main()``, then exit without tearing down the run's objects.

    A big run leaves hundreds of thousands of small objects; freeing them one by one at
    interpreter exit cost more than the run's own bookkeeping. Output is flushed first.
    """
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # `mage-nb run ... | head`: the reader left; not an error of ours
        code = 0
    with contextlib.suppress(OSError):
        sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
