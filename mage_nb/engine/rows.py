"""What finished instances hand down (rows), how a reduce folds them (groups), and how an
earlier result is recognised as still valid.

A *row* is one finished instance's contribution to its downstream: its key (one item index
per fan-out in scope), the fan-outs those indices point into, its value, what produced it
(its origin) and a state: OK, FAILED (whatever joins it is upstream_failed) or GHOST (an
empty fan-out: it creates nothing, but lets a reduce below know its group is empty).
"""

from __future__ import annotations

from typing import Any

from .fanout import FanoutRecord
from .instance import COMPLETED, FAILED, BlockRun, ErrorInfo
from .reduce import Reducer

# Row states.
ROW_OK, ROW_FAILED, ROW_GHOST = 0, 1, 2


class Row:
    """What one finished instance (or one item of a fan-out) hands down."""

    __slots__ = ("fanouts", "key", "origin", "state", "value")

    def __init__(
        self,
        key: tuple[int, ...],
        fanouts: tuple[FanoutRecord, ...],
        value: Any,
        origin: Any,
        state: int,
    ):
        self.key = key
        self.fanouts = fanouts
        self.value = value
        self.origin = origin
        self.state = state


class GroupResult:
    """The closing of one fan-out by a reduce: what the consumer was reduced from."""

    __slots__ = ("cause", "error", "failed_uuids", "ok", "reduced_from", "sources", "uuid", "value")

    def __init__(
        self,
        uuid: str,
        reduced_from: list[str],
        failed_uuids: list[str],
        error: ErrorInfo | None = None,
        cause: BlockRun | None = None,
    ):
        self.ok = error is None and cause is None
        self.sources: tuple[Any, ...] = ()  # the results reduced (see _computed_by)
        self.value: Any = None  # what the consumers received
        self.uuid = uuid
        self.reduced_from = reduced_from
        self.failed_uuids = failed_uuids
        self.error = error
        self.cause = cause


_SKIP = object()


class ReduceGroup:
    """One fan-out being closed by a reduce: outputs are folded as they arrive, in item
    order (early arrivals wait in ``waiting``), so a big fan-out is never held whole."""

    __slots__ = ("acc", "closing", "error", "fanouts", "members", "next", "reducer", "waiting")

    def __init__(self, closing: FanoutRecord, fanouts: tuple[FanoutRecord, ...], reducer: Reducer):
        self.closing = closing  # the fan-out this group closes
        self.fanouts = fanouts  # the lineage that remains
        self.members: list[tuple[int, int, Any]] = []  # (item index, row state, origin)
        self.waiting: dict[int, Any] = {}
        self.next = 0
        self.reducer = reducer
        self.error: BaseException | None = None
        try:
            self.acc = reducer.initial()
        except Exception as exc:
            self.error = exc
            self.acc = None

    def expected(self) -> int | None:
        """How many members close the group; None while the fan-out is still streaming."""
        if self.closing.streaming:
            return None
        return max(self.closing.size, 1)

    def add(self, index: int, row_state: int, value: Any, origin: Any) -> None:
        self.members.append((index, row_state, origin))
        if index < 0:
            return
        self.waiting[index] = value if row_state == ROW_OK else _SKIP
        while self.next in self.waiting:
            value = self.waiting.pop(self.next)
            self.next += 1
            if value is not _SKIP and self.error is None:
                try:
                    self.acc = self.reducer.step(self.acc, value)
                except Exception as exc:
                    self.error = exc

    def complete(self) -> bool:
        expected = self.expected()
        return expected is not None and len(self.members) >= expected


def root_cause(origin: Any) -> BlockRun | None:
    if isinstance(origin, GroupResult):
        return origin.cause
    if isinstance(origin, BlockRun):
        return origin if origin.status == FAILED or origin.cause is None else origin.cause
    return None


def inputs_of(run: BlockRun) -> tuple[Any, ...]:
    """The inputs an instance received, rebuilt from what its upstreams kept.

    Instances drop their inputs once they finish (memory); debugging one instance by hand
    (``%pipeline inputs``) needs them back.
    """
    values: list[Any] = []
    for origin in run.origins or ():
        if isinstance(origin, GroupResult):
            value = origin.value
        elif isinstance(origin, BlockRun):
            value = (origin.fanout, origin.output) if origin.fanout is not None else origin.output
        else:
            value = None
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], FanoutRecord):
            record, items = value
            position = next(i for i, f in enumerate(run.fanouts) if f is record)
            value = items[run.key[position]]
        values.append(value)
    return tuple(values)


def computed_by(origin: Any) -> Any:
    """Identity of the result an origin hands down: the instance that computed it, or for a
    reduce the tuple of its members' results."""
    if isinstance(origin, BlockRun):
        return origin.source or origin
    if isinstance(origin, GroupResult):
        return origin.sources
    return origin


def same_inputs(origins: tuple[Any, ...], earlier: tuple[Any, ...] | None) -> bool:
    """An earlier result stands only if it was computed from exactly the results this
    instance would now receive (not merely from instances with the same names)."""
    if earlier is None or len(origins) != len(earlier):
        return False
    for now, then in zip(origins, earlier):
        a, b = computed_by(now), computed_by(then)
        if isinstance(a, tuple) and isinstance(b, tuple):
            if len(a) != len(b) or any(x is not y for x, y in zip(a, b)):
                return False
        elif a is not b:
            return False
    return True


def is_broken(origin: Any) -> bool:
    if isinstance(origin, BlockRun):
        return origin.status != COMPLETED
    return isinstance(origin, GroupResult) and not origin.ok


def by_index(member: tuple[int, int, Any]) -> int:
    return member[0]
