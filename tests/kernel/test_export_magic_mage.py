"""``%pipeline export --to mage`` in a fresh IPython shell: the kernel's blocks and plain cells
become a Mage project that Mage 0.9.80 runs to the outputs the kernel bound."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from IPython.core.interactiveshell import ExecutionResult, InteractiveShell
from IPython.utils.capture import capture_output

Cell = Callable[..., ExecutionResult]

CELLS = [
    "%load_ext mage_nb",
    "import math\nBASE = 10",
    "def label(x):\n    return f'item-{x}'",
    "%%loader numbers --dynamic\n[1, 2, 3]",
    "%%transformer shifted\n{'label': label(numbers), 'value': BASE + numbers}",
    "%%transformer roots --reduce\nround(math.sqrt(shifted['value']), 3)",
    "%%exporter report\n{'n': len(roots), 'total': round(sum(roots), 3)}",
    "report['n']",  # reads a block's output: left out of the prelude, with a warning
]


@pytest.mark.timeout(1800)
def test_kernel_blocks_export_to_a_mage_project_that_mage_runs(
    shell: InteractiveShell, cell: Cell, tmp_path: Path
) -> None:
    from mage_support import drive, failures, mage_venv_python

    for n, source in enumerate(CELLS):
        cell(source, f"c{n}")
    out = tmp_path / "numbers"
    with capture_output() as captured:
        cell(f"%pipeline export --to mage {out}")
    assert f"exported 4 blocks to {out} (mage)" in captured.stdout
    assert "plain cell" in captured.stderr and "reads the output of report" in captured.stderr
    metadata = yaml.safe_load((out / "pipelines" / "numbers" / "metadata.yaml").read_text())
    assert [b["uuid"] for b in metadata["blocks"]] == ["numbers", "shifted", "roots", "report"]

    report = drive(mage_venv_python(), out, "numbers", tmp_path / "mage.json")
    assert report["status"] == "completed", failures(report)
    by_uuid = {r["block_uuid"]: r["outputs"].get("output_0") for r in report["block_runs"]}
    assert by_uuid["report"] == shell.user_ns["report"]
    assert [by_uuid[f"shifted:{i}"] for i in range(3)] == list(shell.user_ns["shifted"])
