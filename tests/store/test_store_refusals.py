"""``--resume`` refuses (exit 2, one clear line, nothing run, the store untouched) when the
stored results could be wrong now, or the command makes no sense; a change to a block that
had no completed instance — fixing the one that failed — is allowed and takes effect."""

from __future__ import annotations

from pathlib import Path

import pytest
from store_support import (
    completed,
    executions,
    mage_nb,
    notebook,
    only_run,
    read_json,
    results,
    run_row,
    snapshot,
)

from mage_nb import run_notebook
from mage_nb.engine.errors import PipelineError

PLAIN = "note('prelude')"  # plain cells run before any block: a refusal comes first
LOADER = "%%loader items --dynamic\nnote(context.uuid)\nlist(range(5))"
WORK = "%%transformer work --reduce sum\nnote(context.uuid)\nitems * 10"
BROKEN = "%%exporter report\nnote(context.uuid)\nraise ValueError('report is broken')"
FIXED = "%%exporter report\nnote(context.uuid)\n{'total': work}"


@pytest.fixture
def failed_run(tmp_path: Path) -> tuple[Path, Path]:
    """A stored run in which items and work completed and report failed."""
    nb = notebook(tmp_path / "nb.ipynb", PLAIN, LOADER, WORK, BROKEN)
    proc = mage_nb("run", nb, "--no-progress")
    assert proc.returncode == 1, proc.stderr
    directory = only_run(tmp_path / ".mage_nb" / "runs")
    assert f"--resume {directory.name}" in proc.stderr  # the way on is printed
    assert "report" not in completed(directory) and "work:4" in completed(directory)
    return nb, directory


def refused(nb: Path, directory: Path, *args: object) -> str:
    """Resume with ``args``: assert the refusal; its message."""
    before = snapshot(directory)
    log = nb.parent / "refused.log"
    proc = mage_nb("run", nb, "--no-progress", *args, log=log)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    [message] = proc.stderr.strip().splitlines()
    assert message.startswith("mage-nb: error: ")
    assert executions(log) == []  # nothing ran, not even the plain cells
    assert snapshot(directory) == before
    return message


@pytest.mark.parametrize(
    ("cells", "named"),
    [
        ((LOADER, WORK.replace("items * 10", "items * 11"), BROKEN), ["work"]),
        # a header option counts as a change as well
        ((LOADER, WORK.replace("--reduce sum", "--reduce sum --retries 2"), BROKEN), ["work"]),
        # upstream changed: what was computed from it is invalid too
        ((LOADER.replace("range(5)", "range(6)"), WORK, BROKEN), ["items", "work"]),
    ],
    ids=["body", "header", "upstream"],
)
def test_changed_block_with_completed_instances_is_refused(
    failed_run: tuple[Path, Path], cells: tuple[str, ...], named: list[str]
) -> None:
    nb, directory = failed_run
    notebook(nb, PLAIN, *cells)
    message = refused(nb, directory, "--resume", directory.name)
    assert f"cannot resume run {directory.name!r}" in message
    assert f"block(s) {', '.join(named)} changed" in message
    assert "start a new run" in message


def test_other_params_are_refused(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "nb.ipynb", PLAIN, LOADER, WORK, BROKEN)
    assert mage_nb("run", nb, "--no-progress", "--param", "day=mon").returncode == 1
    directory = only_run(tmp_path / ".mage_nb" / "runs")
    for params in (["--param", "day=tue"], ["--param", "day=mon", "--param", "x=1"]):
        message = refused(nb, directory, "--resume", directory.name, *params)
        assert "with other parameters" in message and "'day': 'mon'" in message
        assert "resume without --param" in message


def test_unknown_run_id_is_refused(failed_run: tuple[Path, Path]) -> None:
    nb, directory = failed_run
    message = refused(nb, directory, "--resume", "20990101-000000-abcdef")
    assert "no stored run '20990101-000000-abcdef'" in message
    assert "mage-nb runs" in message


def test_no_store_with_resume_is_refused(failed_run: tuple[Path, Path]) -> None:
    nb, directory = failed_run
    message = refused(nb, directory, "--no-store", "--resume", directory.name)
    assert "--no-store contradicts" in message


def test_fixing_the_block_that_failed_is_allowed_and_takes_effect(
    failed_run: tuple[Path, Path], tmp_path: Path
) -> None:
    nb, directory = failed_run
    added = "%%exporter extra\nnote(context.uuid)\nwork + 1"  # a new block: allowed too
    notebook(nb, PLAIN, LOADER, WORK, FIXED, added)
    log = tmp_path / "resume.log"
    out = tmp_path / "resume.json"
    proc = mage_nb("run", nb, "--no-progress", "--resume", directory.name, "--json", out, log=log)
    assert proc.returncode == 0, proc.stderr
    # the fix and the new block ran; what completed was reused
    assert sorted(executions(log)) == ["extra", "prelude", "report"]
    assert results(read_json(out))["report"] == ("completed", {"total": 100})
    assert results(read_json(out))["extra"] == ("completed", 101)
    row = run_row(directory)
    assert (row["status"], row["resumes"]) == ("completed", 1)
    listing = mage_nb("runs", nb).stdout
    assert "(resumed 1x)" in listing and "completed=8" in listing


def test_same_params_again_are_allowed(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "nb.ipynb", PLAIN, LOADER, WORK, BROKEN)
    assert mage_nb("run", nb, "--no-progress", "--param", "day=mon").returncode == 1
    directory = only_run(tmp_path / ".mage_nb" / "runs")
    notebook(nb, PLAIN, LOADER, WORK, FIXED)
    log = tmp_path / "resume.log"
    proc = mage_nb(
        "run", nb, "--no-progress", "--resume", directory.name, "--param", "day=mon", log=log
    )
    assert proc.returncode == 0, proc.stderr
    assert executions(log) == ["prelude", "report"]


def test_run_notebook_refuses_resume_without_the_store(failed_run: tuple[Path, Path]) -> None:
    nb, directory = failed_run
    before = snapshot(directory)
    with pytest.raises(PipelineError, match="store=False contradicts resume"):
        run_notebook(nb, store=False, resume=directory.name)
    assert snapshot(directory) == before
    assert not (Path.cwd() / "False").exists()
