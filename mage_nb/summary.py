"""The end-of-run summary: a compact run tree, one line per block, failures under their block."""

from __future__ import annotations

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
