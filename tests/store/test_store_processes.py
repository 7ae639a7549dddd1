"""The run store with remote executors: outputs computed in worker processes (or kept on
Dask workers) are stored by the parent, and a resume re-runs only what did not complete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from store_support import executions, mage_nb, notebook, only_run, read_json, results

from mage_nb.store import StoredRun

CELLS = (
    "import pandas as pd\nclass Box:\n    def __init__(self, value):\n        self.value = value",
    "%%loader items --dynamic\nnote(context.uuid)\nlist(range(20))",
    "%%transformer boxed\nnote(context.uuid)\nBox(items * 3)",
    "%%transformer framed --reduce concat\n"
    "note(context.uuid)\n"
    "if items % 5 == 4:\n"
    "    gate(context.uuid)\n"
    "pd.DataFrame({'item': [items], 'value': [boxed.value], 'pid': [os.getpid() > 0]})",
    "%%exporter total\nnote(context.uuid)\n{'rows': len(framed), 'sum': int(framed['value'].sum())}",
)


def test_resume_on_worker_processes(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "nb.ipynb", *CELLS)
    gate = tmp_path / "gate"
    first_log = tmp_path / "first.log"
    args = ("run", nb, "--no-progress", "--executor", "processes", "--max-workers", "2")
    proc = mage_nb(*args, log=first_log, gate=gate)
    assert proc.returncode == 1, proc.stderr
    directory = only_run(tmp_path / ".mage_nb" / "runs")
    assert len(list((directory / "outputs").glob("*.parquet"))) == 16

    gate.touch()
    log, out = tmp_path / "resume.log", tmp_path / "resume.json"
    proc = mage_nb(*args, "--resume", directory.name, "--json", out, log=log, gate=gate)
    assert proc.returncode == 0, proc.stderr
    # The four gated instances (their Box inputs restored: a class defined in the notebook)
    # and the reduce below them; nothing else.
    assert sorted(executions(log)) == [f"framed:{i}" for i in (14, 19, 4, 9)] + ["total"]
    record = read_json(out)
    assert results(record)["total"] == ("completed", {"rows": 20, "sum": 3 * sum(range(20))})

    baseline = tmp_path / "baseline.json"
    proc = mage_nb(*args, "--no-store", "--json", baseline, gate=gate)
    assert proc.returncode == 0, proc.stderr
    ours, theirs = results(record), results(read_json(baseline))
    # Box outputs show as repr() in JSON, with an address: compare everything else.
    assert list(ours) == list(theirs)
    assert {u: v for u, v in ours.items() if not u.startswith("boxed")} == {
        u: v for u, v in theirs.items() if not u.startswith("boxed")
    }


def test_outputs_kept_on_dask_workers_are_fetched_to_be_stored(
    tmp_path: Path, cluster: Any
) -> None:
    """A large output stays on the Dask worker that computed it (the run holds a handle):
    the store fetches the value, so a resume needs neither the cluster nor the handle."""
    gate = tmp_path / "gate"  # Dask workers do not see our environment: its path is in the code
    nb = notebook(
        tmp_path / "nb.ipynb",
        "%%loader big\nnote(context.uuid)\nlist(range(300_000))",  # > 1 MiB: kept on a worker
        "%%transformer small\n"
        "note(context.uuid)\n"
        f"assert os.path.exists({str(gate)!r}), 'the gate is closed'\n"
        "[type(big).__name__, len(big)]",
    )
    args = ("run", nb, "--no-progress", "--executor", "dask", "--address", cluster.address)
    proc = mage_nb(*args, gate=gate)
    assert proc.returncode == 1, proc.stderr
    directory = only_run(tmp_path / ".mage_nb" / "runs")
    stored = StoredRun(directory).get("big")
    assert stored is not None and stored.output == list(range(300_000))

    gate.touch()
    log, out = tmp_path / "resume.log", tmp_path / "resume.json"
    proc = mage_nb(
        "run", nb, "--no-progress", "--resume", directory.name, "--json", out, log=log, gate=gate
    )
    assert proc.returncode == 0, proc.stderr
    assert executions(log) == ["small"]
    assert results(read_json(out))["small"] == ("completed", ["list", 300_000])
