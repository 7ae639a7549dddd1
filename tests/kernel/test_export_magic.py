"""``%pipeline export`` in a fresh IPython shell: the kernel's blocks and plain cells become a
folder that ``mage-nb run`` runs to the outputs the kernel bound."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from IPython.core.interactiveshell import ExecutionResult, InteractiveShell
from IPython.utils.capture import capture_output

Cell = Callable[..., ExecutionResult]
Usage = Callable[..., str]

CELLS = [
    ("%load_ext mage_nb", None),
    ("import math\nBASE = 10", None),
    ("def label(x):\n    return f'item-{x}'", None),
    ("%%loader numbers --dynamic\n[1, 2, 3]", "c-numbers"),
    ("%%transformer shifted\n{'label': label(numbers), 'value': BASE + numbers}", "c-shifted"),
    ("%%transformer roots --reduce\nround(math.sqrt(shifted['value']), 3)", "c-roots"),
    ("%%exporter report\n{'n': len(roots), 'total': round(sum(roots), 3)}", "c-report"),
]


def _build(cell: Cell) -> None:
    for source, cell_id in CELLS:
        cell(source, cell_id)


def _run_folder(folder: Path, record: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONUTF8": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mage_nb",
            "run",
            str(folder),
            "--json",
            str(record),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(record.read_text(encoding="utf-8"))
    return data


def test_export_writes_the_kernels_blocks_and_prelude_and_the_folder_runs_to_the_same_outputs(
    shell: InteractiveShell, cell: Cell, tmp_path: Path
) -> None:
    _build(cell)
    out = tmp_path / "from_kernel"

    with capture_output() as captured:
        cell(f"%pipeline export --to python {out}")

    assert f"exported 4 blocks to {out}" in captured.stdout
    pipeline = tomllib.loads((out / "pipeline.toml").read_text(encoding="utf-8"))
    assert [b["name"] for b in pipeline["blocks"]] == ["numbers", "shifted", "roots", "report"]
    assert pipeline["blocks"][2]["header"] == "%%transformer roots --reduce"
    assert pipeline["blocks"][1]["origin"] == "cell c-shifted"
    prelude = (out / "prelude.py").read_text(encoding="utf-8")
    assert "BASE = 10" in prelude and "def label(x):" in prelude
    assert "%pipeline" not in prelude

    record = _run_folder(out, tmp_path / "run.json")
    outputs = {r["uuid"]: r["output"] for r in record["block_runs"]}
    assert outputs["report"] == shell.user_ns["report"]
    assert [outputs[f"shifted:{i}"] for i in range(3)] == list(shell.user_ns["shifted"])


def test_cells_that_read_block_outputs_are_left_out_of_the_prelude_with_a_warning(
    shell: InteractiveShell, cell: Cell, tmp_path: Path
) -> None:
    _build(cell)
    cell("peek = report['n']")  # looks at a result: cannot run before the pipeline
    out = tmp_path / "peeked"

    with capture_output() as captured:
        cell(f"%pipeline export --to python {out} --name numbers_pipeline")

    assert "reads the output of report" in captured.stderr
    assert "peek" not in (out / "prelude.py").read_text(encoding="utf-8")
    assert tomllib.loads((out / "pipeline.toml").read_text(encoding="utf-8"))["name"] == (
        "numbers_pipeline"
    )
    assert _run_folder(out, tmp_path / "run.json")["status"] == "completed"


def test_export_into_a_non_empty_folder_is_a_usage_error_and_leaves_it_alone(
    cell: Cell, usage_error: Usage, tmp_path: Path
) -> None:
    _build(cell)
    (tmp_path / "keep.txt").write_text("mine", encoding="utf-8")

    message = usage_error(f"%pipeline export --to python {tmp_path}")

    assert "is not empty" in message and "--force" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_export_usage_errors_are_one_clear_line(
    cell: Cell, usage_error: Usage, tmp_path: Path
) -> None:
    assert "no blocks yet" in usage_error(f"%pipeline export --to python {tmp_path / 'a'}")
    _build(cell)
    assert "--to" in usage_error(f"%pipeline export {tmp_path / 'b'}")
    assert "invalid choice" in usage_error(f"%pipeline export --to zip {tmp_path / 'c'}")
    assert list(tmp_path.iterdir()) == []
