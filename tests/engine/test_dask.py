"""The Dask executor against a real cluster: a ``dask scheduler`` and two ``dask worker``
processes started on 127.0.0.1 by the fixture and stopped by PID."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conformance import CONFORMANCE, comparable
from dask_cluster import Cluster, _free_port, _wait_for_workers
from helpers import statuses, write_notebook

import mage_nb

pytestmark = pytest.mark.filterwarnings(
    # distributed's own shutdown chatter on a closing client is not ours to fix
    "ignore::DeprecationWarning:distributed",
    "ignore::UserWarning:distributed",
)


def test_a_dask_cluster_gives_the_same_record_as_threads(cluster: Cluster, tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "conformance.ipynb", CONFORMANCE)
    threads = mage_nb.run_notebook(nb, params={"day": "mon"}, executor="threads")
    dask = mage_nb.run_notebook(nb, params={"day": "mon"}, executor="dask", address=cluster.address)
    assert comparable(dask) == comparable(threads)
    assert repr(dask.block_runs["boxed:u4"].output) == "Box(4)"


def test_instances_run_on_the_cluster_workers(cluster: Cluster, tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "where.ipynb",
        [
            "import os, time",
            "%%loader items --dynamic\nlist(range(16))",
            "%%transformer where\ntime.sleep(0.2 + 0 * items)\nos.getpid()",
        ],
    )
    run = mage_nb.run_notebook(nb, executor="dask", address=cluster.address)
    pids = {r.output for r in run.instances("where")}
    assert run.status == "completed"
    assert os.getpid() not in pids
    assert len(pids) == 2


def test_a_batch_keeps_the_gil_in_long_turns_and_gives_the_worker_its_own_back(
    cluster: Cluster, tmp_path: Path
) -> None:
    """CPU-bound blocks on a Dask worker are not cut every 5 ms by its event loop
    (``remote._LongGilTurns``); the worker's own setting is back once the batch ends."""
    from distributed import Client

    from mage_nb.engine import remote

    nb = write_notebook(
        tmp_path / "turns.ipynb",
        [
            "import sys",
            "%%loader items --dynamic\nlist(range(4))",
            "%%transformer turn\nsys.getswitchinterval() + 0 * items",
        ],
    )
    run = mage_nb.run_notebook(nb, executor="dask", address=cluster.address)
    assert run.status == "completed"
    assert [r.output for r in run.instances("turn")] == [
        pytest.approx(remote._LongGilTurns.seconds)
    ] * 4
    default = sys.getswitchinterval()  # Python's, 5 ms
    with Client(cluster.address, set_as_default=False) as client:
        # (polled: a batch abandoned by an earlier test's timeout may still be running)
        deadline = time.monotonic() + 30
        while set(client.run(sys.getswitchinterval).values()) != {default}:
            assert time.monotonic() < deadline, client.run(sys.getswitchinterval)
            time.sleep(0.2)


def test_time_queued_behind_other_work_on_a_shared_cluster_does_not_count_towards_the_timeout(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Another client keeps both workers busy for 2.5 s: the run's timed instances wait that
    long before they start, then run 0.1 s each within their --timeout of 1 s. The clock
    starts when a worker says it started the instance (a Dask event), not at sending."""
    from distributed import Client

    nb = write_notebook(
        tmp_path / "queued.ipynb",
        [
            "import time",
            "%%loader items --dynamic\nlist(range(4))",
            "%%transformer steady --timeout 1\ntime.sleep(0.1)\nitems",
            "%%transformer stuck --timeout 1\nif items == 3:\n    time.sleep(3)\nitems",
        ],
    )
    with Client(cluster.address, set_as_default=False) as other:
        busy = [other.submit(time.sleep, 2.5, pure=False) for _ in range(2)]
        time.sleep(0.3)  # both workers have started theirs
        run = mage_nb.run_notebook(nb, executor="dask", address=cluster.address)
        other.gather(busy)
    assert statuses(run, "steady") == {f"steady:{i}": "completed" for i in range(4)}
    # ...and a deadline still fails an instance that really runs too long
    assert statuses(run, "stuck")["stuck:3"] == "failed"
    assert run.block_runs["stuck:3"].error.type == "TimeoutError"
    assert [statuses(run, "stuck")[f"stuck:{i}"] for i in range(3)] == ["completed"] * 3


def test_long_gil_turns_are_restored_only_when_the_last_batch_leaves() -> None:
    """A worker with several threads runs overlapping batches: the first one out must not
    restore the short turn while another is still running."""
    from mage_nb.engine.remote import _LongGilTurns

    default = sys.getswitchinterval()
    turns = _LongGilTurns()
    turns.__enter__()
    turns.__enter__()  # a second thread's batch starts
    turns.__exit__(None, None, None)  # the first one ends
    assert sys.getswitchinterval() == pytest.approx(turns.seconds)
    turns.__exit__(None, None, None)
    assert sys.getswitchinterval() == default


def test_a_worker_killed_mid_run_loses_no_instance(cluster: Cluster, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    nb = write_notebook(
        tmp_path / "kill.ipynb",
        [
            f"import os, signal, time\nfrom pathlib import Path\nMARKS = Path({str(marks)!r})",
            "%%loader items --dynamic\nlist(range(12))",
            "%%transformer work\n"
            "if items == 4 and not (MARKS / 'killed').exists():\n"
            "    (MARKS / 'killed').write_text(str(os.getpid()))\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n"
            "time.sleep(0.05)\n"
            "items * 2",
            "%%transformer summed --reduce sum\nwork",
            "%%exporter total\nsummed",
        ],
    )
    run = mage_nb.run_notebook(nb, executor="dask", address=cluster.address)
    assert (marks / "killed").exists()
    assert run.status == "completed", [(r.uuid, r.error) for r in run.instances() if r.error]
    assert run.block_runs["total"].output == sum(i * 2 for i in range(12))
    assert all(r.attempts == 1 for r in run.instances("work"))
    cluster.workers.append(cluster.add_worker())  # keep two workers for the tests after
    _wait_for_workers(cluster.address, 2)


def test_an_attempt_restarted_after_its_worker_died_gets_a_new_deadline(
    cluster: Cluster, tmp_path: Path
) -> None:
    """``timed:1`` runs 1 s, then kills its worker; Dask runs it again on the other worker,
    where it takes 0.9 s. That ends ~2 s after the first start, past the first deadline
    (1.5 s) but well within the restarted attempt's own --timeout."""
    marks = tmp_path / "marks"
    marks.mkdir()
    nb = write_notebook(
        tmp_path / "restart.ipynb",
        [
            f"import os, signal, time\nfrom pathlib import Path\nMARKS = Path({str(marks)!r})",
            "%%loader items --dynamic\nlist(range(4))",
            "%%transformer timed --timeout 1.5\n"
            "if items == 1 and not (MARKS / 'killed').exists():\n"
            "    time.sleep(1.0)\n"
            "    (MARKS / 'killed').write_text(str(os.getpid()))\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n"
            "time.sleep(0.9 if items == 1 else 0.05)\n"
            "items",
        ],
    )
    run = mage_nb.run_notebook(nb, executor="dask", address=cluster.address)
    assert (marks / "killed").exists()
    assert statuses(run, "timed") == {f"timed:{i}": "completed" for i in range(4)}
    assert run.block_runs["timed:1"].attempts == 1  # Dask's rerun, not a retry of ours
    cluster.workers.append(cluster.add_worker())  # keep two workers for the tests after
    _wait_for_workers(cluster.address, 2)


def test_an_unreachable_scheduler_is_refused_before_anything_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    nb = write_notebook(
        tmp_path / "nowhere.ipynb",
        [
            f"from pathlib import Path\nPath({str(marker)!r}).write_text('prelude ran')",
            "%%loader a\n1",
        ],
    )
    started = time.monotonic()
    with pytest.raises(mage_nb.PipelineError, match="cannot reach the Dask scheduler"):
        mage_nb.run_notebook(nb, executor="dask", address=f"tcp://127.0.0.1:{_free_port()}")
    assert time.monotonic() - started < 30
    assert not marker.exists()


def test_the_cli_runs_on_a_dask_cluster(cluster: Cluster, tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "cli.ipynb",
        ["%%loader items --dynamic\n[1, 2, 3]", "%%transformer t --reduce sum\nitems * 10"],
    )
    out = tmp_path / "run.json"
    args = ["run", str(nb), "--executor", "dask", "--address", cluster.address, "--json", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "mage_nb", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    assert [r["output"] for r in record["block_runs"] if r["block"] == "t"] == [10, 20, 30]
    bad = subprocess.run(
        [sys.executable, "-m", "mage_nb", "run", str(nb), "--address", cluster.address],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert "--address" in bad.stderr


def test_without_an_address_a_local_cluster_is_started_and_stopped(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "local.ipynb",
        ["import os", "%%loader items --dynamic\n[1, 2]", "%%transformer t\n(items, os.getpid())"],
    )
    run = mage_nb.run_notebook(nb, executor="dask", max_workers=2)
    assert run.status == "completed"
    assert [r.output[0] for r in run.instances("t")] == [1, 2]
    assert os.getpid() not in {r.output[1] for r in run.instances("t")}
