"""Graphviz views of a pipeline (SPEC §6): the static DAG and the expanded run graph.

Pure functions from engine objects to DOT text (built with the ``graphviz`` package, which
needs no program to do so); ``render_svg`` turns DOT into SVG when Graphviz's ``dot`` program
is installed and returns ``None`` otherwise.

The run graph stays small whatever the run's size: each block shows at most ``limit``
instances (failed ones first, then those whose parents are shown, then instance order) and
one counted node for the rest, so the DOT grows with ``limit × blocks``, not with the number
of instances. A reduce is one small node per closed group, between the instances it was
reduced from and the instances that received its value.
"""

from __future__ import annotations

import heapq
import shutil
from collections.abc import Iterable
from typing import Any

import graphviz

from .engine.dag import Block, Pipeline
from .engine.instance import (
    CANCELLED,
    COMPLETED,
    FAILED,
    PENDING,
    RUNNING,
    STATUSES,
    UPSTREAM_FAILED,
    BlockRun,
)
from .engine.record import PipelineRun
from .engine.rows import GroupResult

__all__ = [
    "KIND_FILLS",
    "STATUS_COLORS",
    "STATUS_MARKS",
    "pipeline_dot",
    "render_svg",
    "run_dot",
]

FONT = "Helvetica"
#: Subtle fills per block kind (static DAG).
KIND_FILLS = {
    "loader": "#e3f2fd",
    "transformer": "#f3e5f5",
    "exporter": "#e8f5e9",
    "custom": "#fff8e1",
    "sql": "#e0f2f1",
}
#: (fill, border) per instance status (run graph).
STATUS_COLORS = {
    COMPLETED: ("#c8e6c9", "#2e7d32"),
    FAILED: ("#ffcdd2", "#c62828"),
    UPSTREAM_FAILED: ("#ffe0b2", "#ef6c00"),
    CANCELLED: ("#e0e0e0", "#757575"),
    PENDING: ("#fafafa", "#9e9e9e"),
    RUNNING: ("#e3f2fd", "#1565c0"),
}
STATUS_MARKS = {
    COMPLETED: "✓",
    FAILED: "✗",
    UPSTREAM_FAILED: "⊘",
    CANCELLED: "⊗",
    PENDING: "·",
    RUNNING: "▸",
}
#: Which instances a collapsed block keeps in view first (lower is kept first).
_KEEP_FIRST = {FAILED: 0, UPSTREAM_FAILED: 1, CANCELLED: 1, RUNNING: 2, PENDING: 2, COMPLETED: 3}
_TOOLTIP_MAX = 300


def _esc(text: str) -> str:
    """One line of label text: backslashes kept literal, newlines folded."""
    return str(text).replace("\\", "\\\\").replace("\r", " ").replace("\n", " ")


def _label(*lines: str) -> str:
    """A multi-line label; never read as an HTML label."""
    return graphviz.nohtml("\\n".join(_esc(line) for line in lines))


def _tooltip(text: str) -> str:
    text = text if len(text) <= _TOOLTIP_MAX else text[: _TOOLTIP_MAX - 1] + "…"
    return graphviz.nohtml(_esc(text))


def _reduce_text(strategy: str, policy: str) -> str:
    return f"reduce: {strategy}" + (", partial" if policy == "partial" else "")


# -- the static DAG ---------------------------------------------------------------------------
def _block_attrs(block: Block) -> dict[str, str]:
    spec = block.spec
    lines = [spec.name, spec.kind]
    attrs: dict[str, str] = {
        "shape": "box",
        "style": "rounded,filled",
        "fillcolor": KIND_FILLS.get(spec.kind, "#ffffff"),
    }
    if spec.kind == "sql":
        attrs["shape"] = "cylinder"
        attrs["style"] = "filled"
    if spec.reduce is not None:
        lines.append(f"⇲ {_reduce_text(spec.reduce, spec.reduce_policy)}")
        if spec.kind != "sql":
            attrs["shape"] = "invhouse"
            attrs["style"] = "filled"
    if spec.dynamic:
        lines.append("⇉ dynamic (fan-out)")
        attrs["style"] += ",bold"
        attrs["penwidth"] = "2"
        # A cylinder stays a cylinder: bold and the marker say that it fans out.
        if spec.kind != "sql" and spec.reduce is not None:
            attrs["peripheries"] = "2"  # closes a fan-out, then opens one
        elif spec.kind != "sql":
            attrs["shape"] = "doubleoctagon"
    attrs["label"] = _label(*lines)
    attrs["tooltip"] = _tooltip(spec.header or f"{spec.kind} {spec.name}")
    return attrs


def pipeline_dot(pipeline: Pipeline) -> str:
    """The static DAG, left to right: one node per block, edges upstream -> downstream.

    Edges into a block with several upstreams are labelled with their positional order
    (1, 2, ...). Dynamic blocks are double octagons, bold, marked "fan-out"; reduce blocks are
    inverted houses whose label gives the strategy (and ``partial``); SQL blocks are cylinders.
    """
    dot = graphviz.Digraph(
        "pipeline",
        graph_attr={"rankdir": "LR", "fontname": FONT},
        node_attr={"fontname": FONT, "fontsize": "11", "color": "#546e7a"},
        edge_attr={"fontname": FONT, "fontsize": "9", "color": "#546e7a"},
    )
    for block in pipeline:
        dot.node(block.name, **_block_attrs(block))
    for block in pipeline:
        several = len(block.upstream) > 1
        for position, up in enumerate(block.upstream, start=1):
            attrs: dict[str, str] = {}
            if several:
                attrs["label"] = str(position)
            if pipeline[up].dynamic:
                attrs["arrowhead"] = "crow"  # one -> many
                attrs["penwidth"] = "1.6"
            dot.edge(up, block.name, **attrs)
    return dot.source


# -- the run graph ----------------------------------------------------------------------------
def _counts_line(counts: dict[str, int]) -> str:
    return " ".join(f"{STATUS_MARKS[s]}{counts[s]:,}" for s in STATUSES if counts[s])


def _count(runs: Iterable[BlockRun]) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    for r in runs:
        counts[r.status] = counts.get(r.status, 0) + 1
    return counts


class _RunGraph:
    """Builds the run graph block by block, in topological order."""

    def __init__(self, run: PipelineRun, limit: int):
        self.run = run
        self.limit = max(1, limit)
        self.shown: dict[int, str] = {}  # id(instance) -> node id
        self.shown_uuid: dict[str, str] = {}  # uuid -> node id
        self.more: dict[str, str] = {}  # block -> its collapsed node
        self.groups: dict[int, str] = {}  # id(GroupResult) -> node id
        self.specs: dict[str, Any] = {}  # block -> its BlockSpec (from an instance)
        self.nodes: dict[str, list[tuple[str, dict[str, str]]]] = {}  # block -> its nodes
        self.edges: dict[tuple[str, str], dict[str, str]] = {}
        self.labels: dict[str, str] = {}  # block -> cluster label
        self._n = 0

    def _id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    # -- which instances are drawn ------------------------------------------------------------
    def _origin_drawn(self, origin: Any) -> bool:
        if isinstance(origin, BlockRun):
            return id(origin) in self.shown
        if isinstance(origin, GroupResult):
            if id(origin) in self.groups:
                return True
            members = origin.reduced_from or origin.failed_uuids
            return bool(members) and members[0] in self.shown_uuid
        return True

    def _choose(self, runs: list[BlockRun]) -> list[BlockRun]:
        if len(runs) <= self.limit:
            return runs

        def rank(i: int) -> tuple[int, int, int]:
            r = runs[i]
            drawn = all(self._origin_drawn(o) for o in r.origins or ())
            return (_KEEP_FIRST.get(r.status, 2), 0 if drawn else 1, i)

        keep = sorted(heapq.nsmallest(self.limit, range(len(runs)), key=rank))
        return [runs[i] for i in keep]

    # -- sources of edges ---------------------------------------------------------------------
    def _source(self, origin: Any, *, for_hidden: bool) -> str | None:
        if isinstance(origin, BlockRun):
            return self.shown.get(id(origin)) or self.more.get(origin.block)
        if isinstance(origin, GroupResult):
            node = self.groups.get(id(origin))
            if node is not None:
                return node
            if for_hidden:
                more = self.more.get(origin.uuid.split(":", 1)[0])
                if more is not None:
                    return more
            return self._group(origin)
        return None

    def _edge(self, tail: str, head: str, **attrs: str) -> None:
        self.edges.setdefault((tail, head), attrs)

    def _group(self, group: GroupResult) -> str:
        """The node of one closed group of a reduce, with edges from its members."""
        block = group.uuid.split(":", 1)[0]
        node = self.groups[id(group)] = self._id("g")
        spec = self.specs.get(block)
        strategy = spec.reduce if spec is not None and spec.reduce else "reduce"
        policy = spec.reduce_policy if spec is not None else "all"
        ok, bad = len(group.reduced_from), len(group.failed_uuids)
        counts = f"✓{ok:,}" + (f" ✗{bad:,}" if bad else "")
        if group.error is not None:
            status = FAILED
        elif not group.ok:
            status = UPSTREAM_FAILED
        else:
            status = COMPLETED
        fill, border = STATUS_COLORS[status]
        attrs = {
            "label": _label(_reduce_text(strategy, policy), counts),
            "shape": "invhouse",
            "style": "filled",
            "fontsize": "9",
            "fillcolor": fill,
            "color": border,
            "tooltip": _tooltip(
                group.error.line() if group.error is not None else f"{group.uuid} ({status})"
            ),
        }
        self.nodes.setdefault(block, []).append((node, attrs))
        for uuids, attrs in ((group.reduced_from, {}), (group.failed_uuids, {"style": "dashed"})):
            for uuid in uuids:
                tail = self.shown_uuid.get(uuid) or self.more.get(uuid.split(":", 1)[0])
                if tail is not None:
                    self._edge(tail, node, **attrs)
        return node

    # -- one block ----------------------------------------------------------------------------
    def add_block(self, name: str) -> None:
        runs = list(self.run.instances(name))
        nodes = self.nodes.setdefault(name, [])
        if runs:
            self.specs[name] = runs[0].state.block.spec
        counts = _count(runs)
        self.labels[name] = f"{name}  {len(runs):,}  {_counts_line(counts)}".rstrip()
        if not runs:
            nodes.append(
                (
                    self._id("e"),
                    {"label": "no instances", "shape": "plaintext", "fontcolor": "#757575"},
                )
            )
            return
        shown = self._choose(runs)
        hidden_count = len(runs) - len(shown)
        more = None
        if hidden_count:
            more = self.more[name] = self._id("m")
        for r in shown:
            node = self._id("i")
            self.shown[id(r)] = node
            self.shown_uuid[r.uuid] = node
            fill, border = STATUS_COLORS.get(r.status, STATUS_COLORS[PENDING])
            attrs = {
                "label": _label(r.uuid, f"{STATUS_MARKS.get(r.status, '?')} {r.status}"),
                "fillcolor": fill,
                "color": border,
            }
            if r.reused:
                attrs["style"] = "rounded,filled,dashed"
            if r.error is not None:
                attrs["tooltip"] = _tooltip(r.error.line())
            nodes.append((node, attrs))
        for r in shown:
            head = self.shown[id(r)]
            for origin in r.origins or ():
                tail = self._source(origin, for_hidden=False)
                if tail is not None:
                    self._edge(tail, head)
        if more is None:
            return
        shown_ids = {id(r) for r in shown}
        hidden = [r for r in runs if id(r) not in shown_ids]
        tails: set[str] = set()
        for r in hidden:
            for origin in r.origins or ():
                tail = self._source(origin, for_hidden=True)
                if tail is not None:
                    tails.add(tail)
        for tail in sorted(tails):
            self._edge(tail, more, style="dashed")
        hidden_counts = _count(hidden)
        failures = hidden_counts[FAILED] > 0
        nodes.append(
            (
                more,
                {
                    "label": _label(f"… {hidden_count:,} more  {_counts_line(hidden_counts)}"),
                    "shape": "box3d",
                    "style": "filled,dashed",
                    "fillcolor": "#ffffff",
                    "color": STATUS_COLORS[FAILED][1] if failures else "#757575",
                    "penwidth": "1.5" if failures else "1",
                    "fontcolor": "#424242",
                    "tooltip": _tooltip(f"{hidden_count:,} more instances of {name}"),
                },
            )
        )

    def source(self) -> str:
        dot = graphviz.Digraph(
            "run",
            graph_attr={
                "rankdir": "LR",
                "fontname": FONT,
                "label": _label(f"run {self.run.run_id} {self.run.status}"),
                "labelloc": "t",
            },
            node_attr={
                "fontname": FONT,
                "fontsize": "10",
                "shape": "box",
                "style": "rounded,filled",
            },
            edge_attr={"color": "#78909c", "arrowsize": "0.6"},
        )
        for block in self.run.blocks:
            with dot.subgraph(name=f"cluster_{block}") as sub:
                spec = self.specs.get(block)
                kind = KIND_FILLS.get(spec.kind, "#ffffff") if spec is not None else "#ffffff"
                sub.attr(
                    label=_label(self.labels.get(block, block)),
                    style="rounded,filled",
                    fillcolor=kind,
                    color="#b0bec5",
                    fontsize="11",
                )
                for node, attrs in self.nodes.get(block, ()):
                    sub.node(node, **attrs)
        for (tail, head), attrs in self.edges.items():
            dot.edge(tail, head, **attrs)
        return dot.source


def run_dot(run: PipelineRun, *, limit: int = 20) -> str:
    """The expanded run graph: one node per instance, coloured by status.

    Each block is a cluster labelled with its counts. Edges go from the instances an instance
    was created from; a reduce is a small node per closed group between the instances it
    reduced (dashed edges from those that did not complete) and its consumers. A block with
    more than ``limit`` instances shows ``limit`` of them (failed first) and one node that
    counts the rest ("… 9,980 more  ✓9,970 ✗10").
    """
    graph = _RunGraph(run, limit)
    for block in run.blocks:
        graph.add_block(block)
    return graph.source()


# -- rendering --------------------------------------------------------------------------------
def render_svg(dot_source: str) -> str | None:
    """SVG text for ``dot_source`` via ``dot -Tsvg``; ``None`` when ``dot`` is not installed."""
    if shutil.which("dot") is None:
        return None
    try:
        return graphviz.Source(dot_source).pipe(format="svg", encoding="utf-8")
    except graphviz.ExecutableNotFound:
        return None
