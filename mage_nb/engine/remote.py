"""Running instances in other processes: what is shipped, and what a worker process does.

A worker receives a ``Program`` once (the block specs, a callable that builds the notebook's
namespace by running its prelude, the run's parameters and connections) and compiles each
block's body the first time it runs it. After that, a batch of instances costs one message
each way: the instances' inputs and context data go out, their outputs (or errors) and what
they printed come back. Everything is serialised with cloudpickle, so functions and classes
defined in the notebook travel by value.

Invariant: a worker never sees ``BlockRun`` objects or the scheduler; it gets plain data and
returns plain data, in batch order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import reprlib
import signal
import sys
import threading
import time
import uuid as _uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from . import handles
from .dag import Pipeline
from .errors import FanoutError
from .fanout import normalise
from .instance import ErrorInfo
from .spec import BlockSpec
from .sql import SqlResources


@dataclass(frozen=True)
class Program:
    """Everything a worker needs to run any instance of a pipeline."""

    specs: tuple[BlockSpec, ...]
    setup: Callable[[], dict[str, Any]]  # builds the namespace (runs the prelude)
    params: Mapping[str, Any] = field(default_factory=dict)
    connections: Mapping[str, str] = field(default_factory=dict)
    capture: bool = True


@dataclass(frozen=True)
class Task:
    """One instance, as data."""

    uuid: str
    key: tuple[int, ...]
    lineage: list[tuple[str, str]]
    metadata: Mapping[str, Any]
    attempt: int
    inputs: tuple[Any, ...]
    reduced_from: list[str]
    failed: list[str]


class RemoteContext:
    """``context`` inside a worker process: the same attributes as the engine's ``Context``."""

    def __init__(self, task: Task, block: str, params: Mapping[str, Any]):
        self.uuid = task.uuid
        self.block = block
        self.index = tuple(k for k in task.key if k >= 0)
        self.lineage = task.lineage
        self.metadata = task.metadata
        self.params = params
        self.reduced_from = task.reduced_from
        self.failed = task.failed
        self.attempt = task.attempt

    def __repr__(self) -> str:
        return f"<context {self.uuid} attempt={self.attempt}>"


class _Worker:
    """Per-process state: the namespace and the bodies compiled so far."""

    def __init__(self, program: Program):
        self.program = program
        self.namespace = program.setup()
        self.pipeline = Pipeline(list(program.specs))
        self.sql = SqlResources(dict(program.connections))
        self.bodies: dict[str, Any] = {}
        self.capture: Any = None
        if program.capture:
            from ..capture import InstanceCapture, install

            install()
            self.capture = InstanceCapture()

    def body(self, name: str) -> Any:
        body = self.bodies.get(name)
        if body is None:
            body = self.pipeline[name].compile(self.namespace, self.sql)
            self.bodies[name] = body
        return body

    def run(
        self,
        name: str,
        tasks: list[Task],
        keep_bytes: int | None = None,
        started_topic: str | None = None,
    ) -> list[tuple[Any, ...]]:
        """Each task's (ok, value or error, started, ended, captured); a non-dynamic output
        of ``keep_bytes`` or more stays in this process (see ``handles``)."""
        block = self.pipeline[name]
        body = self.body(name)
        fans_out = block.dynamic and block.reduce is None
        spec = block.spec
        filename = f"<block {name}>"
        results: list[tuple[Any, ...]] = []
        timeout = spec.timeout if spec.timeout and _Alarm.usable() else None
        announce = started_topic if spec.timeout else None
        for task in tasks:
            if announce is not None:  # the run's --timeout clock starts now, not at sending
                _announce_start(announce, task)
            context = RemoteContext(task, name, self.program.params)
            token = self.capture.begin(None) if self.capture is not None else None
            started = time.time()
            try:
                with _Alarm(timeout) if timeout else _NO_ALARM:
                    value = body.run(
                        context,
                        task.inputs,
                        lambda t=task, c=context: _keywords(t, c, self.program.params),
                    )
                if fans_out:
                    value = normalise(
                        value, name, max_children=spec.max_children, on_overflow=spec.on_overflow
                    )
                outcome: tuple[Any, ...] = (True, value)
            except _TimedOut:
                outcome = (False, ErrorInfo.timed_out(task.uuid, timeout or 0))
            except FanoutError as exc:
                outcome = (False, ErrorInfo(type(exc).__name__, str(exc)))
            except BaseException as exc:
                outcome = (False, ErrorInfo.from_exception(exc, block_file=filename))
            captured = self.capture.end(token) if self.capture is not None else None
            if keep_bytes is not None and outcome[0] and not fans_out:
                outcome = (True, _keep_if_large(outcome[1], keep_bytes))
            results.append((*outcome, started, time.time(), captured))
        return results


class _TimedOut(BaseException):
    """Raised into a body by ``_Alarm`` (a BaseException, so ``except Exception`` in the
    block's own code does not swallow it)."""


class _Alarm:
    """``--timeout`` enforced where the instance runs: in a process worker's main thread a
    timer signal interrupts the body (even in ``time.sleep`` or a socket read), so a
    timed-out instance frees its worker at once instead of running on, abandoned, while
    later instances queue behind it. A Dask worker runs tasks in threads, where signals
    cannot reach: there the scheduler's deadline alone applies.

    The handler stays installed (a worker process has no other use for SIGALRM) and raises
    only while armed, so a signal arriving just as a body returns is harmless.
    """

    armed = False
    installed = False

    def __init__(self, seconds: float):
        self.seconds = seconds

    @staticmethod
    def usable() -> bool:
        main = threading.current_thread() is threading.main_thread()
        return main and hasattr(signal, "setitimer")

    @staticmethod
    def _ring(signum: int, frame: Any) -> None:
        if _Alarm.armed:
            _Alarm.armed = False
            raise _TimedOut

    def __enter__(self) -> None:
        if not _Alarm.installed:
            signal.signal(signal.SIGALRM, self._ring)
            _Alarm.installed = True
        _Alarm.armed = True
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc: object) -> None:
        _Alarm.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)


_NO_ALARM = contextlib.nullcontext()


#: Large outputs this process keeps until the run's scheduler claims them (``take``).
_kept: dict[str, Any] = {}
_preview = reprlib.Repr()
_preview.maxstring = _preview.maxother = 120


def _keep_if_large(value: Any, keep_bytes: int) -> Any:
    from dask.sizeof import sizeof
    from distributed import get_worker

    nbytes = sizeof(value)
    if nbytes < keep_bytes:
        return value
    token = _uuid.uuid4().hex
    _kept[token] = value
    if isinstance(value, (bytes, bytearray, str)):
        preview = repr(value[:40]) + "…"
    else:
        preview = _preview.repr(value)
    return handles.KeptOnWorker(
        token, get_worker().address, nbytes, type(value).__name__, isinstance(value, list), preview
    )


def take(token: str) -> handles.Boxed:
    """The scheduler claims a kept output: it becomes the result of a Dask task (a key the
    cluster tracks, moves between workers and frees when nobody holds it)."""
    try:
        return handles.Boxed(_kept.pop(token))
    except KeyError:
        raise RuntimeError("this output was lost with the Dask worker that computed it") from None


def _keywords(task: Task, context: RemoteContext, params: Mapping[str, Any]) -> dict[str, Any]:
    keywords: dict[str, Any] = {**params, **task.metadata}
    keywords["block_uuid"] = task.uuid
    keywords["dynamic_block_index"] = task.key[-1] if task.key else None
    keywords["context"] = context
    return keywords


#: Programs this process has started, by key (a cluster may serve several runs).
_workers: dict[str, _Worker] = {}


def program_key(program: bytes) -> str:
    import hashlib

    return hashlib.sha256(program).hexdigest()[:16]


def start_worker(program: bytes) -> None:
    """Build the namespace of a program once in this process (runs the notebook's prelude)."""
    key = program_key(program)
    if key not in _workers:
        _workers[key] = _Worker(cloudpickle.loads(program))


def _announce_start(topic: str, task: Task) -> None:
    """Tell the run (a Dask event its client subscribed to) that this attempt starts."""
    from distributed import get_worker

    get_worker().log_event(topic, (task.uuid, task.attempt))


def run_tasks(
    payload: bytes,
    program: bytes | None = None,
    keep_bytes: int | None = None,
    started_topic: str | None = None,
    *values: Any,
) -> bytes:
    """Run one batch here; the answer is cloudpickled (outputs may be notebook types).

    ``program`` is sent along where a worker may not have been started with it (a Dask
    worker that joined or was restarted mid-run); it is then started on first use.
    ``values`` are inputs Dask fetched for the tasks' ``handles.Ref`` placeholders;
    ``keep_bytes`` makes large outputs stay here, and timed instances are announced on
    ``started_topic`` as they start (Dask workers only).
    """
    key, name, tasks = cloudpickle.loads(payload)
    if key not in _workers:
        if program is None:
            raise RuntimeError("this worker was not started with the run's program")
        start_worker(program)
    if values:
        tasks = [
            dataclasses.replace(task, inputs=handles.attach(task.inputs, values)) for task in tasks
        ]
    try:
        with _long_gil_turns:
            results = _workers[key].run(name, tasks, keep_bytes, started_topic)
        return bytes(cloudpickle.dumps(results))
    except Exception as exc:  # an output that cannot be pickled fails the batch, clearly
        error = ErrorInfo(
            type(exc).__name__, f"could not send the results back from the worker: {exc}"
        )
        now = time.time()
        return bytes(cloudpickle.dumps([(False, error, now, now, None) for _ in tasks]))


class _LongGilTurns:
    """While batches run here, a thread keeps the GIL for ``seconds`` before it must hand
    it over (Python's default turn is 5 ms).

    A Dask worker's event loop, profiler and latency tick wake up every 10-20 ms; with 5 ms
    turns each wake-up interrupts the block's code, which cost CPU-bound instances 5-8% of
    their speed on a Dask worker (``bench/executors.py``). The other threads still run, in
    longer turns. Re-entrant across a worker's threads: the first batch in sets the turn,
    the last one out restores what was there.
    """

    seconds = 0.05

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._saved = 0.0

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._saved = sys.getswitchinterval()
                sys.setswitchinterval(max(self._saved, self.seconds))
            self._depth += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                sys.setswitchinterval(self._saved)


_long_gil_turns = _LongGilTurns()


def pack(key: str, name: str, tasks: list[Task]) -> bytes:
    return bytes(cloudpickle.dumps((key, name, tasks)))


def unpack_results(data: bytes) -> list[tuple[Any, ...]]:
    results: list[tuple[Any, ...]] = cloudpickle.loads(data)
    return results
