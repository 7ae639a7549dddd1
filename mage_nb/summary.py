"""The end-of-run summary: a compact run tree, one line per block, failures under their block."""

from __future__ import annotations

from typing import Any

from .engine.instance import CANCELLED, COMPLETED, FAILED, UPSTREAM_FAILED
from .engine.record import PipelineRun

_MARKS = ((COMPLETED, "✓"), (FAILED, "✗"), (UPSTREAM_FAILED, "⊘"), (CANCELLED, "⊗"))
#: How many failed instances a block lists before "... and N more".
MAX_LISTED = 5


def _counts_text(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    marks = " ".join(
        f"{mark}{counts[status]}"
        for status, mark in _MARKS
        if counts[status] or status == COMPLETED
    )
    return f"{counts[COMPLETED]}/{total}  {marks}"


def format_summary(run: PipelineRun, depths: dict[str, int] | None = None) -> str:
    """Render the run tree: blocks in topological order, indented by fan-out depth."""
    depths = depths or {}
    totals = run.counts()
    duration = f" in {run.duration:.2f}s" if run.duration is not None else ""
    n = sum(totals.values())
    parts = ", ".join(f"{totals[s]} {s}" for s, _ in _MARKS if totals[s])
    lines = [
        f"run {run.run_id} {run.status}{duration}: {n} instances" + (f" ({parts})" if parts else "")
    ]
    width = max((len(b) + 2 * depths.get(b, 0) for b in run.blocks), default=0) + 2
    for block in run.blocks:
        indent = "  " * depths.get(block, 0)
        counts = run.counts(block)
        lines.append(f"  {indent}{block:<{width - len(indent)}}{_counts_text(counts)}")
        failed = [r for r in run.instances(block) if r.status == FAILED]
        for r in failed[:MAX_LISTED]:
            line = r.error.line() if r.error else ""
            lines.append(f"  {indent}  ✗ {r.uuid}  {line}")
        if len(failed) > MAX_LISTED:
            lines.append(f"  {indent}  … and {len(failed) - MAX_LISTED} more failed")
    for message in run.warnings[:20]:
        lines.append(f"warning: {message}")
    if len(run.warnings) > 20:
        lines.append(f"… and {len(run.warnings) - 20} more warnings (see --json)")
    return "\n".join(lines)


_ICONS = {
    COMPLETED: "✓",
    FAILED: "✗",
    UPSTREAM_FAILED: "⊘",
    CANCELLED: "⊗",
    "pending": "·",
    "running": "▸",
}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 0.00005:
        return "<0.1ms"
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms"
    return f"{seconds:.2f}s"


def format_tree(run: PipelineRun, limit: int = 10) -> str:
    """Render every instance nested as its lineage nests (items under their fan-out).

    At most ``limit`` items are shown per fan-out; the rest are counted.
    """
    instances: dict[tuple[tuple[str, str], ...], list[object]] = {(): []}
    children: dict[tuple[tuple[str, str], ...], list[tuple[tuple[str, str], ...]]] = {(): []}
    for inst in run.instances():
        path = tuple(inst.lineage)
        for depth in range(1, len(path) + 1):
            prefix = path[:depth]
            if prefix not in instances:
                instances[prefix] = []
                children[prefix] = []
                children[prefix[:-1]].append(prefix)
        instances[path].append(inst)
    lines: list[str] = [
        f"run {run.run_id} {run.status}"
        + (f" in {_duration(run.duration)}" if run.duration else "")
    ]

    def render(path: tuple[tuple[str, str], ...], indent: str) -> None:
        kids = list(children[path])
        rows: list[tuple[str, list[tuple[tuple[str, str], ...]]]] = []
        for inst in instances[path]:
            r: Any = inst
            if r.error is not None and r.status != COMPLETED:
                detail = r.error.line()
            else:
                detail = _duration(r.duration)
            owned = [k for k in kids if k[-1][0] == r.block]
            kids = [k for k in kids if k[-1][0] != r.block]
            rows.append((f"{_ICONS.get(r.status, '?')} {r.uuid}  {detail}".rstrip(), owned))
        if kids:
            rows.append(("", kids))
        for i, (text, items) in enumerate(rows):
            last = i == len(rows) - 1
            inner = indent
            if text:
                lines.append(f"{indent}{'└─ ' if last else '├─ '}{text}")
                inner = indent + ("   " if last else "│  ")
            shown = items[:limit]
            for j, child in enumerate(shown):
                final = j == len(shown) - 1 and len(items) <= limit
                lines.append(f"{inner}{'└─ ' if final else '├─ '}◇ {child[-1][1]}")
                render(child, inner + ("   " if final else "│  "))
            if len(items) > limit:
                lines.append(f"{inner}└─ … {len(items) - limit} more items")

    render((), "")
    return "\n".join(lines)
