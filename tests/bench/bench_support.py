"""What the benchmark smoke tests share: running a ``bench/`` script the way its docstring
says, from the repository root, in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_bench(script: str, *args: str, timeout: float) -> str:
    """``python bench/SCRIPT ARGS``; its stdout, once it has exited 0."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def run_bench_json(
    script: str, tmp_path: Path, *args: str, timeout: float
) -> tuple[str, dict[str, Any]]:
    """The same with ``--json OUT``: its stdout and the results it saved."""
    out = tmp_path / f"{Path(script).stem}.json"
    stdout = run_bench(script, *args, "--json", str(out), timeout=timeout)
    return stdout, json.loads(out.read_text())
