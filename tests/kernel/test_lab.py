"""mage_nb.lab: the kernel side of the JupyterLab extension (state, comm, ``%%mage_nb_lab``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import ExecutionResult, InteractiveShell

from mage_nb import lab
from mage_nb.notebook import is_prelude_cell

Cell = Callable[..., ExecutionResult]
BLOCKS = [
    {"id": "c-users", "source": "%%loader users --dynamic\n[1, 2, 3]"},
    {"id": "c-double", "source": "%%transformer double\nusers * 2"},
    {"id": "c-total", "source": "%%exporter total --reduce sum\ndouble"},
]


def _lab(shell: InteractiveShell, action: str, body: dict[str, Any]) -> ExecutionResult:
    return shell.run_cell(f"%%mage_nb_lab {action}\n{json.dumps(body)}")


class Recorder:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, data: dict[str, Any]) -> None:
        self.sent.append(data)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    recorder = Recorder()
    monkeypatch.setattr(lab, "_CHANNEL", recorder)
    return recorder.sent


def test_sync_registers_the_cells_as_they_are_without_running(
    shell: InteractiveShell, magics: Any, sent: list[dict[str, Any]]
) -> None:
    _lab(shell, "sync", {"cells": BLOCKS}).raise_error()
    state = sent[-1]
    assert [b["name"] for b in state["blocks"]] == ["users", "double", "total"]
    assert [b["upstream"] for b in state["blocks"]] == [[], ["users"], ["double"]]
    assert [b["cell_id"] for b in state["blocks"]] == ["c-users", "c-double", "c-total"]
    assert state["counts"] == {} and state["run"] is None
    assert "users" not in shell.user_ns  # nothing ran


def test_run_publishes_counts_per_block(
    shell: InteractiveShell, magics: Any, sent: list[dict[str, Any]]
) -> None:
    _lab(shell, "run", {"cells": BLOCKS}).raise_error()
    state = sent[-1]
    assert state["run"]["status"] == "completed"
    assert state["counts"] == {
        "users": {"completed": 1},
        "double": {"completed": 3},
        "total": {"completed": 3},  # a reduce runs per item; its downstream gets one value
    }
    assert list(shell.user_ns["double"]) == [2, 4, 6]
    assert state["stale"] == []


def test_a_renamed_or_deleted_cell_is_followed(
    shell: InteractiveShell, magics: Any, sent: list[dict[str, Any]]
) -> None:
    _lab(shell, "run", {"cells": BLOCKS}).raise_error()
    renamed = [BLOCKS[0], {"id": "c-double", "source": "%%transformer twice\nusers * 2"}]
    _lab(shell, "sync", {"cells": renamed}).raise_error()
    assert [b["name"] for b in sent[-1]["blocks"]] == ["users", "twice"]
    assert set(magics.session.blocks) == {"users", "twice"}


def test_a_bad_header_is_one_usage_error_naming_the_cell(
    shell: InteractiveShell, magics: Any, usage_error: Callable[..., str]
) -> None:
    bad = [{"id": "c-x", "source": "%%loader users --retries x\n1"}]
    message = usage_error(f"%%mage_nb_lab sync\n{json.dumps({'cells': bad})}")
    assert "cell c-x" in message and "invalid non-negative integer value: 'x'" in message


def test_export_writes_the_folder(
    shell: InteractiveShell, magics: Any, tmp_path: Path, sent: list[dict[str, Any]]
) -> None:
    out = tmp_path / "with space {x}"
    _lab(shell, "export", {"cells": BLOCKS, "to": "python", "out_dir": str(out)}).raise_error()
    assert (out / "pipeline.toml").is_file()


def test_a_cell_run_publishes_too(
    shell: InteractiveShell, magics: Any, cell: Cell, sent: list[dict[str, Any]]
) -> None:
    cell("%%loader users --dynamic\n[1, 2]", "c-users")
    assert sent[-1]["counts"] == {"users": {"completed": 1}}
    cell("%%transformer later --no-run\nusers", "c-later")
    assert [b["name"] for b in sent[-1]["blocks"]] == ["users", "later"]


def test_state_on_request_and_no_prelude(
    shell: InteractiveShell, magics: Any, sent: list[dict[str, Any]]
) -> None:
    shell.run_cell(
        "(lambda m: m and m.publish_current())(__import__('sys').modules.get('mage_nb.lab'))"
    ).raise_error()
    assert sent and sent[-1]["blocks"] == []
    assert not is_prelude_cell("%%mage_nb_lab run\n{}")


def test_the_comm_outside_a_front_end_is_harmless(shell: InteractiveShell, magics: Any) -> None:
    lab.publish(magics.session)  # a DummyComm, or none: never an error
    state = lab.pipeline_state(magics.session)
    assert json.loads(json.dumps(state)) == state
