"""The fan-out benchmark still runs end to end (``bench/fanout.py --quick --smoke``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_fanout_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "fanout.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "fanout.py"),
            "--quick",
            "--smoke",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    for expected in ("plain loop", "ThreadPool submit/item", "dask.threaded.get", "mage-nb run"):
        assert expected in proc.stdout
    assert "targets" in proc.stdout
    assert proc.stdout.count("PASS") + proc.stdout.count("FAIL") == 2
    results = json.loads(out.read_text())
    assert results["errors"] == []
    assert {row["case"] for row in results["rows"]} >= {"loop", "threadpool", "dask", "cli"}
