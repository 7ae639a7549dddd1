"""Feeds a ``RunTree`` from run events without slowing the run down.

Why it is shaped this way: the scheduler calls the hooks once or more per instance, on its
own thread, and a 100,000-instance run must not get noticeably slower with the widget on. So
the hooks only bump integer counters (per block and status) and keep a few bounded lists
(the first instances created, the last ones started and finished, failed ones up to a bound);
they never touch the widget. A daemon thread wakes every ``interval`` seconds and, if the
counters moved, turns them into plain JSON and sets the widget's traits in one ``hold_sync``:
at most ``1 / interval`` updates a second whatever the event rate. ``run_finished`` stops that
thread and makes one last full flush, with the bounded tree built from the record.

This module also holds the tree builder the widget uses (``select`` picks a bounded set of
instances from the record, ``nest`` nests them as their lineage nests), so the live and the
final tree are the same shape.

Invariants: per-event work is O(1) (counter bumps and bounded appends); the synced state is
bounded (blocks × statuses, at most ``max_nodes`` instance nodes plus the pages a user asked
for); the counts of final statuses are exact at every flush, running vs pending is exact
except around a cancelled retry, and everything is exact after ``run_finished``.
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..engine.events import RunListener
from ..engine.instance import COMPLETED, FAILED, PENDING, RUNNING, STATUSES, BlockRun, iso

if TYPE_CHECKING:
    from ..engine.fanout import FanoutRecord
    from ..engine.record import PipelineRun
    from . import RunTree

#: Items shown per fan-out before the rest are counted as ``more``.
PER_FANOUT = 20
#: Items one "… N more" click adds.
PAGE_SIZE = 50
#: Longest error line sent to the browser.
_MAX_LINE = 300
# The live tree is a glimpse (the full bounded tree comes with the final flush), kept small
# because it is rebuilt on every tick while the scheduler waits for the GIL.
_FIRST = 30  # instances remembered in creation order (the top of the live tree)
_RECENT = 30  # last finished instances
_STARTED = 10  # last started instances

Path = tuple[tuple["FanoutRecord", int], ...]
#: A fan-out group in the tree: the item path it hangs under, and the fan-out itself.
GroupKey = tuple[Path, "FanoutRecord"]


# -- the tree ----------------------------------------------------------------------------------
def instance_lists(run: PipelineRun) -> list[list[BlockRun]]:
    """Each block's instances in creation order, without sorting 100,000 of them.

    ``PipelineRun`` keeps its block states private; reading their lists here keeps the
    final tree O(n) with a small constant. Falls back to the public (sorted) iterator.
    """
    states = getattr(run, "_states", None)
    if states is not None:
        return [state.instances for state in states]
    return [list(run.instances())]


def path_of(inst: BlockRun) -> Path:
    """The instance's lineage as (fan-out, item index) pairs; placeholders drop failed ones."""
    return tuple((f, k) for f, k in zip(inst.fanouts, inst.key) if k >= 0)


def _order(inst: BlockRun) -> tuple[int, tuple[int, ...]]:
    return (inst.state.block.order, inst.key)


def priority(inst: BlockRun) -> tuple[bool, bool, int, int, tuple[int, ...]]:
    """Who is kept when the tree is cut: instances outside every fan-out (a handful), then
    failed ones (always shown up to the bound), then shallow before deep, in record order."""
    key = inst.key
    return (bool(key), inst.status != FAILED, len(key), inst.state.block.order, key)


def select(
    run: PipelineRun,
    *,
    bound: int,
    status: str = "",
    search: str = "",
    pages: dict[GroupKey, int] | None = None,
    failed: Sequence[BlockRun] | None = None,
) -> tuple[list[BlockRun], int]:
    """A bounded set of instances to show, and how many matched in all.

    Unfiltered: every instance within the first ``PER_FANOUT`` items of each fan-out it
    descends from (or within a paged group's larger limit), plus every failed instance;
    failed first, then shallow before deep, cut at ``bound``. Filtered by status and/or a
    uuid substring: the matching instances in record order, cut at ``bound``.

    ``failed``: the failed instances, when the caller already knows them (the feed does).
    Then a flat fan-out's first items are found without reading all its instances: its keys
    are unique, so the scan stops once it has them (usually at once: creation follows item
    order). This is what keeps the final flush of a 100,000-item run at a fraction of a ms.
    """
    lists = instance_lists(run)
    if status or search:
        matched = [
            i
            for insts in lists
            for i in insts
            if (not status or i.status == status) and (not search or search in i.uuid)
        ]
        matched.sort(key=_order)
        return matched[:bound], len(matched)
    chosen: list[BlockRun] = list(failed or ())
    limit = PER_FANOUT
    for insts in lists:
        if not insts:
            continue
        depth = len(insts[0].key)
        if depth == 0:
            chosen.extend(insts)
        elif depth == 1 and failed is not None:
            chosen.extend(_first_items(insts, limit))
        elif depth == 1:
            first = (limit,)
            chosen.extend([i for i in insts if i.key < first or i.status == FAILED])
        else:
            chosen.extend([i for i in insts if max(i.key) < limit or i.status == FAILED])
    if pages:
        chosen.extend(_paged(lists, pages))
    if failed:
        chosen = unique(chosen)
    total = len(chosen)
    if total > bound:
        chosen.sort(key=priority)
        del chosen[bound:]
    return chosen, total


def unique(instances: Iterable[BlockRun]) -> list[BlockRun]:
    """Each instance once, first occurrence first."""
    seen: set[int] = set()
    kept = []
    for inst in instances:
        if id(inst) not in seen:
            seen.add(id(inst))
            kept.append(inst)
    return kept


def _first_items(insts: list[BlockRun], limit: int) -> list[BlockRun]:
    """The instances of a flat (depth 1) fan-out among its first ``limit`` items."""
    size = insts[0].fanouts[0].size
    wanted = min(limit, size) if size > 0 else len(insts)
    first = (limit,)
    found = []
    for inst in insts:
        if inst.key < first:
            found.append(inst)
            if len(found) >= wanted:
                break
    return found


def _paged(lists: list[list[BlockRun]], pages: dict[GroupKey, int]) -> list[BlockRun]:
    """Instances shown only because a user paged a group further (not already chosen)."""
    records = {f for _, f in pages}
    found = []
    for insts in lists:
        for inst in insts:
            key = inst.key
            if not key or max(key) < PER_FANOUT or inst.status == FAILED:
                continue  # chosen already
            if not any(f in records for f in inst.fanouts):
                continue
            path = path_of(inst)
            if all(
                k < PER_FANOUT or k < pages.get((path[:j], f), 0) for j, (f, k) in enumerate(path)
            ):
                found.append(inst)
    return found


def instance_node(inst: BlockRun) -> dict[str, Any]:
    duration = inst.duration
    error = inst.error
    line = error.line()[:_MAX_LINE] if error is not None and inst.status != COMPLETED else None
    return {
        "uuid": inst.uuid,
        "block": inst.block,
        "status": inst.status,
        "duration": round(duration, 4) if duration is not None else None,
        "attempts": inst.attempts,
        "reused": inst.reused,
        "error_line": line,
    }


class _Box:
    """One place in the tree: the instances whose lineage is exactly this path, and the items
    of each fan-out that hangs below it."""

    __slots__ = ("groups", "instances")

    def __init__(self) -> None:
        self.instances: list[BlockRun] = []
        self.groups: dict[FanoutRecord, dict[int, _Box]] = {}


def group_id(prefix: Path, fanout: FanoutRecord) -> str:
    """The browser's name for a fan-out group (what a "page" message sends back)."""
    return json.dumps([[f.block, f.suffix(k)] for f, k in prefix] + [fanout.block])


def nest(
    instances: Iterable[BlockRun], groups: dict[str, GroupKey], *, counted: bool = True
) -> list[dict[str, Any]]:
    """Nest instances as ``summary.format_tree`` does: the items of a fan-out under the
    instance that made it, the instances of one item under that item.

    ``counted``: give each group's hidden items as ``more`` (with the group's ``id`` and how
    many items are ``shown``, for paging). ``groups`` receives id -> group for every group
    with hidden items.
    """
    root = _Box()
    for inst in instances:
        box = root
        for f, k in path_of(inst):
            items = box.groups.get(f)
            if items is None:
                items = box.groups[f] = {}
            child = items.get(k)
            if child is None:
                child = items[k] = _Box()
            box = child
        box.instances.append(inst)
    return _emit(root, (), groups, counted)


def _emit(
    box: _Box, prefix: Path, groups: dict[str, GroupKey], counted: bool
) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = []
    left = dict(box.groups)
    for inst in sorted(box.instances, key=_order):
        node = instance_node(inst)
        owned = next((f for f in left if f.block == inst.block), None)
        if owned is not None:
            items = left.pop(owned)
            node["children"] = _items(owned, items, prefix, groups, counted)
            _count(node, owned, len(items), prefix, groups, counted)
        nodes.append(node)
    for f, items in left.items():  # fan-outs whose maker is not shown here
        nodes.extend(_items(f, items, prefix, groups, counted))
        more: dict[str, Any] = {"label": "", "of": f.block, "children": [], "more": 0}
        if _count(more, f, len(items), prefix, groups, counted):
            nodes.append(more)
    return nodes


def _items(
    f: FanoutRecord,
    items: dict[int, _Box],
    prefix: Path,
    groups: dict[str, GroupKey],
    counted: bool,
) -> list[dict[str, Any]]:
    return [
        {
            "label": f.suffix(k),
            "of": f.block,
            "children": _emit(items[k], (*prefix, (f, k)), groups, counted),
            "more": 0,
        }
        for k in sorted(items)
    ]


def _count(
    node: dict[str, Any],
    f: FanoutRecord,
    shown: int,
    prefix: Path,
    groups: dict[str, GroupKey],
    counted: bool,
) -> int:
    hidden = max(0, f.size - shown) if counted else 0
    node["more"] = hidden
    if hidden:
        gid = group_id(prefix, f)
        groups[gid] = (prefix, f)
        node["id"] = gid
        node["shown"] = shown
    return hidden


# -- the aggregates ----------------------------------------------------------------------------
def _statuses() -> dict[str, int]:
    return dict.fromkeys(STATUSES, 0)


def block_row(block: Any, counts: dict[str, int]) -> dict[str, Any]:
    """One row of the ``blocks`` trait, from a ``dag.Block`` and its counts per status."""
    return {
        "name": block.name,
        "depth": len(block.scope),
        "dynamic": bool(block.dynamic),
        "reduce": block.reduce,
        "kind": block.spec.kind,
        "counts": counts,
        "total": sum(counts.values()),
    }


def run_row(run: PipelineRun, counts: dict[str, int], now: float | None = None) -> dict[str, Any]:
    """The ``run`` trait: id, status, start, duration so far, counts, total, warnings."""
    started = run.started
    end = run.ended if run.ended is not None else now
    duration = end - started if started is not None and end is not None else None
    return {
        "id": run.run_id,
        "status": run.status,
        "started_at": iso(started),
        "duration": round(duration, 3) if duration is not None else None,
        "counts": counts,
        "total": sum(counts.values()),
        "warnings": len(run.warnings),
    }


class WidgetFeed(RunListener):
    """Listens to a run and keeps a ``RunTree`` up to date at a bounded rate.

    ``flushes`` counts the updates sent to the widget; ``max_state_bytes`` is the size of the
    largest synced state flushed (``json.dumps`` of the traits).
    """

    def __init__(self, widget: RunTree, interval: float = 0.1, max_nodes: int = 500) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.widget = widget
        self.interval = interval
        self.max_nodes = max_nodes
        widget.max_nodes = max_nodes
        self.flushes = 0
        self.max_state_bytes = 0
        #: Why flushing stopped, if it did (a widget bug must not fail the run).
        self.error: Exception | None = None
        self._run: PipelineRun | None = None
        # Per BlockState: instances created, instances running, finished ones per status.
        self._created: defaultdict[Any, int] = defaultdict(int)
        self._running: defaultdict[Any, int] = defaultdict(int)
        self._counts: defaultdict[Any, dict[str, int]] = defaultdict(_statuses)
        self._first: list[BlockRun] = []
        self._room = _FIRST
        self._failed: list[BlockRun] = []
        self._recent: deque[BlockRun] = deque(maxlen=_RECENT)
        self._started: deque[BlockRun] = deque(maxlen=_STARTED)
        self._recent_append = self._recent.append
        self._started_append = self._started.append
        self._flushed: tuple[Any, ...] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- hooks (scheduler thread; O(1), never the widget) -------------------------------------
    def run_started(self, *, run: PipelineRun) -> None:
        self._run = run
        states = getattr(run, "_states", ())
        self._created = defaultdict(int, {state: 0 for state in states})
        self._running = defaultdict(int, {state: 0 for state in states})
        self._counts = defaultdict(_statuses, {state: _statuses() for state in states})
        self._first, self._room, self._failed = [], _FIRST, []
        self._recent.clear()
        self._started.clear()
        self._flushed = None
        self.widget.attach(run, live=True)
        self._stop.clear()
        if not self._guarded(final=False):
            return
        self._thread = threading.Thread(target=self._tick, name="mage_nb-widget-feed", daemon=True)
        self._thread.start()

    def instance_created(self, *, run: PipelineRun, instance: BlockRun) -> None:
        self._created[instance.state] += 1
        if self._room:
            self._room -= 1
            self._first.append(instance)

    def instance_started(self, *, run: PipelineRun, instance: BlockRun) -> None:
        self._running[instance.state] += 1
        self._started_append(instance)

    def instance_retried(self, *, run: PipelineRun, instance: BlockRun) -> None:
        self._running[instance.state] -= 1

    def instance_finished(self, *, run: PipelineRun, instance: BlockRun) -> None:
        state = instance.state
        status = instance.status
        self._counts[state][status] += 1
        if instance.attempts and not instance.reused:
            self._running[state] -= 1  # it was handed to a worker: it is running no more
        if status == "failed" and len(self._failed) < self.max_nodes:  # a literal: no global
            self._failed.append(instance)
        self._recent_append(instance)

    def run_finished(self, *, run: PipelineRun) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(1.0, 10 * self.interval))
        self._guarded(final=True)

    # -- flushing (timer thread, and the final flush) ------------------------------------------
    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            if not self._guarded(final=False):
                return

    def _guarded(self, final: bool) -> bool:
        """Flush; a failure of the display never fails the run (it is kept and warned about)."""
        try:
            self._flush(final)
        except Exception as exc:
            self.error = exc
            warnings.warn(f"the run tree widget stopped updating: {exc!r}", RuntimeWarning, 2)
            return False
        return True

    def _snapshot(self) -> tuple[dict[str, int], list[dict[str, Any]]]:
        """Counts per status for the run and rows per block, from the counters."""
        totals = _statuses()
        rows = []
        states = list(self._created)  # every state with an instance, and the announced ones
        for state in states:
            finished = self._counts.get(state)
            counts = dict(finished) if finished is not None else _statuses()
            running = max(0, self._running.get(state, 0))
            counts[RUNNING] = running
            done = sum(counts.values()) - running
            counts[PENDING] = max(0, self._created[state] - done - running)
            for s in STATUSES:
                totals[s] += counts[s]
            rows.append((state.block.order, block_row(state.block, counts)))
        rows.sort(key=lambda row: row[0])
        return totals, [row for _, row in rows]

    def _live_instances(self) -> list[BlockRun]:
        for _ in range(3):  # a deque copied while the scheduler appends may refuse once
            try:
                recent = list(self._recent) + list(self._started)
                break
            except RuntimeError:
                continue
        else:
            recent = []
        return unique([*self._failed, *self.widget._pinned, *self._first, *recent])

    def _flush(self, final: bool = False) -> None:
        with self._lock:
            run = self._run
            if run is None or (self._stop.is_set() and not final):
                return
            widget = self.widget
            totals, blocks = self._snapshot()
            mark = (run.status, len(run.warnings), widget._view_version, json.dumps(blocks))
            if not final and mark == self._flushed:
                return
            self._flushed = mark
            with widget._lock:
                live = None if final else self._live_instances()
                if live is None:
                    tree = widget.build_tree(failed=self._failed)
                else:
                    tree = widget.live_tree(live)
                state = {
                    "run": run_row(run, totals, time.time()),
                    "blocks": blocks,
                    "tree": tree,
                }
                widget.update(state, live=not final)
                size = widget.synced_bytes()
            self.flushes += 1
            self.max_state_bytes = max(self.max_state_bytes, size)


__all__ = [
    "PAGE_SIZE",
    "PER_FANOUT",
    "WidgetFeed",
    "block_row",
    "group_id",
    "instance_lists",
    "nest",
    "priority",
    "run_row",
    "select",
]
