"""The run tree widget (SPEC §6): one anywidget whose synced state is plain JSON.

Why it is shaped this way: a notebook run may have 100,000 instances, so the browser never
gets them all. It gets aggregates (counts per block and status), a bounded tree (at most
``max_nodes`` instance nodes, plus the pages a user asks for) and the details of one
instance at a time, on request. ``feed.WidgetFeed`` keeps it live from run events at a
bounded rate; ``attach`` alone shows a finished run.

Messages from the browser (``model.send``):

* ``{"type": "detail", "uuid": U}`` fills ``detail`` for instance ``U`` (and ``selected``);
* ``{"type": "page", "node": ID, "offset": N}`` shows ``PAGE_SIZE`` more items of the fan-out
  group ``ID`` (a node's ``id``) from its ``N`` shown ones;
* ``{"type": "stop"}`` calls ``stop_callback`` (a plain callable, or None);
* ``{"type": "filter", "status": S}`` / ``{"type": "search", "text": T}`` set those traits
  (the browser may as well set the traits itself).

Invariants: every synced trait is plain JSON; an output entry sent is at most 200 kB,
stdout, stderr, the error message and traceback at most 50 kB each, displays at most 20,
each cut with ``truncated`` set and a note; all state changes happen under ``_lock`` (the
feed flushes from its own thread).
"""

from __future__ import annotations

import base64
import json
import pathlib
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import anywidget
import traitlets

from ..engine.instance import COMPLETED, STATUSES, BlockRun
from .feed import (
    PAGE_SIZE,
    PER_FANOUT,
    GroupKey,
    WidgetFeed,
    block_row,
    instance_lists,
    nest,
    priority,
    run_row,
    select,
)

if TYPE_CHECKING:
    from IPython.core.formatters import DisplayFormatter

    from ..engine.record import PipelineRun

__all__ = [
    "MAX_DISPLAYS",
    "MAX_ENTRY_BYTES",
    "MAX_STREAM_BYTES",
    "PAGE_SIZE",
    "PER_FANOUT",
    "RunTree",
    "WidgetFeed",
    "instance_detail",
    "mime_bundle",
]

_STATIC = pathlib.Path(__file__).parent / "static"
#: Largest output entry (one mime type) sent to the browser.
MAX_ENTRY_BYTES = 200_000
#: Largest stdout, stderr, error message or traceback text sent to the browser.
MAX_STREAM_BYTES = 50_000
#: Most rich displays of one instance sent to the browser.
MAX_DISPLAYS = 20
_SYNCED = ("run", "blocks", "tree", "detail", "selected", "filter", "search")
_formatter: DisplayFormatter | None = None


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8", "replace"))


# -- mime bundles --------------------------------------------------------------------------------
def _display_formatter() -> DisplayFormatter:
    global _formatter
    if _formatter is None:
        from IPython.core.formatters import DisplayFormatter

        _formatter = DisplayFormatter()
    return _formatter


def cut_text(text: str, limit: int) -> tuple[str, bool]:
    """``text`` cut to at most ``limit`` UTF-8 bytes (on a character boundary)."""
    if len(text) * 4 <= limit:
        return text, False
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return text, False
    return raw[:limit].decode("utf-8", "ignore"), True


def choose_bundle(data: Mapping[str, Any]) -> dict[str, Any]:
    """What the browser shows of a mime dict: HTML, else PNG (base64), else plain text.

    An entry over ``MAX_ENTRY_BYTES`` is not sent whole: HTML and PNG cannot be cut, so the
    plain text is sent instead (cut if need be), with ``truncated`` and a note.
    """
    notes: list[str] = []
    html = data.get("text/html")
    if isinstance(html, str):
        if len(html.encode("utf-8", "replace")) <= MAX_ENTRY_BYTES:
            return {"data": {"text/html": html}, "truncated": False, "note": None}
        notes.append(f"HTML output over {MAX_ENTRY_BYTES // 1000} kB not shown")
    png = data.get("image/png")
    if isinstance(png, (bytes, bytearray)):
        png = base64.b64encode(png).decode("ascii")
    if isinstance(png, str):
        if len(png) <= MAX_ENTRY_BYTES:
            return {"data": {"image/png": png}, "truncated": False, "note": None}
        notes.append(f"image over {MAX_ENTRY_BYTES // 1000} kB not shown")
    plain = data.get("text/plain")
    text = plain if isinstance(plain, str) else ""
    text, cut = cut_text(text, MAX_ENTRY_BYTES)
    if cut:
        notes.append(f"text cut to its first {MAX_ENTRY_BYTES // 1000} kB")
    return {
        "data": {"text/plain": text},
        "truncated": bool(notes),
        "note": "; ".join(notes) or None,
    }


def mime_bundle(obj: Any) -> dict[str, Any]:
    """``obj`` as IPython would display it, chosen and bounded by ``choose_bundle``."""
    try:
        data, _ = _display_formatter().format(obj)
    except Exception as exc:  # a broken _repr_*_ must not break the widget
        data = {"text/plain": f"<{type(obj).__name__}: repr failed: {exc!r}>"}
    return choose_bundle(data)


def instance_detail(inst: BlockRun) -> dict[str, Any]:
    """Everything the detail panel shows about one instance, bounded."""
    notes: list[str] = []
    error = inst.error
    output = mime_bundle(inst.output) if inst.status == COMPLETED else None
    if output is not None and output["truncated"]:
        notes.append(f"output: {output['note']}")
    captured = inst.captured
    streams: dict[str, str] = {}
    for name in ("stdout", "stderr"):
        text = getattr(captured, name, "") or ""
        text, cut = cut_text(str(text), MAX_STREAM_BYTES)
        if cut:
            notes.append(f"{name} cut to its first {MAX_STREAM_BYTES // 1000} kB")
        streams[name] = text
    displays: list[dict[str, Any]] = []
    shown = list(getattr(captured, "displays", None) or ())
    for data, _metadata in shown[:MAX_DISPLAYS]:
        bundle = choose_bundle(data)
        if bundle["truncated"]:
            notes.append(f"display {len(displays) + 1}: {bundle['note']}")
        displays.append(bundle)
    if len(shown) > MAX_DISPLAYS:
        notes.append(f"only the first {MAX_DISPLAYS} of {len(shown)} displays are shown")
    if error is not None:
        message, cut_message = cut_text(error.message, MAX_STREAM_BYTES)
        traceback, cut_traceback = cut_text(error.traceback or "", MAX_STREAM_BYTES)
        if cut_message or cut_traceback:
            notes.append(f"error cut to its first {MAX_STREAM_BYTES // 1000} kB")
        shown_error: dict[str, Any] | None = {
            "type": error.type,
            "message": message,
            "traceback": traceback or None,
        }
    else:
        shown_error = None
    duration = inst.duration
    return {
        "uuid": inst.uuid,
        "block": inst.block,
        "status": inst.status,
        "attempts": inst.attempts,
        "duration": round(duration, 4) if duration is not None else None,
        "reused": inst.reused,
        "lineage": [[block, suffix] for block, suffix in inst.lineage],
        "error": shown_error,
        "output": output,
        "stdout": streams["stdout"],
        "stderr": streams["stderr"],
        "displays": displays,
        "truncated": bool(notes),
        "notes": notes,
    }


# -- the widget ----------------------------------------------------------------------------------
class RunTree(anywidget.AnyWidget):
    """Pipeline → blocks → instances, live; click an instance for its output and errors."""

    _esm = _STATIC / "run_tree.js"
    _css = _STATIC / "run_tree.css"

    #: id, status, started_at, duration, counts per status, total, warnings (a count).
    run: traitlets.Dict[str, Any] = traitlets.Dict().tag(sync=True)
    #: Per block: name, depth, dynamic, reduce, kind, counts per status, total.
    blocks: traitlets.List[dict[str, Any]] = traitlets.List().tag(sync=True)
    #: Bounded nested nodes: instance nodes and item nodes (see ``feed.nest``).
    tree: traitlets.List[dict[str, Any]] = traitlets.List().tag(sync=True)
    #: The selected instance's details (``instance_detail``), or {}.
    detail: traitlets.Dict[str, Any] = traitlets.Dict().tag(sync=True)
    selected = traitlets.Unicode("").tag(sync=True)
    #: A status, or "" for all.
    filter = traitlets.Unicode("").tag(sync=True)
    #: A uuid substring, or "".
    search = traitlets.Unicode("").tag(sync=True)

    def __init__(self, max_nodes: int = 500, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stop_callback: Callable[[], object] | None = None
        self.max_nodes = max_nodes
        self._lock = threading.RLock()
        self._run: PipelineRun | None = None
        self._live = False
        self._by_uuid: dict[str, BlockRun] = {}
        self._indexed = -1
        self._groups: dict[str, GroupKey] = {}
        self._pages: dict[GroupKey, int] = {}
        self._bound = max_nodes
        self._pinned: list[BlockRun] = []
        self._view_version = 0
        self._detail_size: tuple[object, int] = (None, 0)
        self.on_msg(self._on_msg)

    # -- the run ---------------------------------------------------------------------------------
    def __repr__(self) -> str:
        """The text a front end without widgets shows (GitHub, nbviewer, a terminal)."""
        run = self.run
        if not run:
            return "RunTree (no run yet)"
        counts = run.get("counts") or {}
        done = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
        return f"run {run.get('id', '?')} {run.get('status', '?')}: {run.get('total', 0)} instances ({done})"

    def attach(self, run: PipelineRun, live: bool = False) -> None:
        """Show ``run``: the feed attaches it live; a finished run is drawn from its record."""
        with self._lock:
            if run is not self._run:
                self._run = run
                self._by_uuid, self._indexed = {}, -1
                self._groups, self._pages, self._pinned = {}, {}, []
                self._bound = self.max_nodes
                self.detail, self.selected = {}, ""
            self._live = live
            stale = self.run.get("id") != run.run_id or self.run.get("status") != run.status
            if not live and run.ended is not None and stale:
                self.refresh()

    def refresh(self) -> None:
        """Recompute every trait from the attached run's record (O(instances))."""
        with self._lock:
            run = self._run
            if run is None:
                return
            totals = dict.fromkeys(STATUSES, 0)
            rows = []
            for block_state in getattr(run, "_states", ()):
                counts = dict.fromkeys(STATUSES, 0)
                for inst in block_state.instances:
                    counts[inst.status] += 1
                for status, n in counts.items():
                    totals[status] += n
                rows.append(block_row(block_state.block, counts))
            state = {"run": run_row(run, totals), "blocks": rows, "tree": self.build_tree()}
            self.update(state, live=self._live)

    def update(self, state: Mapping[str, Any], live: bool) -> None:
        """Set synced traits in one message (the feed's flush), then refresh a stale detail."""
        with self._lock, self.hold_sync():
            for name, value in state.items():
                setattr(self, name, value)
            self._live = live
            if not live:
                self._pinned = []
            self._refresh_detail()

    def synced_state(self) -> dict[str, Any]:
        """The synced traits as plain JSON-ready values."""
        return {name: getattr(self, name) for name in _SYNCED}

    def synced_bytes(self) -> int:
        """``len(json.dumps(synced_state()))`` in UTF-8, without re-encoding an unchanged
        ``detail`` (it may be the largest part) on every flush."""
        detail = self.detail
        if detail is not self._detail_size[0]:
            self._detail_size = (detail, _json_bytes(detail))
        rest = {name: getattr(self, name) for name in _SYNCED if name != "detail"}
        return _json_bytes(rest) + len(', "detail": ') + self._detail_size[1]

    # -- the tree --------------------------------------------------------------------------------
    def build_tree(self, failed: Sequence[BlockRun] | None = None) -> list[dict[str, Any]]:
        """The bounded tree from the whole record, with the current filter, search and pages
        (``failed``: the run's failed instances, if known, spare a scan; see ``select``)."""
        with self._lock:
            run = self._run
            if run is None:
                return []
            status, search = self._view()
            chosen, total = select(
                run,
                bound=self._bound,
                status=status,
                search=search,
                pages=self._pages,
                failed=failed,
            )
            return self._nest(chosen, total, filtered=bool(status or search))

    def live_tree(self, instances: list[BlockRun]) -> list[dict[str, Any]]:
        """The tree during a run, from the feed's bounded instances (and pinned ones)."""
        with self._lock:
            status, search = self._view()
            if status or search:
                instances = [
                    i
                    for i in instances
                    if (not status or i.status == status) and (not search or search in i.uuid)
                ]
            total = len(instances)
            if total > self._bound:
                instances = sorted(instances, key=priority)[: self._bound]
            return self._nest(instances, total, filtered=bool(status or search))

    def _nest(self, chosen: list[BlockRun], total: int, filtered: bool) -> list[dict[str, Any]]:
        groups: dict[str, GroupKey] = {}
        tree = nest(chosen, groups, counted=not filtered)
        if filtered and total > len(chosen):
            tree.append({"label": "", "of": "", "children": [], "more": total - len(chosen)})
        self._groups = groups
        return tree

    def _view(self) -> tuple[str, str]:
        status = self.filter if self.filter in STATUSES else ""
        return status, self.search.strip()

    @traitlets.observe("filter", "search")
    def _view_changed(self, change: Any) -> None:
        self._redraw()

    def _redraw(self) -> None:
        """The filter, search or pages changed: redraw now, or pin matches for the feed."""
        with self._lock:
            self._view_version += 1
            run = self._run
            if run is None:
                return
            if self._live:  # the feed redraws at its next tick, from its own instances + these
                status, search = self._view()
                pages = self._pages if not (status or search) else None
                self._pinned = (
                    select(run, bound=self._bound, status=status, search=search, pages=pages)[0]
                    if status or search or pages
                    else []
                )
            else:
                self.tree = self.build_tree()

    # -- lookups -----------------------------------------------------------------------------------
    def instance(self, uuid: str) -> BlockRun | None:
        """The attached run's instance ``uuid`` (index built lazily, rebuilt as the run grows)."""
        with self._lock:
            found = self._by_uuid.get(uuid)
            if found is not None or self._run is None:
                return found
            lists = instance_lists(self._run)
            size = sum(len(insts) for insts in lists)
            if size != self._indexed:
                self._by_uuid = {i.uuid: i for insts in lists for i in insts}
                self._indexed = size
            return self._by_uuid.get(uuid)

    def _refresh_detail(self) -> None:
        uuid = self.detail.get("uuid")
        if not uuid:
            return
        inst = self.instance(uuid)
        if inst is not None and (
            inst.status != self.detail.get("status") or inst.attempts != self.detail.get("attempts")
        ):
            self.detail = instance_detail(inst)

    # -- messages ----------------------------------------------------------------------------------
    def _on_msg(self, widget: Any, content: Any, buffers: Any) -> None:
        self.handle_message(content)

    def handle_message(self, content: Any) -> None:
        """Handle one message from the browser (also callable directly, e.g. in tests)."""
        if not isinstance(content, Mapping):
            return
        handler = self._handlers.get(str(content.get("type")))
        if handler is not None:
            handler(self, content)

    def _msg_detail(self, content: Mapping[str, Any]) -> None:
        uuid = str(content.get("uuid") or "")
        with self._lock:
            inst = self.instance(uuid) if uuid else None
            with self.hold_sync():
                self.selected = uuid
                self.detail = instance_detail(inst) if inst is not None else {}

    def _msg_page(self, content: Mapping[str, Any]) -> None:
        with self._lock:
            group = self._groups.get(str(content.get("node")))
            if group is None:
                return
            try:
                offset = max(0, int(content.get("offset") or 0))
            except (TypeError, ValueError):
                offset = 0
            limit = max(self._pages.get(group, PER_FANOUT), offset) + PAGE_SIZE
            self._pages[group] = limit
            self._bound += 4 * PAGE_SIZE  # room for the page's items and what hangs below them
            self._redraw()

    def _msg_stop(self, content: Mapping[str, Any]) -> None:
        callback = self.stop_callback
        if callback is not None:
            callback()

    def _msg_filter(self, content: Mapping[str, Any]) -> None:
        status = str(content.get("status") or "")
        self.filter = status if status in STATUSES else ""

    def _msg_search(self, content: Mapping[str, Any]) -> None:
        self.search = str(content.get("text") or "")

    _handlers: ClassVar[dict[str, Callable[[RunTree, Mapping[str, Any]], None]]] = {
        "detail": _msg_detail,
        "page": _msg_page,
        "stop": _msg_stop,
        "filter": _msg_filter,
        "search": _msg_search,
    }
