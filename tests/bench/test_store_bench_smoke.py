"""The run-store benchmark still runs end to end (``bench/store.py --smoke``); no timing is
asserted, only that every case measured and the table and verdict were printed."""

from __future__ import annotations

import re
from pathlib import Path

from bench_support import run_bench_json


def test_store_bench_smoke(tmp_path: Path) -> None:
    stdout, results = run_bench_json("store.py", tmp_path, "--smoke", timeout=90)
    assert "run store benchmark — n = 2,000 instances" in stdout, stdout
    for label in (
        "run_notebook, no store",
        "run_notebook, store",
        "run_notebook, resume (all restored)",
        "run_notebook + CLI capture, no store",
        "run_notebook + CLI capture, store",
        "mage-nb run --no-store (raw)",
        "mage-nb run, store (raw)",
        "mage-nb run --resume (raw)",
        "store on disk after the run:",
        "slow instances: sleep(0.001) each, n = 200",
    ):
        assert label in stdout, stdout
    assert "targets" in stdout
    assert len(re.findall(r"^  (PASS|FAIL)  recording the run", stdout, re.M)) == 1, stdout
    assert "errors / wrong results" not in stdout, stdout
    assert results["errors"] == []
    assert all(row["seconds"] is not None for row in results["rows"])
    assert results["store"]["chunks"] >= 1 and results["store"]["bytes"] > 0
    assert results["sleep"]["chunks"] >= 1
