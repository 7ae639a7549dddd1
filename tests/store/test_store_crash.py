"""Crash safety: ``mage-nb run`` killed with SIGKILL in the middle of a 1,000-instance
fan-out, then ``--resume``: nothing the store had as completed runs again, every instance
ends completed, and the outputs are those of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from store_support import (
    completed,
    env,
    executions,
    mage_nb,
    notebook,
    only_run,
    read_json,
    results,
)

from mage_nb.store import StoredRun

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")

N = 1000
FANOUT = (
    "%%loader items --dynamic\nlist(range(1000))",
    "%%transformer work --reduce sum\nnote(context.uuid)\ntime.sleep(0.004)\nitems * 2 + 1",
    "%%exporter total\nnote(context.uuid)\nwork",
)


def kill_midway(nb: Path, log: Path, low: int = 300, high: int = 600) -> int:
    """Start a stored run, SIGKILL it once ``low`` executions are logged; the count then."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mage_nb", "run", str(nb), "--no-progress", "--max-workers", "4"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env(log),
    )
    deadline = time.monotonic() + 30
    try:
        while len(executions(log)) < low:
            assert proc.poll() is None, f"the run ended before it was killed: {proc.stderr}"
            assert time.monotonic() < deadline, "the run did not get going"
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        assert proc.stderr is not None
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    count = len(executions(log))
    assert low <= count <= high, f"killed after {count} executions: not in the middle"
    return count


def test_sigkill_midway_then_resume_runs_only_what_did_not_complete(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "fan.ipynb", *FANOUT)
    log = tmp_path / "killed.log"
    kill_midway(nb, log)

    directory = only_run(tmp_path / ".mage_nb" / "runs")
    stored = StoredRun(directory)
    assert stored.status == "running"  # killed: it never got to record an end
    assert stored.ended is None
    done = completed(directory)
    done_work = {uuid for uuid in done if uuid.startswith("work:")}
    assert "items" in done and "total" not in done
    assert 0 < len(done_work) < N
    # The store only has as completed what really ran before the kill.
    assert done_work <= set(executions(log))

    resumed_log = tmp_path / "resumed.log"
    out = tmp_path / "resumed.json"
    proc = mage_nb(
        "run", nb, "--no-progress", "--resume", directory.name, "--json", out, log=resumed_log
    )
    assert proc.returncode == 0, proc.stderr
    again = executions(resumed_log)
    assert not set(again) & done, sorted(set(again) & done)[:10]
    assert len(again) == len(set(again))  # and nothing ran twice within the resume
    # What did not complete ran (the instances the kill interrupted may run once more: the
    # store never had them).
    assert set(again) == {f"work:{i}" for i in range(N)} - done_work | {"total"}

    record = read_json(out)
    assert record["status"] == "completed"
    assert record["run_id"] == directory.name
    assert len(record["block_runs"]) == N + 2
    assert {status for status, _ in results(record).values()} == {"completed"}
    assert results(record)["total"][1] == sum(i * 2 + 1 for i in range(N))

    baseline = tmp_path / "baseline.json"
    proc = mage_nb("run", nb, "--no-progress", "--no-store", "--json", baseline)
    assert proc.returncode == 0, proc.stderr
    assert results(record) == results(read_json(baseline))
    assert list(results(record)) == list(results(read_json(baseline)))  # same order too

    stored = StoredRun(directory)
    assert (stored.status, stored.resumes) == ("completed", 1)
    assert stored.counts() == {"completed": N + 2}
    listing = mage_nb("runs", nb)
    assert listing.returncode == 0, listing.stderr
    [line] = [line for line in listing.stdout.splitlines() if directory.name in line]
    assert " completed " in line
    assert f"completed={N + 2} (resumed 1x)" in line
