"""The kernel adapter: ``%%block`` (and its aliases) and ``%pipeline``.

Thin by design: headers are parsed by the engine's parser, runs go through ``Session``, the
run tree is the widget fed by engine events. Usage errors are ``UsageError``s with one line;
errors in block code fail their instance (shown in the run tree and below the cell) and never
leave the kernel unusable.
"""

from __future__ import annotations

import argparse
import functools
import shlex
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.display import display

from . import capture, lab
from .engine.errors import PipelineError
from .engine.events import RunListener
from .engine.executors import Executor
from .engine.instance import COMPLETED, FAILED
from .engine.record import PipelineRun
from .engine.spec import parse_header
from .export.prelude import reads_block_outputs
from .notebook import KERNEL, Notebook, PreludeCell, is_prelude_cell, namespace_from_cells
from .runner import make_executor
from .session import Session
from .summary import format_summary

#: Failed instances whose traceback is printed under the cell (the rest are in the tree).
SHOWN_FAILURES = 3


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _subcommand(name: str, *arguments: tuple[tuple[str, ...], dict[str, Any]]) -> _ArgumentParser:
    parser = _ArgumentParser(prog=f"%pipeline {name}", add_help=False)
    for flags, options in arguments:
        parser.add_argument(*flags, **options)
    return parser


_RUN_OPTIONS = (
    (("--executor",), {"choices": ("threads", "sync", "processes", "dask"), "default": "threads"}),
    (("--address",), {"default": None}),
    (("--max-workers",), {"type": int, "default": None}),
    (("--param",), {"action": "append", "default": [], "metavar": "KEY=VALUE"}),
)


@magics_class
class PipelineMagics(Magics):
    """Registers blocks and runs them; one ``Session`` per kernel."""

    def __init__(self, shell: Any):
        super().__init__(shell)
        self.session = Session(shell.user_ns)
        self.capture = capture.InstanceCapture(shell)
        self.show_widget = True
        self._cell_id: str | None = None
        # Plain cells run so far, a worker's prelude: those before the extension loaded come
        # from IPython's history (translated, as IPython stores them), later ones as typed.
        history = shell.user_ns.get("In", [])
        self._prelude: dict[str, None] = dict.fromkeys(
            c for c in history if isinstance(c, str) and is_prelude_cell(c)
        )
        self._background: threading.Thread | None = None
        shell.events.register("pre_run_cell", self._remember_cell)
        self._routes: dict[str, Callable[[list[str]], Any]] = {
            "run": self._run_all,
            "graph": self._graph,
            "status": self._status,
            "retry": self._retry,
            "rerun": self._rerun,
            "inputs": self._inputs,
            "reset": self._reset,
            "forget": self._forget,
            "stop": self._stop,
            "export": self._export,
        }

    def _remember_cell(self, info: Any = None) -> None:
        self._cell_id = getattr(info, "cell_id", None) or None
        raw = getattr(info, "raw_cell", None)
        if isinstance(raw, str) and is_prelude_cell(raw):
            self._prelude[raw] = None  # in first-run order, once each

    # -- block cells -------------------------------------------------------------------------
    @cell_magic
    def block(self, line: str, cell: str) -> Any:
        """%%block KIND NAME [options]: a pipeline block (KIND: loader, transformer, exporter, custom, sql)."""
        return self._block_cell("block", line, cell)

    @cell_magic
    def loader(self, line: str, cell: str) -> Any:
        """%%loader NAME [options]: same as %%block loader NAME."""
        return self._block_cell("loader", line, cell)

    @cell_magic
    def transformer(self, line: str, cell: str) -> Any:
        """%%transformer NAME [options]: same as %%block transformer NAME."""
        return self._block_cell("transformer", line, cell)

    @cell_magic
    def exporter(self, line: str, cell: str) -> Any:
        """%%exporter NAME [options]: same as %%block exporter NAME."""
        return self._block_cell("exporter", line, cell)

    def _block_cell(self, magic: str, line: str, cell: str) -> Any:
        try:
            spec = parse_header(f"%%{magic} {line}", source=cell)
            notes = self.session.register(spec, self._cell_id)
        except PipelineError as exc:
            raise UsageError(str(exc)) from None
        for note in notes:
            print(note, file=sys.stderr)
        if spec.no_run:
            print(f"registered block {spec.name!r} (not run: --no-run)")
            lab.publish(self.session)
            return None
        record = self._execute([spec.name])
        runs = list(record.instances(spec.name))
        if len(runs) == 1 and runs[0].status == COMPLETED and not runs[0].key:
            return runs[0].output
        return None

    # -- runs --------------------------------------------------------------------------------
    def _executor(
        self, name: str = "threads", workers: int | None = None, address: str | None = None
    ) -> Executor:
        try:
            return make_executor(name, workers, address)[0]
        except PipelineError as exc:
            raise UsageError(str(exc)) from None

    def _remote_options(self, workers: int | None, address: str | None) -> dict[str, Any]:
        """What a remote executor needs in a kernel: the plain cells run so far, as the
        prelude its workers rebuild, and a way to make per-block executors."""
        cells = tuple(self._prelude)
        return {
            "setup": functools.partial(namespace_from_cells, cells),
            "executor_factory": lambda kind: make_executor(
                kind, workers, address if kind == "dask" else None
            )[0],
        }

    def _listeners(self) -> tuple[list[RunListener], Any]:
        if not self.show_widget:
            return [], None
        from .widget import RunTree
        from .widget.feed import WidgetFeed

        widget = RunTree()
        widget.stop_callback = self.session.cancel
        display(widget)
        return [WidgetFeed(widget)], widget

    def _execute(
        self,
        targets: list[str] | None,
        *,
        fresh: bool = False,
        memo: Any = None,
        executor: Executor | None = None,
        **remote: Any,
    ) -> PipelineRun:
        capture.install(self.shell)  # again: something may have swapped the streams
        listeners, widget = self._listeners()
        try:
            record = self.session.run(
                targets,
                fresh=fresh,
                memo=memo,
                executor=executor,
                listeners=listeners,
                capture=self.capture,
                **(remote or self._remote_options(None, None)),
            )
        except PipelineError as exc:
            raise UsageError(str(exc)) from None
        finally:
            if executor is not None:
                executor.close(wait=False)
            lab.publish(self.session)  # the lab extension's panel: statuses of this run
        if widget is not None:
            widget.attach(record)
        self._report_failures(record, targets)
        return record

    @staticmethod
    def _report_failures(record: PipelineRun, targets: list[str] | None) -> None:
        """Tracebacks of the run's own blocks under the cell; upstream failures in one line.

        An upstream instance that failed before is computed again (it has no output), so a
        full traceback for it under every later cell would only repeat itself.
        """
        failed = [r for r in record.instances() if r.status == FAILED]
        own = [r for r in failed if targets is None or r.block in targets]
        for r in own[:SHOWN_FAILURES]:
            print(f"✗ {r.uuid} failed (attempt {r.attempts}):", file=sys.stderr)
            if r.error is not None:
                print(r.error.traceback or r.error.line(), file=sys.stderr)
        if len(own) > SHOWN_FAILURES:
            more = len(own) - SHOWN_FAILURES
            print(f"… and {more} more failed instances (see the run tree)", file=sys.stderr)
        upstream = [r for r in failed if r not in own]
        if upstream:
            names = ", ".join(r.uuid for r in upstream[:SHOWN_FAILURES])
            extra = (
                f" and {len(upstream) - SHOWN_FAILURES} more"
                if len(upstream) > SHOWN_FAILURES
                else ""
            )
            print(
                f"upstream instances failed again: {names}{extra} (see the run tree)",
                file=sys.stderr,
            )
        if record.status == "cancelled":
            print(f"run {record.run_id} cancelled", file=sys.stderr)

    # -- %pipeline ---------------------------------------------------------------------------
    @line_magic
    def pipeline(self, line: str) -> Any:
        """%pipeline run|graph|status|retry|rerun UUID|inputs UUID|reset|forget NAME|stop|export."""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%pipeline: {exc}") from None
        if not words or words[0] not in self._routes:
            raise UsageError(f"%pipeline: expected one of {', '.join(self._routes)}")
        return self._routes[words[0]](words[1:])

    def _parse_params(self, pairs: list[str]) -> None:
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise UsageError(f"%pipeline run: --param expects KEY=VALUE, got {pair!r}")
            self.session.params[key] = value

    def _run_all(self, args: list[str]) -> Any:
        parser = _subcommand("run", *_RUN_OPTIONS, (("--background",), {"action": "store_true"}))
        ns = parser.parse_args(args)
        self._parse_params(ns.param)
        executor = self._executor(ns.executor, ns.max_workers, ns.address)
        remote = self._remote_options(ns.max_workers, ns.address)
        if not ns.background:
            self._execute(None, fresh=True, executor=executor, **remote)
            return None
        if self._background is not None and self._background.is_alive():
            raise UsageError(
                "%pipeline run --background: a run is already going on (%pipeline stop)"
            )
        listeners, widget = self._listeners()
        capture.install(self.shell)  # again: something may have swapped the streams
        try:
            run = self.session.start(
                None,
                fresh=True,
                executor=executor,
                listeners=listeners,
                capture=self.capture,
                **remote,
            )
        except PipelineError as exc:
            raise UsageError(str(exc)) from None

        def work() -> None:
            try:
                record = self.session.complete(run)
            finally:
                executor.close(wait=False)
                lab.publish(self.session)
            if widget is not None:
                widget.attach(record)

        self._background = threading.Thread(target=work, name="mage_nb-run", daemon=True)
        self._background.start()
        return None

    def _stop(self, args: list[str]) -> None:
        self.session.cancel()

    def _retry(self, args: list[str]) -> None:
        _subcommand("retry").parse_args(args)
        last = self._last()
        self._execute(last.blocks, memo=self.session.memo_of_last_results())

    def _rerun(self, args: list[str]) -> None:
        ns = _subcommand("rerun", (("uuid",), {})).parse_args(args)
        last = self._last()
        try:
            self.session.find(ns.uuid)
        except PipelineError as exc:
            raise UsageError(str(exc)) from None
        try:
            targets = self.session.downstream_of(ns.uuid.split(":", 1)[0])
        except PipelineError as exc:
            raise UsageError(str(exc)) from None
        targets += [b for b in last.blocks if b not in targets]
        self._execute(targets, memo=self.session.memo_of_last_results(without=ns.uuid))

    def _inputs(self, args: list[str]) -> None:
        ns = _subcommand("inputs", (("uuid",), {})).parse_args(args)
        try:
            bound = self.session.bind_inputs(ns.uuid)
        except PipelineError as exc:
            raise UsageError(str(exc)) from None
        names = ", ".join(bound)
        print(f"bound {names} as the inputs of {ns.uuid}; run its body in a cell to debug it")

    def _status(self, args: list[str]) -> None:
        _subcommand("status").parse_args(args)
        try:
            stale = self.session.stale()
        except PipelineError as exc:
            raise UsageError(str(exc)) from None
        if self.session.last_run is not None:
            print(format_summary(self.session.last_run))
        else:
            print("no run yet")
        if stale:
            print(f"stale or not yet run: {', '.join(stale)}")

    def _reset(self, args: list[str]) -> None:
        _subcommand("reset").parse_args(args)
        self.session.reset()

    def _forget(self, args: list[str]) -> None:
        ns = _subcommand("forget", (("name",), {})).parse_args(args)
        try:
            self.session.forget(ns.name)
        except PipelineError as exc:
            raise UsageError(str(exc)) from None

    def _graph(self, args: list[str]) -> Any:
        ns = _subcommand("graph", (("--expanded",), {"action": "store_true"})).parse_args(args)
        from . import graph

        try:
            if ns.expanded:
                dot = graph.run_dot(self._last())
            else:
                dot = graph.pipeline_dot(self.session.pipeline())
        except PipelineError as exc:
            raise UsageError(str(exc)) from None
        svg = graph.render_svg(dot)
        if svg is not None:
            from IPython.display import SVG

            return SVG(svg)
        print(dot)
        return None

    def _export(self, args: list[str]) -> None:
        """%pipeline export --to python|mage OUT_DIR [--force] [--name NAME]: the registered
        blocks, with the plain cells run so far as the prelude (as a worker process gets them)."""
        ns = _subcommand(
            "export",
            (("--to",), {"choices": ("python", "mage"), "required": True}),
            (("out_dir",), {"metavar": "OUT_DIR"}),
            (("--force",), {"action": "store_true"}),
            (("--name",), {"default": None}),
        ).parse_args(args)
        from .export import export_notebook

        try:
            notebook, left_out = self._kernel_notebook(ns.name or self._default_name(ns.out_dir))
            warnings = export_notebook(notebook, ns.out_dir, to=ns.to, force=ns.force, name=ns.name)
        except PipelineError as exc:
            raise UsageError(f"%pipeline export: {exc}") from None
        for warning in left_out + warnings:
            print(f"warning: {warning}", file=sys.stderr)
        count = len(notebook.specs)
        where = Path(ns.out_dir).resolve()
        print(f"exported {count} block{'s' * (count != 1)} to {where} ({ns.to})")

    def _default_name(self, out_dir: str) -> str:
        """The notebook's name when the front end tells it (``__session__``), else OUT_DIR's."""
        session = self.session.namespace.get("__session__")
        if isinstance(session, str) and session.strip():
            return Path(session).stem
        return Path(out_dir).resolve().name

    def _kernel_notebook(self, name: str) -> tuple[Notebook, list[str]]:
        """The session's blocks in registration order and the kernel's plain cells as the
        prelude; cells that read a block's output (``users[0]``) cannot run before the
        pipeline and are left out (returned as warnings)."""
        pipeline = self.session.pipeline()
        if not len(pipeline):
            raise PipelineError("no blocks yet: run a block cell first")
        specs = [block.spec for block in sorted(pipeline, key=lambda b: b.position)]
        cells: list[PreludeCell] = []
        left_out: list[str] = []
        for number, source in enumerate(self._prelude, start=1):
            reads = reads_block_outputs(source, pipeline.blocks)
            if reads:
                first = source.strip().splitlines()[0][:60]
                left_out.append(
                    f"plain cell {number} ({first!r}) is left out of the prelude: it reads the "
                    f"output of {', '.join(reads)}, which a prelude runs before"
                )
            else:
                cells.append(PreludeCell(number, source))
        return Notebook(KERNEL, specs, cells, pipeline_name=name), left_out

    def _last(self) -> PipelineRun:
        if self.session.last_run is None:
            raise UsageError("no pipeline run yet: run a block cell or %pipeline run first")
        return self.session.last_run


def load(shell: Any) -> PipelineMagics:
    magics = PipelineMagics(shell)
    shell.register_magics(magics)
    lab.load(magics)
    capture.install(shell)
    return magics
