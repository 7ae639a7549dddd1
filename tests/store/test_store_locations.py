"""Where runs are recorded: beside the notebook by default (whatever the working directory),
under ``--store DIR`` when given, nowhere with ``--no-store``; ``mage-nb runs`` lists them."""

from __future__ import annotations

from pathlib import Path

from store_support import executions, mage_nb, notebook, only_run, run_dirs, snapshot

CELLS = (
    "%%loader items --dynamic\nnote(context.uuid)\n[1, 2, 3]",
    "%%transformer work --reduce sum\nnote(context.uuid)\ngate(context.uuid)\nitems * 2",
)


def everything_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if ".mage_nb" in p.parts)


def test_default_store_is_beside_the_notebook(tmp_path: Path) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    nb = notebook(project / "nb.ipynb", *CELLS)
    proc = mage_nb("run", "../project/nb.ipynb", "--no-progress", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    directory = only_run(project / ".mage_nb" / "runs")
    assert (directory / "record.sqlite").is_file()
    assert any((directory / "outputs").glob("chunk-*.pkl"))
    assert everything_under(elsewhere) == []
    assert f"run {directory.name} completed" in proc.stdout  # the stored run's id is the run's
    # `mage-nb runs` finds it from the notebook, its folder, or inside the folder.
    for args, cwd in (([nb], None), ([project], None), ([], project)):
        listing = mage_nb("runs", *args, cwd=cwd)
        assert listing.returncode == 0, listing.stderr
        assert listing.stdout.splitlines()[0].split() == [
            "RUN_ID",
            "STATUS",
            "STARTED",
            "DURATION",
            "INSTANCES",
            "NOTEBOOK",
        ]
        [row] = listing.stdout.splitlines()[1:]
        assert row.split()[:2] == [directory.name, "completed"]
        assert "completed=4" in row and row.endswith(str(nb.resolve()))
    assert mage_nb("runs", elsewhere).stdout.startswith("no stored runs in")


def test_store_dir_holds_the_runs_and_resume_needs_it(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "nb.ipynb", *CELLS)
    store = tmp_path / "somewhere" / "runs"
    gate = tmp_path / "gate"
    proc = mage_nb("run", nb, "--no-progress", "--store", store, gate=gate)
    assert proc.returncode == 1, proc.stderr
    directory = only_run(store)
    assert not (tmp_path / ".mage_nb").exists()
    # The hint to continue names the store as well: copied as printed, it works.
    hint = f"`mage-nb run {nb} --store {store} --resume {directory.name}`"
    assert hint in proc.stderr, proc.stderr

    listing = mage_nb("runs", "--store", store)
    assert directory.name in listing.stdout and " failed " in listing.stdout
    assert mage_nb("runs", nb).stdout.startswith("no stored runs in")

    refused = mage_nb("run", nb, "--no-progress", "--resume", directory.name)
    assert refused.returncode == 2 and "no stored run" in refused.stderr

    gate.touch()
    log = tmp_path / "resume.log"
    args = ("run", nb, "--no-progress", "--store", store, "--resume", directory.name)
    proc = mage_nb(*args, log=log, gate=gate)
    assert proc.returncode == 0, proc.stderr
    assert sorted(executions(log)) == ["work:0", "work:1", "work:2"]
    assert "(resumed 1x)" in mage_nb("runs", "--store", store).stdout


def test_no_store_writes_nothing(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "nb.ipynb", *CELLS)
    proc = mage_nb("run", nb, "--no-progress", "--no-store", "--json", "run.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert everything_under(tmp_path) == []
    assert "--resume" not in proc.stderr
    assert mage_nb("runs", nb).stdout.startswith("no stored runs in")
    # and a failed run says nothing about resuming a run that was not stored
    proc = mage_nb("run", nb, "--no-progress", "--no-store", gate=tmp_path / "gate")
    assert proc.returncode == 1
    assert "--resume" not in proc.stderr
    assert everything_under(tmp_path) == []


def test_an_exported_folder_keeps_its_runs_inside(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "nb.ipynb", *CELLS)
    folder = tmp_path / "exported"
    assert mage_nb("export", nb, "--to", "python", folder).returncode == 0
    proc = mage_nb("run", folder, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert len(run_dirs(folder / ".mage_nb" / "runs")) == 1
    assert not (tmp_path / ".mage_nb").exists()
    assert len(mage_nb("runs", folder).stdout.splitlines()) == 2


def test_a_notebook_refused_before_it_runs_leaves_no_run(tmp_path: Path) -> None:
    """Exit 2 means nothing ran: nothing is recorded either (no empty run directory for
    `mage-nb runs` to trip over)."""
    for name, cells in (
        ("prelude.ipynb", ("raise ValueError('broken prelude')", *CELLS)),
        ("reduce.ipynb", (CELLS[0], "%%transformer work --reduce no_such_function\nitems")),
    ):
        proc = mage_nb("run", notebook(tmp_path / name, *cells), "--no-progress")
        assert proc.returncode == 2, proc.stderr
    assert everything_under(tmp_path) == []
    listing = mage_nb("runs", tmp_path)
    assert listing.stdout.startswith("no stored runs in") and listing.stderr == ""


def test_a_resume_refused_by_its_prelude_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "nb.ipynb", *CELLS)
    assert mage_nb("run", nb, "--no-progress", gate=tmp_path / "gate").returncode == 1
    directory = only_run(tmp_path / ".mage_nb" / "runs")
    before = snapshot(directory)
    notebook(nb, "raise ValueError('broken prelude')", *CELLS)
    proc = mage_nb("run", nb, "--no-progress", "--resume", directory.name)
    assert proc.returncode == 2 and "broken prelude" in proc.stderr
    assert snapshot(directory) == before
