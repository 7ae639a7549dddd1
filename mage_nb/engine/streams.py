"""Stream mode: a dynamic block whose body returns an iterator fans out as items arrive.

The generator is pulled on a worker, a chunk at a time (the first item alone, then up to
``_PULL_CHUNK``), and only while fewer than ``window`` of its children are pending or
running: back-pressure, so a fast producer cannot flood memory. The instance stays running
until the generator is exhausted; then the fan-out's size is known and the reduce groups
waiting on it can close. A generator that raises midway fails its instance; the children
already created keep their results.

``StreamMixin`` holds the ``Run`` methods that drive streams; it only uses state the
``Run`` declares below.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .fanout import EMPTY, FAILED, FanoutRecord, SuffixNamer, unpack
from .instance import COMPLETED, RUNNING, BlockRun, ErrorInfo
from .instance import FAILED as FAILED_STATUS
from .rows import ROW_FAILED, ROW_GHOST, ROW_OK, Row

if TYPE_CHECKING:
    import queue

    from .events import EventHub
    from .record import PipelineRun
    from .rows import ReduceGroup
    from .scheduler import BlockState, OutputCapture

#: Items of a streaming dynamic block whose children may be pending or running at once.
DEFAULT_WINDOW = 128
_PULL_CHUNK = 32
_PULLED = 3  # the scheduler's queue message for a pulled chunk


class _StreamStart:
    """A dynamic block returned an iterator: its items are pulled as room allows."""

    __slots__ = ("iterator",)

    def __init__(self, iterator: Iterator[Any]):
        self.iterator = iterator


class _Stream:
    """A streaming dynamic instance: its generator is pulled on a worker, a chunk at a time,
    only while fewer than ``window`` of its children are pending or running (back-pressure)."""

    __slots__ = (
        "child_fanouts",
        "chunk",
        "done",
        "inst",
        "iterator",
        "namer",
        "open",
        "pulling",
        "window",
    )

    def __init__(self, inst: BlockRun, iterator: Iterator[Any], window: int):
        self.inst = inst
        self.iterator = iterator
        self.window = window
        self.namer = SuffixNamer(inst.state.name)
        assert inst.fanout is not None
        self.child_fanouts: tuple[FanoutRecord, ...] = (*inst.fanouts, inst.fanout)
        self.open = 0
        self.pulling = False
        self.done = False
        self.chunk = 1  # the first item goes down alone; pulls then grow to _PULL_CHUNK


class StreamMixin:
    """The ``Run`` methods that drive streams."""

    # Declared for type checkers; ``Run`` sets them.
    _streams: dict[int, _Stream]
    _stream_children: dict[int, _Stream]
    _streamed_groups: dict[int, list[tuple[BlockState, tuple[int, ...]]]]
    _failed_producers: dict[int, BlockRun]
    _outstanding: int
    _completions: queue.SimpleQueue[Any]
    _cancel_requested: bool
    _keep: bool
    _preview: int
    capture: OutputCapture | None
    events: EventHub
    record: PipelineRun
    _warn: Callable[[str], None]
    cancel: Callable[[], None]
    _close_group: Callable[[BlockState, tuple[int, ...], ReduceGroup], None]

    # -- streams -----------------------------------------------------------------------------
    def _start_stream(self, inst: BlockRun, iterator: Iterator[Any]) -> None:
        """The instance stays running while its items are pulled; children start at once."""
        state = inst.state
        inst.status = RUNNING
        inst.error = None
        inst.fanout = FanoutRecord(state.name, inst.uuid, 0, [], None)
        inst.fanout.streaming = True
        inst.output = [] if self._keep or self._preview else None
        stream = _Stream(inst, iterator, state.block.spec.window or DEFAULT_WINDOW)
        self._streams[id(inst)] = stream
        self._pump(stream)

    def _pump(self, stream: _Stream) -> None:
        if stream.pulling or stream.done or self._cancel_requested:
            return
        room = stream.window - stream.open
        if room <= 0:
            return  # back-pressure: the generator waits until children finish
        stream.pulling = True
        self._outstanding += 1
        count = min(room, stream.chunk)
        stream.chunk = min(_PULL_CHUNK, stream.chunk * 2)
        stream.inst.state.executor.submit(self._pull, (stream, count), self._completions.put)

    def _pull(self, job: tuple[_Stream, int]) -> tuple[Any, ...]:
        """Runs on a worker: the next few items of a stream (the generator's code runs here)."""
        stream, count = job
        capture = self.capture
        token = capture.begin(stream.inst) if capture is not None else None
        items: list[Any] = []
        done, error = False, None
        try:
            for _ in range(count):
                items.append(next(stream.iterator))
        except StopIteration:
            done = True
        except KeyboardInterrupt:
            self.cancel()
            done = True
        except BaseException as exc:
            error = ErrorInfo.from_exception(exc, block_file=stream.inst.state.filename)
        finally:
            captured = capture.end(token) if capture is not None else None
        return (_PULLED, stream, items, done, error, captured)

    def _take_items(
        self, stream: _Stream, items: list[Any], done: bool, error: ErrorInfo | None, captured: Any
    ) -> None:
        stream.pulling = False
        inst = stream.inst
        if captured:
            inst.captured = _merge_captured(inst.captured, captured)
        if inst.status != RUNNING:
            return  # cancelled meanwhile
        state = inst.state
        record = inst.fanout
        assert record is not None and record.suffixes is not None
        spec = state.block.spec
        if spec.max_children is not None and record.size + len(items) > spec.max_children:
            seen = record.size + len(items)
            items = items[: spec.max_children - record.size]
            if spec.on_overflow == "fail":
                error = ErrorInfo(
                    "FanoutError",
                    f"dynamic block {state.name!r} produced at least {seen} items, more than "
                    f"--max-children {spec.max_children}",
                )
            else:
                self._warn(
                    f"dynamic block {state.name!r} ({inst.uuid}) produced more than --max-children "
                    f"{spec.max_children} items; kept the first {spec.max_children}"
                )
                done = True
        rows: list[Row] = []
        for item in items:
            value, name, meta = unpack(item)
            index = record.size
            suffix, warning = stream.namer.name(name, index)
            if warning:
                self._warn(warning)
            record.suffixes.append(suffix)
            if meta is not None and record.metadata is None:
                record.metadata = [None] * index
            if record.metadata is not None:
                record.metadata.append(meta)
            record.size += 1
            if inst.output is not None:
                inst.output.append(value)
            rows.append(Row((*inst.key, index), stream.child_fanouts, value, inst, ROW_OK))
        if rows:
            for joiner, i in state.downstream:
                joiner.receive(i, rows)
        if error is not None or done:
            self._end_stream(stream, error)
        else:
            self._pump(stream)

    def _end_stream(self, stream: _Stream, error: ErrorInfo | None) -> None:
        """The generator is exhausted (or raised): the fan-out's size is now known."""
        stream.done = True
        inst = stream.inst
        self._streams.pop(id(inst), None)
        record = inst.fanout
        assert record is not None
        record.streaming = False
        close = getattr(stream.iterator, "close", None)
        if close is not None and error is None and not self._cancel_requested:
            with contextlib.suppress(Exception):  # a generator refusing to close changes nothing
                close()
        inst.ended = time.time()
        inst.error = error
        inst.status = COMPLETED if error is None else FAILED_STATUS
        self.events.instance_finished(run=self.record, instance=inst)
        marker_state = ROW_GHOST if error is None else ROW_FAILED
        if record.size == 0:
            row = Row(
                (*inst.key, EMPTY if error is None else FAILED),
                stream.child_fanouts,
                None,
                inst,
                marker_state,
            )
            for joiner, i in inst.state.downstream:
                joiner.receive(i, (row,))
        elif error is not None:
            self._failed_producers[id(record)] = inst
        for state, prefix in self._streamed_groups.pop(id(record), []):
            group = state.groups.get(prefix)
            if group is not None and group.complete():
                del state.groups[prefix]
                self._close_group(state, prefix, group)
        if self._stream_children:
            self._release(inst)  # a stream that is itself a child of a stream is done too

    def _release(self, inst: BlockRun) -> None:
        """A child of a stream finished: make room for the next items."""
        stream = self._stream_children.pop(id(inst), None)
        if stream is not None:
            stream.open -= 1
            self._pump(stream)


def _merge_captured(before: Any, after: Any) -> Any:
    """Output captured across a stream's pulls, in order."""
    if before is None:
        return after
    try:
        before.stdout += after.stdout
        before.stderr += after.stderr
        before.displays.extend(after.displays)
    except AttributeError:
        return after
    return before
