"""An interactive pipeline: the blocks a kernel has seen, and what their last runs produced.

The kernel adapter (``magics``) registers a block each time its cell runs and asks for a run
of that block. The session keeps, per block, the *version* its results were computed at (a
hash of its header and body and of its upstreams' versions), so a run reuses every fresh
upstream result and recomputes the missing or stale ones; nothing else runs. It also binds
each block's NAME in the notebook namespace after a run.

This module imports nothing from IPython: it is tested on its own and could serve another
front end.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .config import load_connections
from .engine.dag import Pipeline, block_versions
from .engine.errors import GraphError, PipelineError
from .engine.events import RunListener
from .engine.executors import Executor, ThreadExecutor
from .engine.instance import COMPLETED, BlockRun, Context
from .engine.record import PipelineRun
from .engine.rows import inputs_of
from .engine.scheduler import OutputCapture, Run
from .engine.spec import BlockSpec


class InstanceOutputs(list[Any]):
    """A fanned-out block's outputs in instance order, also indexable by uuid.

    ``anonymize_user_data[0]`` and ``anonymize_user_data["anonymize_user_data:for_user_1"]``
    are the same output.
    """

    def __init__(self, runs: Iterable[BlockRun]):
        runs = list(runs)
        super().__init__(r.output for r in runs)
        self._by_uuid = {r.uuid: r.output for r in runs}
        self.statuses = {r.uuid: r.status for r in runs}

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            try:
                return self._by_uuid[key]
            except KeyError:
                raise KeyError(
                    f"no instance {key!r}; instances: {', '.join(self._by_uuid)}"
                ) from None
        return super().__getitem__(key)

    def uuids(self) -> list[str]:
        return list(self._by_uuid)

    def items(self) -> Iterator[tuple[str, Any]]:
        return iter(self._by_uuid.items())


@dataclass
class Registered:
    spec: BlockSpec
    cell_id: str | None
    order: int


class Session:
    """Blocks registered in a kernel, their last results, and runs over them."""

    def __init__(self, namespace: dict[str, Any]):
        self.namespace = namespace
        self.blocks: dict[str, Registered] = {}
        self.cells: dict[str, str] = {}  # cell id -> block NAME
        self.results: dict[str, tuple[str, list[BlockRun]]] = {}  # NAME -> (version, instances)
        self.params: dict[str, Any] = {}
        self.last_run: PipelineRun | None = None
        self.current: Run | None = None
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._pipeline: Pipeline | None = None
        self._versions: dict[str, str] = {}
        self._owned_executor = False

    # -- blocks ------------------------------------------------------------------------------
    def register(self, spec: BlockSpec, cell_id: str | None = None) -> list[str]:
        """Add or update a block; return notes such as a dropped old name.

        A different cell claiming an existing NAME is refused; a cell whose block is
        renamed drops the old NAME (its results and its binding).
        """
        saved = (dict(self.blocks), dict(self.cells), dict(self.results))
        try:
            notes = self._register(spec, cell_id)
            self.pipeline()  # refuse cycles, unknown upstreams... before anything changes
        except PipelineError:
            self.blocks, self.cells, self.results = saved
            self._pipeline = None
            raise
        return notes

    def _register(self, spec: BlockSpec, cell_id: str | None) -> list[str]:
        notes: list[str] = []
        owner = self.blocks.get(spec.name)
        if owner is not None and cell_id and owner.cell_id and owner.cell_id != cell_id:
            raise GraphError(
                f"block {spec.name!r} is already defined by cell {owner.cell_id}; cell {cell_id} "
                "defines it too. A block NAME must be unique in the notebook: rename one of "
                f"them (or drop the other with %pipeline forget {spec.name})"
            )
        if cell_id and self.cells.get(cell_id, spec.name) != spec.name:
            old = self.cells[cell_id]
            self.forget(old)
            notes.append(f"block {old!r} was renamed to {spec.name!r}; {old!r} is forgotten")
        order = owner.order if owner is not None else next(self._order)
        origin = f"cell {cell_id}" if cell_id else spec.origin
        self.blocks[spec.name] = Registered(replace(spec, origin=origin), cell_id, order)
        if cell_id:
            self.cells[cell_id] = spec.name
        self._pipeline = None
        return notes

    def forget(self, name: str) -> None:
        registered = self.blocks.pop(name, None)
        if registered is None:
            raise GraphError(f"no block {name!r}")
        if registered.cell_id:
            self.cells.pop(registered.cell_id, None)
        self.results.pop(name, None)
        self.namespace.pop(name, None)
        self._pipeline = None

    def reset(self) -> None:
        """Forget every result (blocks stay registered)."""
        for name in self.results:
            self.namespace.pop(name, None)
        self.results.clear()
        self.last_run = None

    def pipeline(self) -> Pipeline:
        """The registered blocks as a checked pipeline (cached until a block changes)."""
        if self._pipeline is None:
            specs = [r.spec for r in sorted(self.blocks.values(), key=lambda r: r.order)]
            self._pipeline = Pipeline(specs)
        return self._pipeline

    versions = staticmethod(block_versions)

    def stale(self) -> list[str]:
        """Blocks with no result, or a result computed from other code."""
        pipeline = self.pipeline()
        versions = self.versions(pipeline)
        return [b for b in versions if self.results.get(b, ("", []))[0] != versions[b]]

    # -- runs --------------------------------------------------------------------------------
    def run(
        self,
        targets: Iterable[str] | None = None,
        *,
        fresh: bool = False,
        memo: Mapping[str, Mapping[tuple[int, ...], BlockRun]] | None = None,
        executor: Executor | None = None,
        listeners: Iterable[RunListener] = (),
        capture: OutputCapture | None = None,
        setup: Callable[[], dict[str, Any]] | None = None,
        executor_factory: Callable[[str], Executor] | None = None,
    ) -> PipelineRun:
        """Run ``targets`` (default: every block) with what they need, and wait for it.

        The targets always run; their fresh ancestors' results are reused unless ``fresh``.
        An explicit ``memo`` replaces that choice.
        """
        run = self.start(
            targets,
            fresh=fresh,
            memo=memo,
            executor=executor,
            listeners=listeners,
            capture=capture,
            setup=setup,
            executor_factory=executor_factory,
        )
        return self.complete(run)

    def start(
        self,
        targets: Iterable[str] | None = None,
        *,
        fresh: bool = False,
        memo: Mapping[str, Mapping[tuple[int, ...], BlockRun]] | None = None,
        executor: Executor | None = None,
        listeners: Iterable[RunListener] = (),
        capture: OutputCapture | None = None,
        setup: Callable[[], dict[str, Any]] | None = None,
        executor_factory: Callable[[str], Executor] | None = None,
    ) -> Run:
        """Plan a run (refusing an invalid pipeline now); ``complete`` executes it.

        Split in two so a background run exists, and can be cancelled, before its thread
        starts. One run at a time per session.
        """
        if not self._lock.acquire(blocking=False):
            raise PipelineError(
                "a pipeline run is already going on in this kernel; wait or stop it"
            )
        try:
            pipeline = self.pipeline()
            versions = self.versions(pipeline)
            wanted = list(targets) if targets is not None else None
            if memo is None and not fresh:
                memo = self._fresh_memo(versions)
                for name in wanted or ():
                    memo.pop(name, None)  # running a block's cell runs that block
            self._owned_executor = executor is None
            chosen = executor if executor is not None else ThreadExecutor()
            run = Run(
                pipeline,
                self.namespace,
                params=self.params,
                executor=chosen,
                listeners=list(listeners),
                blocks=wanted,
                memo=memo,
                capture=capture,
                connections=load_connections(Path.cwd()),
                setup=setup,
                executor_factory=executor_factory,
            )
        except BaseException:
            self._lock.release()
            raise
        self._versions = versions
        self.current = run
        return run

    def complete(self, run: Run) -> PipelineRun:
        """Execute a run from ``start``, keep its results and bind the NAMEs."""
        try:
            try:
                record = run.execute()
            finally:
                self.current = None
                if self._owned_executor:
                    run.executor.close(wait=False)
            for state in run.states:
                self.results[state.name] = (self._versions[state.name], list(state.instances))
            self.bind(run)
            self.last_run = record
            return record
        finally:
            self._lock.release()

    def _fresh_memo(
        self, versions: Mapping[str, str]
    ) -> dict[str, dict[tuple[int, ...], BlockRun]]:
        return {
            name: {r.key: r for r in runs}
            for name, (version, runs) in self.results.items()
            if versions.get(name) == version
        }

    def memo_of_last_results(
        self, *, without: str | None = None
    ) -> dict[str, dict[tuple[int, ...], BlockRun]]:
        """Every kept result, whatever its version, optionally without one instance."""
        return {
            name: {r.key: r for r in runs if r.uuid != without}
            for name, (_, runs) in self.results.items()
        }

    def downstream_of(self, block: str) -> list[str]:
        """A block and every block below it, in topological order."""
        pipeline = self.pipeline()
        wanted = {block}
        for b in pipeline:
            if wanted.intersection(b.upstream):
                wanted.add(b.name)
        return [b.name for b in pipeline if b.name in wanted]

    def bind(self, run: Run) -> None:
        """Bind each block's NAME: its output, or its instances' outputs for a fan-out."""
        for state in run.states:
            instances = sorted(state.instances, key=lambda r: r.key)
            if not state.block.scope and len(instances) == 1:
                only = instances[0]
                self.namespace[state.name] = only.output if only.status == COMPLETED else None
            else:
                self.namespace[state.name] = InstanceOutputs(instances)

    # -- one instance ------------------------------------------------------------------------
    def find(self, uuid: str) -> BlockRun:
        block = uuid.split(":", 1)[0]
        for r in self.results.get(block, ("", []))[1]:
            if r.uuid == uuid:
                return r
        known = [r.uuid for r in self.results.get(block, ("", []))[1]][:10]
        hint = f"; {block!r} has: {', '.join(known)}" if known else ""
        raise PipelineError(f"no instance {uuid!r} in the last results{hint}")

    def bind_inputs(self, uuid: str) -> dict[str, Any]:
        """Bind one instance's inputs and ``context`` as notebook globals; return them."""
        inst = self.find(uuid)
        if inst.origins is None and inst.state.block.upstream:
            raise PipelineError(f"instance {uuid!r} has no recorded inputs")
        values = inputs_of(inst)
        bound: dict[str, Any] = dict(zip(inst.state.block.upstream, values))
        bound["context"] = Context(inst, self.params, max(inst.attempts, 1))
        self.namespace.update(bound)
        return bound

    def cancel(self) -> None:
        run = self.current
        if run is not None:
            run.cancel()
