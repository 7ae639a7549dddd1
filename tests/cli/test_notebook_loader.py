"""Reading a notebook headless: block cells become blocks, plain cells the prelude (SPEC §3.3, §8)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_cli, touch, write_notebook

from mage_nb import run_notebook
from mage_nb.engine.errors import HeaderError, PipelineError, PreludeError
from mage_nb.notebook import load_notebook

# -- the prelude ---------------------------------------------------------------------------------


def test_plain_cells_run_in_notebook_order_before_blocks_and_blocks_see_their_names(
    tmp_path: Path,
) -> None:
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        [
            "ORDER = ['cell 1']",
            "%%loader first\n(list(ORDER), shout('hi'))",
            "ORDER.append('cell 3')\ndef shout(text):\n    return text.upper() + '!'",
            "# md: a note between cells",
            "ORDER.append('cell 5')\nLIMIT = 3",
            "%%transformer second\n[first[1]] * LIMIT",
        ],
    )
    run = run_notebook(nb, executor="sync")

    assert run.status == "completed", run.to_json()
    order, shouted = run.block_runs["first"].output
    # The plain cell after the block ran before the block did: the prelude comes first.
    assert order == ["cell 1", "cell 3", "cell 5"]
    assert shouted == "HI!"
    assert run.block_runs["second"].output == ["HI!", "HI!", "HI!"]


def test_a_plain_cell_tagged_skip_is_left_out(tmp_path: Path) -> None:
    marker = tmp_path / "skipped-cell-ran"
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        [
            "VALUE = 'kept'",
            (f"{touch(marker)}\nVALUE = 'from the skipped cell'", ["skip"]),
            "%%loader value\nVALUE",
        ],
    )
    loaded = load_notebook(nb)
    run = run_notebook(nb, executor="sync")

    assert [cell.number for cell in loaded.prelude] == [1]
    assert not marker.exists()
    assert run.status == "completed"
    assert run.block_runs["value"].output == "kept"


def test_a_skip_tag_among_other_tags_still_skips(tmp_path: Path) -> None:
    marker = tmp_path / "skipped-cell-ran"
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        [(touch(marker), ["parameters", "skip"]), "%%loader one\n1"],
    )
    run = run_notebook(nb, executor="sync")

    assert run.status == "completed"
    assert not marker.exists()


def test_markdown_cells_are_ignored_even_when_they_look_like_code(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        [
            "# md: %%block loader not_a_block --dynamic\nraise SystemExit('markdown ran')",
            "%%loader real\n'ok'",
            "# md: ## Notes\n1/0 is *not* code here",
        ],
    )
    loaded = load_notebook(nb)
    run = run_notebook(nb, executor="sync")

    assert [spec.name for spec in loaded.specs] == ["real"]
    assert loaded.prelude == []
    assert run.status == "completed"
    assert list(run.block_runs) == ["real"]
    assert run.warnings == []


# -- IPython syntax in plain cells ---------------------------------------------------------------


def test_load_ext_mage_nb_and_pipeline_magics_are_skipped_silently(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        [
            "%load_ext mage_nb\nimport math",
            "%%loader root\nmath.sqrt(16)",
            "%pipeline run\n%pipeline status\nAFTER_PIPELINE = True",
            "%%transformer check\n(root, AFTER_PIPELINE)",
        ],
    )
    run = run_notebook(nb, executor="sync")

    assert run.status == "completed", run.to_json()
    assert run.block_runs["check"].output == (4.0, True)
    assert run.warnings == []


def test_line_magics_are_skipped_with_a_warning_naming_the_cell(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        [
            "# md: title",
            "%matplotlib inline\nAFTER_MAGIC = 'rest of the cell ran'",
            "%%loader check\nAFTER_MAGIC",
        ],
    )
    run = run_notebook(nb, executor="sync")

    assert run.status == "completed"
    assert run.block_runs["check"].output == "rest of the cell ran"
    [warning] = run.warnings
    assert "cell 2" in warning
    assert "%matplotlib" in warning


def test_a_cell_magic_is_skipped_with_a_warning_naming_the_cell(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        [
            "import time",
            "%%time\nTIMED = 1",
            "%%loader check\ntime.time() > 0",
        ],
    )
    run = run_notebook(nb, executor="sync")

    assert run.status == "completed"
    assert run.block_runs["check"].output is True
    [warning] = run.warnings
    assert "cell 2" in warning
    assert "%%time" in warning


def test_load_ext_of_another_extension_is_not_silent(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "nb.ipynb", ["%load_ext autoreload", "%%loader one\n1"])
    run = run_notebook(nb, executor="sync")

    assert run.status == "completed"
    assert len(run.warnings) == 1
    assert "cell 1" in run.warnings[0]
    assert "%load_ext" in run.warnings[0]


def test_bang_command_runs_in_a_shell(tmp_path: Path) -> None:
    out = tmp_path / "shell-output.txt"
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        [f"!echo hi > '{out}'", "%%loader one\n1"],
    )
    run = run_notebook(nb, executor="sync")

    assert run.status == "completed"
    assert out.read_text().strip() == "hi"
    assert run.warnings == []


def test_assigning_a_bang_command_gives_its_output_lines_as_a_list(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        [
            "x = !echo hi\nlines = !printf 'a\\nb\\n'",
            "%%loader captured\n(isinstance(x, list), list(x), list(lines))",
        ],
    )
    run = run_notebook(nb, executor="sync")

    assert run.status == "completed", run.to_json()
    assert run.block_runs["captured"].output == (True, ["hi"], ["a", "b"])


# -- a prelude that raises -----------------------------------------------------------------------


def prelude_failure_notebook(tmp_path: Path) -> tuple[Path, Path, Path]:
    block_marker = tmp_path / "block-ran"
    later_marker = tmp_path / "later-prelude-cell-ran"
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        [
            "import os",
            "# md: the next cell is broken",
            "def helper():\n    return {}['missing_key']\n\nhelper()",
            touch(later_marker),
            f"%%loader side_effect\n{touch(block_marker)}",
        ],
    )
    return nb, block_marker, later_marker


def test_a_raising_prelude_cell_raises_prelude_error_and_nothing_runs(tmp_path: Path) -> None:
    nb, block_marker, later_marker = prelude_failure_notebook(tmp_path)

    with pytest.raises(PreludeError) as caught:
        run_notebook(nb, executor="sync")

    message = str(caught.value)
    assert "cell 3" in message
    assert "KeyError" in message
    assert isinstance(caught.value, PipelineError)
    assert not block_marker.exists()
    assert not later_marker.exists()


def test_a_raising_prelude_cell_exits_2_with_its_traceback_on_stderr(tmp_path: Path) -> None:
    nb, block_marker, later_marker = prelude_failure_notebook(tmp_path)
    record = tmp_path / "run.json"

    done = run_cli("run", nb, "--json", record)

    assert done.returncode == 2, done.stderr
    assert "cell 3" in done.stderr
    assert "Traceback" in done.stderr
    assert "KeyError: 'missing_key'" in done.stderr
    # The traceback shows the cell's own code: the failing helper and its call.
    assert "helper()" in done.stderr
    assert "['missing_key']" in done.stderr
    assert not record.exists()
    assert not block_marker.exists()
    assert not later_marker.exists()


def test_a_prelude_cell_that_does_not_compile_is_a_prelude_error_naming_it(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "block-ran"
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        ["x = 1", "def broken(:\n    pass", f"%%loader side_effect\n{touch(marker)}"],
    )

    with pytest.raises(PreludeError, match="cell 2"):
        run_notebook(nb, executor="sync")
    assert not marker.exists()


# -- headers -------------------------------------------------------------------------------------


def test_a_header_error_names_the_cell(tmp_path: Path) -> None:
    marker = tmp_path / "block-ran"
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        [
            "import os",
            f"%%loader good\n{touch(marker)}",
            "%%transformer bad --retries many\ngood",
        ],
    )

    with pytest.raises(HeaderError) as caught:
        load_notebook(nb)
    assert "cell 3" in str(caught.value)
    assert "--retries" in str(caught.value)

    with pytest.raises(HeaderError, match="cell 3"):
        run_notebook(nb, executor="sync")
    assert not marker.exists()


def test_an_unknown_block_kind_names_the_cell(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "nb.ipynb", ["# md: intro", "%%block loaderr users\n[1]"])

    with pytest.raises(HeaderError) as caught:
        load_notebook(nb)
    assert "cell 2" in str(caught.value)
    assert "loaderr" in str(caught.value)


def test_block_cells_keep_their_notebook_position_as_origin(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        ["# md: intro", "import os", "%%loader a\n1", "%%block transformer b --dynamic\n[a]"],
    )
    loaded = load_notebook(nb)

    assert [(s.name, s.kind, s.dynamic, s.origin) for s in loaded.specs] == [
        ("a", "loader", False, "cell 3"),
        ("b", "transformer", True, "cell 4"),
    ]
    assert [(c.number, c.source) for c in loaded.prelude] == [(2, "import os")]


def test_a_no_run_block_still_runs_headless(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "no_run.ipynb",
        ["%%loader items --dynamic --no-run\n[1, 2]", "%%transformer t --no-run\nitems * 5"],
    )
    run = run_notebook(nb, executor="sync")
    assert run.status == "completed"
    assert [r.output for r in run.instances("t")] == [5, 10]
