"""The executor benchmark still runs end to end (``bench/executors.py --smoke``): a real Dask
cluster is started and stopped by the benchmark itself."""

from __future__ import annotations

import re
from pathlib import Path

from bench_support import run_bench_json


def test_executors_bench_smoke(tmp_path: Path) -> None:
    stdout, results = run_bench_json("executors.py", tmp_path, "--smoke", timeout=90)
    assert "tiny instances: n = 2,000" in stdout, stdout
    assert "CPU-bound instances: n = 20," in stdout, stdout
    for label in (
        "plain loop",
        "run_notebook threads",
        "run_notebook processes",
        "run_notebook dask",
        "client.map/item + gather",
    ):
        assert label in stdout, stdout
    assert "targets" in stdout
    assert len(re.findall(r"^  (PASS|FAIL)  ", stdout, re.M)) == 3, stdout
    assert "errors / wrong results" not in stdout, stdout
    assert results["errors"] == []
    assert all(row["seconds"] is not None for row in results["tiny"] + results["cpu"])
    assert {row["case"] for row in results["tiny"]} == {
        "tiny_loop",
        "tiny_threads",
        "tiny_processes",
        "tiny_dask",
        "tiny_map",
    }
    assert {row["case"] for row in results["cpu"]} == {
        "cpu_loop",
        "cpu_threads",
        "cpu_processes",
        "cpu_dask",
    }
