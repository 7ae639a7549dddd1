"""The scheduler: expands blocks into instances as data arrives and runs them.

Policy, in short:

* **Event-driven, no level barrier.** An instance is created the moment every one of its
  inputs exists, and is ready at once. Ready instances of *deeper* blocks are dispatched
  first, so a grandchild of item 1 can finish before the child of item 3 starts and finished
  work flows out instead of piling up.
* **Expansion is a join on lineage.** What a finished instance hands down is a *row*: its
  key (one item index per fan-out in its scope), the fan-outs those indices point into, its
  value and its status. A dynamic instance hands down one row per item. A block's instances
  are the natural join of its upstreams' rows on the fan-outs they share (``dag`` explains
  scopes), so zip, product and nesting are the same code.
* **Failures are rows too.** A failed instance hands down a failed row; whatever joins it is
  ``upstream_failed`` at once. A failed dynamic instance hands down one row with the FAILED
  marker in place of an item index, which makes one placeholder per block below it. An empty
  fan-out hands down one *ghost* row (EMPTY marker) that creates nothing but lets a reduce
  below know its group is empty, so empty fan-outs finish at once.
* **Reduce** collects the rows of one closed fan-out (same key but the last index); a group
  is complete when it holds as many rows as the fan-out had items.
* **Batches.** Ready instances of one block go to the executor in batches sized so a batch
  takes a few milliseconds, which keeps the per-instance cost of tiny instances low while
  slow instances still spread over every worker.
* **Determinism.** Instances are ordered by key wherever order is visible (reduce lists,
  the record), whatever order they finish in.

All bookkeeping happens on the scheduler's thread; workers only run instances and post
their results to one queue.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import queue
import time
import uuid as _uuid
from collections import deque
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol

from . import handles, remote
from .code import CompiledBody
from .dag import Block, Pipeline
from .errors import FanoutError, PipelineError
from .events import EventHub, RunListener
from .executors import Executor, SyncExecutor, ThreadExecutor
from .fanout import (
    EMPTY,
    FAILED,
    FanoutRecord,
    Items,
    is_stream,
    make_suffixes,
    normalise,
)
from .instance import (
    CANCELLED,
    COMPLETED,
    PENDING,
    RUNNING,
    UPSTREAM_FAILED,
    BlockRun,
    Context,
    ErrorInfo,
    Restored,
)
from .instance import FAILED as FAILED_STATUS
from .joins import Joiner
from .record import PipelineRun
from .reduce import ListReducer, Reducer, resolve_strategy
from .rows import (
    ROW_FAILED,
    ROW_GHOST,
    ROW_OK,
    GroupResult,
    ReduceGroup,
    Row,
    by_index,
    computed_by,
    is_broken,
    root_cause,
    same_inputs,
)
from .sql import SqlBody, SqlResources
from .streams import _PULLED, StreamMixin, _Stream, _StreamStart

# Queue messages.
_DONE, _STARTED, _WAKE, _REMOTE, _REMOTE_STARTED = 0, 1, 2, 4, 5  # 3 is streams._PULLED
# Timer kinds.
_RETRY, _DEADLINE = 0, 1
_BACKSTOP_SECONDS = 1.0
_TARGET_BATCH_SECONDS = 0.004
_MAX_BATCH = 512
_GC_YOUNG_THRESHOLD = 10_000
#: What a run keeps of each instance's output once handed down: everything, the first
#: PREVIEW_OUTPUTS per block, or nothing (a huge run then holds only what is in flight).
KEEP_OUTPUTS = ("all", "preview", "none")
PREVIEW_OUTPUTS = 100


class OutputCapture(Protocol):
    """Records what one instance prints or displays, on whichever thread runs it."""

    def begin(self, instance: BlockRun) -> Any: ...

    def end(self, token: Any) -> Any: ...


class Restorer(Protocol):
    """Where a resumed run finds stored results (a run store)."""

    def get(self, uuid: str) -> Restored | None:
        """The stored result of a completed instance, or None (not stored, or not valid)."""


class BlockState:
    """A block during one run: its compiled body, its instances and its queues."""

    def __init__(
        self,
        block: Block,
        body: CompiledBody | SqlBody | None,
        reducer: Callable[[], Reducer] | None,
    ):
        spec = block.spec
        self.block = block
        self.name = block.name
        self.body = body
        self.reducer = reducer
        self.fans_out_items = block.dynamic and block.reduce is None
        # A generator streams, unless an overflow must fail before any child starts.
        self.streams = self.fans_out_items and not (
            spec.max_children and spec.on_overflow == "fail"
        )
        self.function_style = bool(body is not None and body.function_style)
        self.filename = f"<block {block.name}>"
        self.max_concurrency = spec.max_concurrency or 1 << 30
        self.timeout = spec.timeout
        self.retries = spec.retries
        self.instances: list[BlockRun] = []
        self.ready: deque[BlockRun] = deque()
        self.running = 0
        self.downstream: list[tuple[Joiner, int]] = []
        self.joiner: Joiner | None = None
        self.groups: dict[tuple[int, ...], ReduceGroup] = {}
        self.memo: Mapping[tuple[int, ...], BlockRun] | None = None
        self.batch_cap = 4
        self.executor: Executor = None  # type: ignore[assignment]  # set by Run
        self.target_batch = _TARGET_BATCH_SECONDS
        self.max_batch = _MAX_BATCH
        self.kept = 0  # outputs kept so far under keep_outputs="preview"

    def __repr__(self) -> str:
        return f"<BlockState {self.name}>"


class Run(StreamMixin):
    """One execution of a pipeline. Create it, then call ``execute()`` once."""

    def __init__(
        self,
        pipeline: Pipeline,
        namespace: dict[str, Any],
        *,
        params: Mapping[str, Any] | None = None,
        executor: Executor | None = None,
        listeners: list[RunListener] | tuple[RunListener, ...] = (),
        run_id: str | None = None,
        blocks: Collection[str] | None = None,
        memo: Mapping[str, Mapping[tuple[int, ...], BlockRun]] | None = None,
        capture: OutputCapture | None = None,
        connections: Mapping[str, str] | None = None,
        keep_outputs: str = "all",
        setup: Callable[[], dict[str, Any]] | None = None,
        executor_factory: Callable[[str], Executor] | None = None,
        restore: Restorer | None = None,
    ):
        """``blocks`` limits the run to those blocks (with every ancestor they need);
        ``memo`` gives, per block, completed instances of an earlier run by key: an instance
        whose key is found there is not run again, its output is reused. ``capture`` records
        what each instance prints or displays (``BlockRun.captured``). ``restore`` resumes a
        stored run: an instance it has a result for is not run again when everything it
        depends on was restored too (so a re-run upstream re-runs its dependents)."""
        self.pipeline = pipeline
        self.namespace = namespace
        self.params = dict(params or {})
        self._restore = restore
        self._own_executor = executor is None
        self.executor: Executor = executor if executor is not None else ThreadExecutor()
        self.events = EventHub(listeners)
        self.sql = SqlResources(dict(connections or {}))
        if keep_outputs not in KEEP_OUTPUTS:
            raise PipelineError(
                f"keep_outputs must be one of {', '.join(KEEP_OUTPUTS)}, not {keep_outputs!r}"
            )
        self._keep = keep_outputs == "all"
        self._preview = PREVIEW_OUTPUTS if keep_outputs == "preview" else 0
        self._streams: dict[int, _Stream] = {}  # id(streaming instance) -> its stream
        self._stream_children: dict[int, _Stream] = {}  # id(child) -> the stream it counts in
        self._streamed_groups: dict[int, list[tuple[BlockState, tuple[int, ...]]]] = {}
        self._failed_producers: dict[int, BlockRun] = {}  # id(fan-out) -> producer that failed
        selected = _with_ancestors(pipeline, blocks) if blocks is not None else None
        self.states = [
            self._prepare(block) for block in pipeline if selected is None or block.name in selected
        ]
        by_name = {s.name: s for s in self.states}
        for state in self.states:
            block = state.block
            state.memo = (memo or {}).get(block.name)
            if block.upstream:
                scopes = [pipeline[u].out_scope for u in block.upstream]
                state.joiner = Joiner(self, state, scopes)
                for i, up in enumerate(block.upstream):
                    by_name[up].downstream.append((state.joiner, i))
        self.record = PipelineRun(run_id or _uuid.uuid4().hex[:12], self.states, self.params)
        self._completions: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._timers: list[tuple[float, int, int, BlockRun, int]] = []
        # Timed instances on executors that report when they start: (uuid, attempt) -> the
        # instance, and the deadline now in force (a restarted attempt gets a later one).
        self._reporting: set[int] = set()
        self._awaiting_start: dict[tuple[str, int], BlockRun] = {}
        self._deadline_of: dict[tuple[str, int], float] = {}
        self._seq = itertools.count()
        self._outstanding = 0
        self._capacity = max(2, 2 * self.executor.workers)
        self._ready: set[BlockState] = set()
        self._cancel_requested = False
        self._cancelled = False
        self._announce = any(s.timeout for s in self.states)
        self.capture = capture
        self._runner = self._run_one if capture is None else self._run_captured
        self._owned: list[Executor] = [self.executor] if self._own_executor else []
        self._assign_executors(executor_factory)
        executors = {id(s.executor): s.executor for s in self.states}
        self._capacity = max(2, 2 * sum(e.workers for e in executors.values()))
        remotes = [e for e in executors.values() if getattr(e, "remote", False)]
        # Some outputs may stay on Dask workers: inputs and reduces must look for handles.
        self._handles = any(getattr(e, "keeps_outputs", False) for e in remotes)
        if remotes:
            if setup is None:
                raise PipelineError(
                    "this executor runs blocks in other processes and needs the notebook's "
                    "prelude: run the notebook with run_notebook / mage-nb run"
                )
            program = remote.Program(
                specs=tuple(b.spec for b in pipeline),
                setup=setup,
                params=self.params,
                connections=dict(connections or {}),
                capture=capture is not None,
            )
            shipped = bytes(remote.cloudpickle.dumps(program))
            self._program_key = remote.program_key(shipped)
            for chosen in remotes:
                chosen.start(shipped)  # type: ignore[attr-defined]
                if any(s.timeout for s in self.states) and hasattr(chosen, "report_starts"):
                    chosen.report_starts(self._remote_started)
                    self._reporting.add(id(chosen))

    def _assign_executors(self, factory: Callable[[str], Executor] | None) -> None:
        """Each block runs on the run's executor, or the one its ``--executor`` names. When
        the run's executor is remote, dynamic blocks stay in this process (on threads) so
        that their generators can stream; their children go to the remote workers."""
        by_kind: dict[str, Executor] = {executor_kind(self.executor): self.executor}
        default_remote = bool(getattr(self.executor, "remote", False))
        for state in self.states:
            kind = state.block.spec.executor
            if kind is None and default_remote and state.fans_out_items:
                kind = "threads"
            if kind is None or kind in by_kind:
                state.executor = by_kind.get(kind or "", self.executor)
            elif factory is not None or kind == "threads":
                chosen = factory(kind) if factory is not None else ThreadExecutor()
                by_kind[kind] = chosen
                self._owned.append(chosen)
                state.executor = chosen
            else:
                state.executor = self.executor
                self._warn(
                    f"block {state.name!r} asks for --executor {kind}; this run has only "
                    f"the {executor_kind(self.executor)} executor, so it runs there"
                )
            state.target_batch = getattr(
                state.executor, "target_batch_seconds", _TARGET_BATCH_SECONDS
            )
            state.max_batch = getattr(state.executor, "max_batch", _MAX_BATCH)
            if state.timeout and getattr(state.executor, "remote", False):
                # A process pool's backstop deadline counts from sending, and on Dask a
                # queued instance holds a deadline-less slot: send no more timed instances
                # than there are workers to start them.
                state.max_concurrency = min(state.max_concurrency, state.executor.workers)

    def _prepare(self, block: Block) -> BlockState:
        spec = block.spec
        body = block.compile(self.namespace, self.sql)
        reducer = resolve_strategy(spec.reduce, spec.name, self.namespace) if spec.reduce else None
        return BlockState(block, body, reducer)

    # -- public ------------------------------------------------------------------------------
    def execute(self) -> PipelineRun:
        record = self.record
        record.status = RUNNING
        record.started = time.time()
        finished = False
        gc_thresholds = gc.get_threshold()
        # Bookkeeping allocates a few objects per instance; the default young-generation
        # threshold (700) makes the collector rescan them thousands of times in a big fan-out.
        gc.set_threshold(max(gc_thresholds[0], _GC_YOUNG_THRESHOLD), *gc_thresholds[1:])
        try:
            self.events.run_started(run=record)
            for state in self.states:
                if not state.block.upstream:
                    self._create(state, (), (), (), (), ROW_OK)
            self._loop()
            finished = True
        except KeyboardInterrupt:
            self._cancel()
            finished = True
        finally:
            if not finished:  # an engine error: leave nothing running, then let it surface
                self._cancel()
            gc.set_threshold(*gc_thresholds)
            if self._handles:
                self._bring_home()
            self.sql.close()
            for owned in self._owned:
                owned.close(wait=not self._cancelled)
            record.ended = time.time()
            record.status = self._final_status()
            self.events.run_finished(run=record)
        return record

    def _bring_home(self) -> None:
        """Fetch the outputs still kept on Dask workers that this run keeps, in one go,
        before the cluster (maybe a local one) goes away."""
        found: list[handles.RemoteOutput] = []
        groups: list[GroupResult] = []
        for state in self.states:
            for inst in state.instances:
                handles.collect(inst.output, found)
                for origin in inst.origins or ():
                    if isinstance(origin, GroupResult):
                        groups.append(origin)
                        handles.collect(origin.value, found)
        if not found:
            return
        unique = list({id(h): h for h in found}.values())
        fetched: dict[int, Any] = {}
        try:
            values = unique[0].future.client.gather([h.future for h in unique])
            fetched = {id(h): boxed.value for h, boxed in zip(unique, values)}
        except Exception as exc:
            self._warn(f"could not fetch the outputs kept on Dask workers: {exc}")
            return

        def home(value: Any) -> Any:
            return handles.map_handles(value, lambda h: fetched[id(h)])

        for state in self.states:
            for inst in state.instances:
                inst.output = home(inst.output)
        for group in groups:
            group.value = home(group.value)

    def cancel(self) -> None:
        """Ask a running ``execute()`` (on another thread) to stop; safe from any thread."""
        self._cancel_requested = True
        self._completions.put((_WAKE,))

    # -- the loop ----------------------------------------------------------------------------
    def _loop(self) -> None:
        get = self._completions.get
        get_nowait = self._completions.get_nowait
        checkpoint = self.events.checkpoint
        while True:
            if self._cancel_requested:
                self._cancel()
                return
            checkpoint(run=self.record)
            self._dispatch()
            if not self._outstanding and not self._retries_waiting():
                break  # what timers remain are deadlines of attempts that already returned
            timeout = max(0.0, self._timers[0][0] - time.monotonic()) if self._timers else None
            try:
                message = get(timeout=timeout)
            except queue.Empty:
                message = None
            while message is not None:
                self._handle(message)
                try:
                    message = get_nowait()
                except queue.Empty:
                    message = None
            if self._timers:
                self._fire_timers()
        leftovers = [s.name for s in self.states if s.groups]
        if leftovers:  # pragma: no cover - would be an engine bug
            self._warn(f"internal: reduce groups of {', '.join(leftovers)} never closed")

    def _retries_waiting(self) -> bool:
        return any(timer[2] == _RETRY for timer in self._timers)

    def _dispatch(self) -> None:
        while self._ready and self._outstanding < self._capacity and not self._cancel_requested:
            candidates = [s for s in self._ready if s.running < s.max_concurrency]
            if not candidates:
                return
            state = max(candidates, key=_depth)
            ready = state.ready
            size = min(
                # guided: batches shrink as the queue drains, so workers finish together
                -(-len(ready) // (2 * state.executor.workers)),
                state.batch_cap,
                state.max_concurrency - state.running,
            )
            if state.timeout:
                size = 1
            batch = [ready.popleft() for _ in range(size)]
            if not ready:
                self._ready.discard(state)
            started = self.events.instance_started
            for inst in batch:
                inst.status = RUNNING
                inst.attempts += 1
                started(run=self.record, instance=inst)
            state.running += size
            self._outstanding += 1
            executor = state.executor
            remote_executor = getattr(executor, "remote", False)
            if state.timeout and id(executor) in self._reporting:
                for inst in batch:  # the deadline is set when the worker says it started
                    self._awaiting_start[(inst.uuid, inst.attempts)] = inst
            elif state.timeout and remote_executor:
                # The executor cannot say when the instance starts: the deadline counts from
                # now. Where the worker enforces the timeout itself (an alarm in a process
                # worker) this is only a backstop, for a body stuck where signals can't reach.
                deadline = time.monotonic() + state.timeout
                if getattr(executor, "enforces_timeouts", False):
                    deadline += state.timeout + _BACKSTOP_SECONDS
                for inst in batch:
                    heapq.heappush(
                        self._timers, (deadline, next(self._seq), _DEADLINE, inst, inst.attempts)
                    )
            if getattr(executor, "keeps_outputs", False):
                futures: list[Any] = []
                tasks = [_task(inst, handles.detach(inst.inputs or (), futures)) for inst in batch]
                payload = remote.pack(self._program_key, state.name, tasks)
                executor.submit(remote.run_tasks, (payload, futures), self._remote_reply(batch))
            elif remote_executor:
                if self._handles:  # a block on processes downstream of outputs kept by Dask
                    tasks = [_task(inst, handles.resolve_inputs(inst.inputs)) for inst in batch]
                else:
                    tasks = [_task(inst, inst.inputs) for inst in batch]
                payload = remote.pack(self._program_key, state.name, tasks)
                executor.submit(remote.run_tasks, payload, self._remote_reply(batch))
            else:
                state.executor.submit(self._run_batch, batch, self._completions.put)

    def _run_batch(self, batch: list[BlockRun]) -> tuple[int, list[tuple[Any, ...]]]:
        """Runs on a worker: execute each instance, catch its errors, time it."""
        if self._announce:
            self._completions.put((_STARTED, batch, time.time()))
        run_one = self._runner
        results: list[tuple[Any, ...]] = []
        try:
            for inst in batch:
                if self._handles:
                    inst.inputs = handles.resolve_inputs(inst.inputs)
                results.append(run_one(inst))
        except KeyboardInterrupt:
            # Ctrl-C (or a body raising KeyboardInterrupt) means "stop the run", on any thread.
            self.cancel()
        return (_DONE, results)

    def _run_one(self, inst: BlockRun) -> tuple[Any, ...]:
        state = inst.state
        attempt = inst.attempts
        context = Context(inst, self.params, attempt)
        started = time.time()
        try:
            kwargs = (lambda: self._keywords(inst, context)) if state.function_style else _no_kwargs
            value = state.body.run(context, inst.inputs, kwargs)  # type: ignore[union-attr, arg-type]
            if state.fans_out_items:
                if is_stream(value) and state.streams:
                    value = _StreamStart(value)
                else:
                    spec = state.block.spec
                    value = normalise(
                        value,
                        state.name,
                        max_children=spec.max_children,
                        on_overflow=spec.on_overflow,
                    )
            return (inst, attempt, True, value, started, time.time(), None)
        except KeyboardInterrupt:
            raise
        except FanoutError as exc:
            return (
                inst,
                attempt,
                False,
                ErrorInfo(type(exc).__name__, str(exc)),
                started,
                time.time(),
                None,
            )
        except BaseException as exc:
            names: list[str] = []
            if isinstance(exc, NameError):
                names = [*state.block.upstream, *self.pipeline.blocks, *self.namespace]
            error = ErrorInfo.from_exception(exc, block_file=state.filename, names=names)
            return (inst, attempt, False, error, started, time.time(), None)

    def _run_captured(self, inst: BlockRun) -> tuple[Any, ...]:
        """``_run_one`` with the instance's stdout, stderr and displays captured."""
        capture = self.capture
        token = capture.begin(inst)  # type: ignore[union-attr]
        captured = None
        try:
            result = self._run_one(inst)
        finally:
            captured = capture.end(token)  # type: ignore[union-attr]
        return (*result[:6], captured)

    def _keywords(self, inst: BlockRun, context: Context) -> dict[str, Any]:
        keywords: dict[str, Any] = {**self.params, **inst.metadata}
        keywords["block_uuid"] = inst.uuid
        keywords["dynamic_block_index"] = inst.key[-1] if inst.key else None
        keywords["context"] = context
        return keywords

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == _DONE:
            results = message[1]
            if not results:
                self._outstanding -= 1
                return
            first = results[0]
            if len(results) == 1 and (first[0].status != RUNNING or first[0].attempts != first[1]):
                return  # a timed-out attempt that finally returned: already accounted for
            self._outstanding -= 1
            state = first[0].state
            state.running -= len(results)
            if state.running < state.max_concurrency and state.ready:
                self._ready.add(state)
            elapsed = results[-1][5] - first[4]
            per = max(elapsed / len(results), 1e-7)
            state.batch_cap = max(1, min(state.max_batch, int(state.target_batch / per)))
            awaiting = bool(self._awaiting_start)
            for inst, attempt, ok, payload, started, ended, captured in results:
                if awaiting:
                    self._forget_start(inst.uuid, attempt)
                if inst.status != RUNNING or inst.attempts != attempt:
                    continue
                if captured is not None:
                    inst.captured = captured
                if inst.started is None:
                    inst.started = started
                inst.ended = ended
                if ok:
                    self._complete(inst, payload)
                else:
                    self._fail(inst, payload)
        elif kind == _REMOTE:
            self._handle((_DONE, self._remote_results(message[1], message[2])))
        elif kind == _PULLED:
            self._outstanding -= 1
            self._take_items(*message[1:])
        elif kind == _REMOTE_STARTED:
            _, uuid, attempt, when = message
            inst = self._awaiting_start.get((uuid, attempt))
            if inst is None or inst.status != RUNNING or inst.attempts != attempt:
                self._awaiting_start.pop((uuid, attempt), None)
                return
            deadline = time.monotonic() + (inst.state.timeout or 0) - (time.time() - when)
            self._deadline_of[(uuid, attempt)] = deadline
            heapq.heappush(self._timers, (deadline, next(self._seq), _DEADLINE, inst, attempt))
        elif kind == _STARTED:
            for inst in message[1]:
                timeout = inst.state.timeout
                if timeout and inst.status == RUNNING:
                    deadline = time.monotonic() + timeout - (time.time() - message[2])
                    heapq.heappush(
                        self._timers, (deadline, next(self._seq), _DEADLINE, inst, inst.attempts)
                    )

    def _forget_start(self, uuid: str, attempt: int) -> None:
        self._awaiting_start.pop((uuid, attempt), None)
        self._deadline_of.pop((uuid, attempt), None)

    def _fire_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            due, _, kind, inst, attempt = heapq.heappop(self._timers)
            if kind == _RETRY:
                inst.state.ready.append(inst)
                self._ready.add(inst.state)
            elif (
                inst.status == RUNNING
                and inst.attempts == attempt
                and id(inst) not in self._streams
                and self._deadline_of.get((inst.uuid, attempt), due) == due
            ):
                # (a streaming instance's body has returned: its timeout covered that call;
                # an attempt restarted on another worker has a later deadline)
                self._forget_start(inst.uuid, attempt)
                state = inst.state
                state.executor.replace_stuck_worker()
                self._outstanding -= 1
                state.running -= 1
                if state.ready:
                    self._ready.add(state)
                inst.ended = time.time()
                if inst.started is None:
                    inst.started = inst.ended - (state.timeout or 0)
                self._fail(inst, ErrorInfo.timed_out(inst.uuid, state.timeout or 0))

    # -- instances ---------------------------------------------------------------------------
    def _create(
        self,
        state: BlockState,
        key: tuple[int, ...],
        fanouts: tuple[FanoutRecord, ...],
        inputs: tuple[Any, ...],
        origins: tuple[Any, ...],
        row_state: int,
    ) -> None:
        if row_state == ROW_GHOST:
            self._emit(state, key, fanouts, ROW_GHOST, None, None)
            return
        if self._cancel_requested:
            return
        name = state.name
        if not key:
            uuid = name
        elif len(key) == 1:
            k = key[0]
            uuid = f"{name}:{fanouts[0].suffix(k)}" if k >= 0 else name
        else:
            uuid = name + "".join(":" + f.suffix(k) for f, k in zip(fanouts, key) if k >= 0)
        inst = BlockRun(state, key, fanouts, uuid, inputs, origins)
        state.instances.append(inst)
        if row_state == ROW_OK and state.memo is not None:
            earlier = state.memo.get(key)
            if (
                earlier is not None
                and earlier.status == COMPLETED
                and same_inputs(origins, earlier.origins)
            ):
                self._reuse(inst, earlier)
                return
        if row_state == ROW_OK and self._restore is not None and _all_restored(origins):
            stored = self._restore.get(uuid)
            if stored is not None:
                self._reuse(inst, stored)
                return
        if row_state == ROW_OK:
            self.events.instance_created(run=self.record, instance=inst)
            state.ready.append(inst)
            self._ready.add(state)
            if self._streams:
                for origin in origins:
                    stream = self._streams.get(id(origin))
                    if stream is not None:
                        stream.open += 1
                        self._stream_children[id(inst)] = stream
                        break
            return
        inst.inputs = None
        broken = next(o for o in origins if is_broken(o))
        if isinstance(broken, GroupResult) and broken.error is not None:
            inst.status = FAILED_STATUS
            inst.error = broken.error
        else:
            inst.status = UPSTREAM_FAILED
            cause = root_cause(broken)
            inst.cause = cause
            if cause is not None and cause.error is not None:
                detail = f"upstream instance {cause.uuid!r} {cause.status}: {cause.error.line()}"
            elif cause is not None:
                detail = f"upstream instance {cause.uuid!r} {cause.status}"
            else:
                detail = "an upstream instance did not complete"
            inst.error = ErrorInfo("UpstreamFailed", detail)
        self.events.instance_created(run=self.record, instance=inst)
        self.events.instance_finished(run=self.record, instance=inst)
        self._emit(state, key, fanouts, ROW_FAILED, None, inst)

    def _complete(self, inst: BlockRun, value: Any) -> None:
        state = inst.state
        inst.status = COMPLETED
        inst.inputs = None
        inst.error = None
        if state.fans_out_items:
            if isinstance(value, _StreamStart):
                self._start_stream(inst, value.iterator)
                return
            inst.fanout = self._fanout_record(state, value, inst.uuid)
            inst.output = value.values
            value = (inst.fanout, value.values)
        else:
            inst.output = value
        self.events.instance_finished(run=self.record, instance=inst)
        self._emit(state, inst.key, inst.fanouts, ROW_OK, value, inst)
        if not self._keep:
            state.kept += 1
            if state.kept > self._preview:
                inst.output = None
        if self._stream_children:
            self._release(inst)

    def _remote_started(self, uuid: str, attempt: int) -> None:
        """A worker started a timed instance (called on the executor's own thread)."""
        self._completions.put((_REMOTE_STARTED, uuid, attempt, time.time()))

    def _remote_reply(self, batch: list[BlockRun]) -> Callable[[Any], None]:
        put = self._completions.put

        def reply(answer: Any) -> None:
            put((_REMOTE, batch, answer))

        return reply

    def _remote_results(self, batch: list[BlockRun], answer: Any) -> list[tuple[Any, ...]]:
        """A remote batch's answer as local results (a lost batch fails its instances)."""
        attempts = [inst.attempts for inst in batch]
        if isinstance(answer, BaseException):
            now = time.time()
            error = ErrorInfo(
                "WorkerLost", f"the worker process running this instance was lost: {answer!r}"
            )
            return [(i, a, False, error, now, now, None) for i, a in zip(batch, attempts)]
        results = [
            (inst, attempt, *result)
            for inst, attempt, result in zip(batch, attempts, remote.unpack_results(answer))
        ]
        if self._handles:
            executor: Any = batch[0].state.executor
            for i, result in enumerate(results):
                if type(result[3]) is handles.KeptOnWorker:
                    results[i] = (*result[:3], executor.adopt(result[3]), *result[4:])
        return results

    def _reuse(self, inst: BlockRun, earlier: BlockRun | Restored) -> None:
        """Take an earlier run's (or a store's) result for this instance instead of running
        it."""
        inst.inputs = None
        inst.status = COMPLETED
        inst.attempts = earlier.attempts
        inst.started, inst.ended = earlier.started, earlier.ended
        inst.output = earlier.output
        inst.fanout = earlier.fanout
        inst.captured = earlier.captured
        inst.source = earlier.source or earlier
        inst.reused = True
        self.events.instance_created(run=self.record, instance=inst)
        self.events.instance_finished(run=self.record, instance=inst)
        value = (inst.fanout, inst.output) if inst.state.fans_out_items else inst.output
        self._emit(inst.state, inst.key, inst.fanouts, ROW_OK, value, inst)

    def _fail(self, inst: BlockRun, error: ErrorInfo) -> None:
        state = inst.state
        inst.error = error
        if inst.attempts <= state.retries and not self._cancel_requested:
            inst.status = PENDING
            self.events.instance_retried(run=self.record, instance=inst)
            delay = state.block.spec.retry_delay
            if delay:
                heapq.heappush(
                    self._timers, (time.monotonic() + delay, next(self._seq), _RETRY, inst, 0)
                )
            else:
                state.ready.append(inst)
                self._ready.add(state)
            return
        inst.status = FAILED_STATUS
        inst.inputs = None
        self.events.instance_finished(run=self.record, instance=inst)
        self._emit(state, inst.key, inst.fanouts, ROW_FAILED, None, inst)
        if self._stream_children:
            self._release(inst)

    # -- rows --------------------------------------------------------------------------------
    def _emit(
        self,
        state: BlockState,
        key: tuple[int, ...],
        fanouts: tuple[FanoutRecord, ...],
        row_state: int,
        value: Any,
        origin: Any,
    ) -> None:
        """An instance of ``state`` (or a ghost of one) is final: hand its rows down."""
        if state.reducer is not None:
            self._collect(state, key, fanouts, row_state, value, origin)
        else:
            self._hand_down(state, key, fanouts, row_state, value, origin)

    def _hand_down(
        self,
        state: BlockState,
        key: tuple[int, ...],
        fanouts: tuple[FanoutRecord, ...],
        row_state: int,
        value: Any,
        origin: Any,
    ) -> None:
        rows: list[Row] | tuple[Row, ...]
        if state.block.dynamic:
            rows = self._fan_out(state, key, fanouts, row_state, value, origin)
        elif not state.downstream:
            return
        else:
            rows = (Row(key, fanouts, value, origin, row_state),)
        for joiner, i in state.downstream:
            joiner.receive(i, rows)

    def _fan_out(
        self,
        state: BlockState,
        key: tuple[int, ...],
        fanouts: tuple[FanoutRecord, ...],
        row_state: int,
        value: Any,
        origin: Any,
    ) -> list[Row]:
        if row_state != ROW_OK:
            marker = EMPTY if row_state == ROW_GHOST else FAILED
            record = FanoutRecord(state.name, getattr(origin, "uuid", "") or "", 0)
            return [Row((*key, marker), (*fanouts, record), None, origin, row_state)]
        record, values = value
        child_fanouts = (*fanouts, record)
        if not values:
            return [Row((*key, EMPTY), child_fanouts, None, origin, ROW_GHOST)]
        if not state.downstream:
            return []
        return [Row((*key, j), child_fanouts, v, origin, ROW_OK) for j, v in enumerate(values)]

    def _fanout_record(self, state: BlockState, items: Items, owner: str) -> FanoutRecord:
        """Name a new fan-out's items (warning about renamed or truncated ones)."""
        size = len(items.values)
        suffixes, warnings = make_suffixes(items.names, size, state.name)
        for message in warnings:
            self._warn(message)
        if items.truncated:
            total = f" of {items.truncated_from}" if items.truncated_from is not None else ""
            self._warn(
                f"dynamic block {state.name!r} ({owner}) produced more than --max-children "
                f"{state.block.spec.max_children} items; kept the first {size}{total}"
            )
        return FanoutRecord(state.name, owner, size, suffixes, items.metadata)

    def _collect(
        self,
        state: BlockState,
        key: tuple[int, ...],
        fanouts: tuple[FanoutRecord, ...],
        row_state: int,
        value: Any,
        origin: Any,
    ) -> None:
        if (
            self._handles
            and type(value) is handles.RemoteOutput
            and (state.reducer is not ListReducer or value.is_list)
        ):
            # a list reduce hands on what it is given; any other fold needs the value here
            value = value.resolve()
        prefix = key[:-1]
        group = state.groups.get(prefix)
        if group is None:
            group = ReduceGroup(fanouts[-1], fanouts[:-1], state.reducer())  # type: ignore[misc]
            state.groups[prefix] = group
            if fanouts[-1].streaming:
                self._streamed_groups.setdefault(id(fanouts[-1]), []).append((state, prefix))
        group.add(key[-1], row_state, value, origin)
        if group.complete():
            del state.groups[prefix]
            self._close_group(state, prefix, group)

    def _close_group(self, state: BlockState, prefix: tuple[int, ...], group: ReduceGroup) -> None:
        fanouts = group.fanouts
        if EMPTY in prefix:
            self._hand_down(state, prefix, fanouts, ROW_GHOST, None, None)
            return
        members = sorted(group.members, key=by_index)
        ok = [m for m in members if m[1] == ROW_OK]
        bad = [m for m in members if m[1] == ROW_FAILED]
        uuid = state.name + "".join(":" + f.suffix(k) for f, k in zip(fanouts, prefix) if k >= 0)
        reduced_from = [m[2].uuid for m in ok]
        failed = [m[2].uuid for m in bad]
        producer = self._failed_producers.get(id(group.closing))
        if producer is not None:
            failed.append(producer.uuid)
        spec = state.block.spec
        if (bad or producer is not None) and spec.reduce_policy != "partial":
            cause = root_cause(bad[0][2]) if bad else producer
            result = GroupResult(uuid, reduced_from, failed, cause=cause)
            self._hand_down(state, prefix, fanouts, ROW_FAILED, None, result)
            return
        try:
            if group.error is not None:
                raise group.error
            value = group.reducer.finish(group.acc)
            if state.block.dynamic:
                items = normalise(
                    value, state.name, max_children=spec.max_children, on_overflow=spec.on_overflow
                )
                value = (self._fanout_record(state, items, uuid), items.values)
        except Exception as exc:
            error = ErrorInfo.from_exception(exc)
            error = ErrorInfo(
                error.type,
                f"reducing {state.name!r} with {spec.reduce!r} failed: {error.message}",
                error.traceback,
            )
            self._hand_down(
                state,
                prefix,
                fanouts,
                ROW_FAILED,
                None,
                GroupResult(uuid, reduced_from, failed, error),
            )
            return
        result = GroupResult(uuid, reduced_from, failed)
        result.value = value
        result.sources = tuple(computed_by(m[2]) for m in members)
        self._hand_down(state, prefix, fanouts, ROW_OK, value, result)

    # -- ending ------------------------------------------------------------------------------
    def _warn(self, message: str) -> None:
        self.record.warnings.append(message)
        self.events.warning(run=self.record, message=message)

    def _cancel(self) -> None:
        self._cancel_requested = True
        self._cancelled = True
        self._timers.clear()
        now = time.time()
        for state in self.states:
            state.ready.clear()
            for inst in state.instances:
                if inst.status in (PENDING, RUNNING):
                    inst.status = CANCELLED
                    inst.inputs = None
                    inst.ended = now
                    self.events.instance_finished(run=self.record, instance=inst)
        self._ready.clear()

    def _final_status(self) -> str:
        if self._cancelled:
            return CANCELLED
        for state in self.states:
            for inst in state.instances:
                if inst.status != COMPLETED:
                    return FAILED_STATUS
        return COMPLETED


def _with_ancestors(pipeline: Pipeline, names: Collection[str]) -> set[str]:
    wanted: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name not in wanted:
            wanted.add(name)
            stack.extend(pipeline[name].upstream)
    return wanted


def _task(inst: BlockRun, inputs: tuple[Any, ...] | None) -> remote.Task:
    return remote.Task(
        uuid=inst.uuid,
        key=inst.key,
        lineage=inst.lineage,
        metadata=dict(inst.metadata),
        attempt=inst.attempts,
        inputs=inputs or (),
        reduced_from=inst.reduced_from,
        failed=inst.failed,
    )


def executor_kind(executor: Any) -> str:
    """The ``--executor`` name of an executor object."""
    if isinstance(executor, ThreadExecutor):
        return "threads"
    if isinstance(executor, SyncExecutor):
        return "sync"
    return {"ProcessExecutor": "processes", "DaskExecutor": "dask"}.get(
        type(executor).__name__, type(executor).__name__
    )


def _all_restored(origins: tuple[Any, ...]) -> bool:
    """Whether every result an instance would receive was taken from the store."""
    for origin in origins:
        by = computed_by(origin)
        if type(by) is tuple:
            if not all(b is None or type(b) is Restored for b in by):
                return False
        elif type(by) is not Restored:
            return False
    return True


def _depth(state: BlockState) -> int:
    return state.block.order


def _no_kwargs() -> dict[str, Any]:
    return {}
