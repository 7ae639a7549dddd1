"""A run store that cannot be written: the disk's error reaches the caller (a run is never
silently left unrecorded), and the run's own row still gets its end."""

from __future__ import annotations

from pathlib import Path

import pytest
from store_support import mage_nb as mage_nb_cli
from store_support import notebook, only_run, run_row

import mage_nb


def _vanishing_store_notebook(tmp_path: Path, runs: Path) -> Path:
    """A block takes the store's outputs folder away mid-run, as a vanished disk would."""
    return notebook(
        tmp_path / "vanishing.ipynb",
        f"import glob, os\nRUNS = {str(runs)!r}",
        "%%loader items --dynamic\nlist(range(6))",
        "%%transformer work\n"
        "if items == 2:\n"
        "    [outputs] = glob.glob(RUNS + '/*/outputs')\n"
        "    os.rename(outputs, outputs + '-gone')\n"
        "    open(outputs, 'w').close()  # a file where the folder was\n"
        "items",
        "%%transformer after\nwork",
    )


@pytest.mark.parametrize("executor", ["sync", "threads"])
def test_a_chunk_that_cannot_be_written_fails_the_run_with_the_disk_error(
    tmp_path: Path, executor: str
) -> None:
    runs = tmp_path / "runs"
    nb = _vanishing_store_notebook(tmp_path, runs)
    with pytest.raises(OSError, match="outputs"):
        mage_nb.run_notebook(nb, store=runs, executor=executor)
    row = run_row(only_run(runs))
    assert row["status"] != "running"
    assert row["ended"] is not None


def test_the_cli_says_the_store_failed_and_exits_1_without_a_traceback(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    nb = _vanishing_store_notebook(tmp_path, runs)
    done = mage_nb_cli("run", nb, "--store", runs, "--no-progress")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith("mage-nb: error:")]
    directory = only_run(runs)
    assert line.startswith(f"mage-nb: error: could not record the run in {directory}: ")
    assert line.endswith("; the run was stopped")
    assert "outputs" in line.split(": ", 2)[2]  # the path that could not be written
    assert run_row(directory)["status"] == "cancelled"
