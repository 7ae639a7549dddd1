"""Smoke test of tests/mage_driver.py: a hand-written Mage project run by Mage 0.9.80 itself,
through its block-run scheduler, so that dynamic blocks fan out and reduce as on Mage's server.

The first run builds the Mage virtualenv (scripts/mage-venv.sh, a minute or two from PyPI);
later runs find it ready.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from mage_support import mage_venv_python

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "mage_project"
DRIVER = ROOT / "tests" / "mage_driver.py"


@pytest.fixture(scope="module")
def mage_python() -> Path:
    return mage_venv_python()


def drive(
    python: Path, project: Path, out: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), str(DRIVER), str(project), "demo", str(out), "--timeout", str(timeout)],
        capture_output=True,
        text=True,
        timeout=timeout + 120,
        env={k: v for k, v in os.environ.items() if not k.startswith("MAGE_")},
    )


@pytest.fixture(scope="module")
def run(mage_python: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    project = tmp_path_factory.mktemp("mage") / "mage_project"
    shutil.copytree(FIXTURE, project)
    out = project.parent / "out.json"
    done = drive(mage_python, project, out)
    assert done.returncode == 0, done.stderr[-5000:]
    report: dict[str, Any] = json.loads(out.read_text())
    report["project"] = project
    return report


@pytest.mark.timeout(1800)
def test_pipeline_run_completes_through_block_runs(run: dict[str, Any]) -> None:
    assert run["status"] == "completed"
    assert not run["timed_out"]
    assert sorted(r["block_uuid"] for r in run["block_runs"]) == sorted(
        [
            "users",
            "double",
            "double:u1",
            "double:u2",
            "double:u3",
            "label",
            "label:0",
            "label:1",
            "label:2",
            "collect",
            "scores",
            "total",
        ]
    )
    assert {r["status"] for r in run["block_runs"]} == {"completed"}


@pytest.mark.timeout(1800)
def test_outputs_of_every_block_run(run: dict[str, Any]) -> None:
    by_uuid = {r["block_uuid"]: r for r in run["block_runs"]}
    outputs = {uuid: r["outputs"] for uuid, r in by_uuid.items()}
    users = [{"id": 1}, {"id": 2}, {"id": 3}]
    labelled = [
        {"id": 2, "label": "user-2"},
        {"id": 4, "label": "user-4"},
        {"id": 6, "label": "user-6"},
    ]
    assert outputs == {
        # The dynamic block: its items and, as a second output, one metadata dict per item.
        "users": {
            "output_0": users,
            "output_1": [{"block_uuid": "u1"}, {"block_uuid": "u2"}, {"block_uuid": "u3"}],
        },
        # A dynamic child keeps a block run of its own name, which stores nothing;
        # one child block run per item does the work.
        "double": {},
        "double:u1": {"output_0": {"id": 2}},
        "double:u2": {"output_0": {"id": 4}},
        "double:u3": {"output_0": {"id": 6}},
        # The child of a dynamic child is named by index, not by the metadata's block_uuid.
        "label": {},
        "label:0": {"output_0": labelled[0]},
        "label:1": {"output_0": labelled[1]},
        "label:2": {"output_0": labelled[2]},
        # label has reduce_output: true, so collect gets one list of every label output.
        "collect": {"output_0": {"count": 3, "users": labelled}},
        "scores": {
            "output_0": [{"id": 1, "score": 10}, {"id": 2, "score": 20}, {"id": 3, "score": 12}]
        },
        # A SQL block on DuckDB reading its upstream DataFrame as {{ df_1 }}.
        "total": {"output_0": [{"n": 3, "total": 42}]},
    }
    assert [by_uuid[f"double:u{i}"]["dynamic_block_index"] for i in (1, 2, 3)] == [0, 1, 2]
    assert [by_uuid[f"label:{i}"]["dynamic_upstream_block_uuids"] for i in range(3)] == [
        ["double:u1"],
        ["double:u2"],
        ["double:u3"],
    ]
    written = json.loads((run["project"] / "collected.json").read_text())
    assert written == labelled


@pytest.mark.timeout(1800)
def test_failed_block_fails_the_driver(mage_python: Path, tmp_path: Path) -> None:
    project = tmp_path / "mage_project"
    shutil.copytree(FIXTURE, project)
    (project / "transformers" / "double.py").write_text(
        "@transformer\ndef double(user, *args, **kwargs):\n"
        "    raise ValueError(f\"bad user {user['id']}\")\n"
    )
    out = tmp_path / "out.json"
    done = drive(mage_python, project, out)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "ended failed" in done.stderr
    report = json.loads(out.read_text())
    assert report["status"] == "failed"
    statuses = {r["block_uuid"]: r["status"] for r in report["block_runs"]}
    assert statuses["users"] == "completed"
    assert "failed" in {statuses[u] for u in ("double:u1", "double:u2", "double:u3")}
    assert "collect" in statuses and statuses["collect"] != "completed"
