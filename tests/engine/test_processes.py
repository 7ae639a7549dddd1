"""The process executor: same results as threads, code shipped once, lost workers recovered."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conformance import CONFORMANCE, comparable
from helpers import write_notebook

import mage_nb


def test_processes_give_the_same_record_as_threads(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "conformance.ipynb", CONFORMANCE)
    threads = mage_nb.run_notebook(nb, params={"day": "mon"}, executor="threads")
    processes = mage_nb.run_notebook(nb, params={"day": "mon"}, executor="processes")
    assert threads.status == processes.status == "failed"  # risky:u3 fails, by design
    assert comparable(processes) == comparable(threads)
    assert processes.block_runs["report"].output[2] == ["after_risky:u3"]
    assert processes.block_runs["fn_style:u2"].output == (2, "fn_style:u2", 0, "mon")
    assert repr(processes.block_runs["boxed:u4"].output) == "Box(4)"  # a prelude class


def test_instances_really_run_in_worker_processes(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "pids.ipynb",
        [
            "import os, time",
            "%%loader items --dynamic\nlist(range(16))",
            "%%transformer where\ntime.sleep(0.25 + 0 * items)\nos.getpid()",
        ],
    )
    run = mage_nb.run_notebook(nb, executor="processes", max_workers=2)
    pids = {r.output for r in run.instances("where")}
    assert run.status == "completed"
    assert len(pids) == 2
    assert mage_nb_pid() not in pids


def mage_nb_pid() -> int:
    import os

    return os.getpid()


def test_a_killed_worker_costs_time_not_instances(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    nb = write_notebook(
        tmp_path / "kill.ipynb",
        [
            f"import os, signal, time\nfrom pathlib import Path\nMARKS = Path({str(marks)!r})",
            "%%loader items --dynamic\nlist(range(12))",
            "%%transformer work\n"
            "if items == 5 and not (MARKS / 'killed').exists():\n"
            "    (MARKS / 'killed').write_text('once')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n"
            "time.sleep(0.05)\n"
            "(MARKS / f'done-{items}-{os.getpid()}').write_text('x')\n"
            "items * 2",
            "%%transformer summed --reduce sum\nwork",
            "%%exporter total\nsummed",
        ],
    )
    run = mage_nb.run_notebook(nb, executor="processes", max_workers=2)
    assert run.status == "completed", [(r.uuid, r.error) for r in run.instances() if r.error]
    assert (marks / "killed").exists()
    assert run.block_runs["total"].output == sum(i * 2 for i in range(12))
    outputs = {r.uuid: r.output for r in run.instances("work")}
    assert outputs == {f"work:{i}": i * 2 for i in range(12)}
    assert all(r.attempts == 1 for r in run.instances("work"))


def test_an_output_that_cannot_travel_back_fails_its_instances_clearly(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "unpicklable.ipynb",
        [
            "import threading",
            "%%loader items --dynamic\n[1, 2]",
            "%%transformer lock\nthreading.Lock()",
            "%%loader fine\n1",
        ],
    )
    run = mage_nb.run_notebook(nb, executor="processes")
    errors = [r.error for r in run.instances("lock")]
    assert all(e is not None and "could not send the results back" in e.message for e in errors)
    assert run.block_runs["fine"].status == "completed"


def test_the_cli_runs_on_processes(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "cli.ipynb",
        ["%%loader items --dynamic\n[1, 2, 3]", "%%transformer t --reduce sum\nitems * 10"],
    )
    out = tmp_path / "run.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mage_nb",
            "run",
            str(nb),
            "--executor",
            "processes",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    assert [r["output"] for r in record["block_runs"] if r["block"] == "t"] == [10, 20, 30]


@pytest.mark.parametrize("name", ["dynamic_users", "fractal_fanout"])
def test_example_notebooks_give_the_same_outputs_on_processes(name: str, root: Path) -> None:
    nb = root / "notebooks" / f"{name}.ipynb"
    threads = mage_nb.run_notebook(nb, executor="threads")
    processes = mage_nb.run_notebook(nb, executor="processes")
    assert comparable(processes) == comparable(threads)


def test_a_generator_streams_here_while_its_children_run_in_processes(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "stream.ipynb",
        [
            "import os",
            "%%loader items --dynamic --window 4\n((i, os.getpid()) for i in range(10))",
            "%%transformer work\n(items[0] * 3, items[1], os.getpid())",
            "%%transformer total --reduce sum\nwork[0]",
            "%%exporter grand\ntotal",
        ],
    )
    run = mage_nb.run_notebook(nb, executor="processes", max_workers=2)
    assert run.status == "completed"
    work = [r.output for r in run.instances("work")]
    assert [w[0] for w in work] == [i * 3 for i in range(10)]
    assert {w[1] for w in work} == {mage_nb_pid()}  # the generator ran in this process
    assert mage_nb_pid() not in {w[2] for w in work}  # its children in worker processes
    assert run.block_runs["grand"].output == sum(i * 3 for i in range(10))


def test_a_block_can_ask_for_its_own_executor(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "mixed.ipynb",
        [
            "import os",
            "%%loader items --dynamic\n[1, 2, 3]",
            "%%transformer here\n(items, os.getpid())",
            "%%transformer there --executor processes\n(items, os.getpid())",
        ],
    )
    run = mage_nb.run_notebook(nb, executor="threads")
    assert run.status == "completed"
    assert {r.output[1] for r in run.instances("here")} == {mage_nb_pid()}
    assert mage_nb_pid() not in {r.output[1] for r in run.instances("there")}
    assert [r.output[0] for r in run.instances("there")] == [1, 2, 3]
