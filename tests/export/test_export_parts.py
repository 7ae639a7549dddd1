"""The export's parts on their own: the TOML writer, the staging folder, the prelude module."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest

from mage_nb.export import ExportError
from mage_nb.export.folder import staged_folder
from mage_nb.export.prelude import prelude_module, reads_block_outputs
from mage_nb.export.toml import dumps
from mage_nb.notebook import PreludeCell


# -- TOML ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        'x"y',
        "back\\slash",
        "tab\there",
        "line\nbreak\r",
        "\x00\x01\x1f\x7f",
        "%%block sql q --connection 'postgresql://u:p@h/db?x=1#frag'",
        "ünïcødé ✓ 🐍",
        "''' \"\"\" {{ }} [[blocks]]",
    ],
)
def test_any_string_reads_back_as_written(text: str) -> None:
    data = {"header": text, "blocks": [{"header": text}]}

    assert tomllib.loads(dumps(data)) == data


def test_numbers_booleans_and_lists_read_back_with_their_types() -> None:
    data = {"i": 3, "f": 0.05, "tiny": 1e-5, "whole": 2.0, "big": math.inf, "b": False, "l": []}

    back = tomllib.loads(dumps(data))

    assert back == data
    assert type(back["whole"]) is float and type(back["i"]) is int


def test_an_unwritable_value_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="cannot write"):
        dumps({"x": object()})


def test_the_comment_opens_the_file() -> None:
    text = dumps({"a": 1}, comment="first\n\nsecond")

    assert text.startswith("# first\n#\n# second\n\na = 1\n")


# -- the staging folder -------------------------------------------------------------------------
def test_a_failed_export_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "out"

    with pytest.raises(RuntimeError), staged_folder(target) as staging:
        (staging / "half.txt").write_text("half")
        raise RuntimeError("the exporter broke")

    assert list(tmp_path.iterdir()) == []  # neither OUT_DIR nor the parent made for it


def test_a_failed_forced_export_leaves_the_folder_as_it_was(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "prelude.py").write_text("old")

    with pytest.raises(RuntimeError), staged_folder(tmp_path / "out", force=True) as staging:
        (staging / "prelude.py").write_text("new")
        raise RuntimeError("the exporter broke")

    assert (tmp_path / "out" / "prelude.py").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_the_staging_folder_is_empty_and_named_like_out_dir(tmp_path: Path) -> None:
    with staged_folder(tmp_path / "project") as staging:
        assert staging.name == "project" and list(staging.iterdir()) == []
        (staging / "sub").mkdir()
        (staging / "sub" / "f.txt").write_text("x")

    assert (tmp_path / "project" / "sub" / "f.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]


def test_a_file_in_the_way_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("a file")

    with pytest.raises(ExportError, match="is not a folder"), staged_folder(tmp_path / "out"):
        pass


# -- the prelude --------------------------------------------------------------------------------
def test_a_dropped_magic_inside_a_block_statement_becomes_pass() -> None:
    text, warnings = prelude_module([PreludeCell(4, "if True:\n    %time 1\nx = 1")], intro="intro")

    assert "if True:\n    pass  # dropped: %time 1" in text
    compile(text, "prelude.py", "exec")
    assert warnings == ["cell 4: dropped %time (IPython magic, needs a kernel)"]


def test_a_future_import_below_the_first_cell_is_refused() -> None:
    cells = [PreludeCell(1, "import os"), PreludeCell(2, "from __future__ import annotations")]

    with pytest.raises(ExportError, match="from __future__"):
        prelude_module(cells, intro="intro")


def test_reads_of_block_outputs_count_only_when_the_cell_runs_them() -> None:
    blocks = ["users", "report"]

    assert reads_block_outputs("report['n']", blocks) == ["report"]
    assert reads_block_outputs("print(users, report)", blocks) == ["users", "report"]
    assert reads_block_outputs("def f():\n    return users", blocks) == []
    assert reads_block_outputs("users = []\nusers.append(1)", blocks) == []
    assert reads_block_outputs("lambda: report", blocks) == []
