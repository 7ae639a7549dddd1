"""What the benchmarks share: writing workload notebooks, running a measurement in a fresh
interpreter (so no run sees another's heap or threads), and formatting the tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def write_notebook(path: Path, cells: list[str]) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(nb, str(path))
    return path


def default_workers() -> int:
    """ThreadPoolExecutor's (and mage_nb's) default: min(32, CPUs + 4)."""
    return min(32, (os.cpu_count() or 1) + 4)


def in_subprocess(script: str, kind: str, timeout: float, **kwargs: Any) -> dict[str, Any]:
    """Run ``script --worker`` for one ``worker_*`` measurement; an error is a result, not a crash."""
    spec = json.dumps({"kind": kind, "kwargs": kwargs})
    try:
        proc = subprocess.run(
            [sys.executable, script, "--worker", spec],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"{kind}: timed out after {timeout} s"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"{kind}: exit {proc.returncode}: {tail}"}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def div(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b
