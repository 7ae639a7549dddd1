"""The fan-out benchmark still runs end to end (``bench/fanout.py --quick --smoke``)."""

from __future__ import annotations

from pathlib import Path

from bench_support import run_bench_json


def test_fanout_bench_smoke(tmp_path: Path) -> None:
    stdout, results = run_bench_json("fanout.py", tmp_path, "--quick", "--smoke", timeout=60)
    for expected in ("plain loop", "ThreadPool submit/item", "dask.threaded.get", "mage-nb run"):
        assert expected in stdout
    assert "targets" in stdout
    assert stdout.count("PASS") + stdout.count("FAIL") == 2
    assert results["errors"] == []
    assert {row["case"] for row in results["rows"]} >= {"loop", "threadpool", "dask", "cli"}
