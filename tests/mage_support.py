"""Running Mage 0.9.80 in tests: its virtualenv, its block-run driver, and comparing what it
computed with a mage_nb run record (tests/export/test_mage_*.py)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "tests" / "mage_driver.py"
VENV = Path(os.environ.get("MAGE_VENV") or ROOT / ".mage-venv")

# Failures of the install that mean PyPI cannot be reached, as opposed to a broken script.
UNREACHABLE = re.compile(
    r"Could not find a version|No matching distribution|NewConnectionError|"
    r"Temporary failure in name resolution|Network is unreachable|ConnectionError",
)


def mage_venv_python() -> Path:
    """The Mage virtualenv's Python, built by scripts/mage-venv.sh (once; idempotent)."""
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "mage-venv.sh")],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    if done.returncode != 0:
        if UNREACHABLE.search(done.stderr):
            pytest.skip(f"mage-ai==0.9.80 cannot be installed from PyPI here: {done.stderr[-500:]}")
        pytest.fail(f"scripts/mage-venv.sh failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return VENV / "bin" / "python"


def drive(
    python: Path,
    project: Path,
    pipeline: str,
    out: Path,
    *,
    variables: dict[str, Any] | None = None,
    timeout: float = 180,
) -> dict[str, Any]:
    """Run a Mage pipeline through Mage's own scheduler; its report (tests/mage_driver.py)."""
    done = subprocess.run(
        [
            str(python),
            str(DRIVER),
            str(project),
            pipeline,
            str(out),
            "--timeout",
            str(timeout),
            "--variables",
            json.dumps(variables or {}),
        ],
        capture_output=True,
        text=True,
        timeout=timeout + 120,
        env={k: v for k, v in os.environ.items() if not k.startswith("MAGE_")},
    )
    assert done.returncode in (0, 1), done.stderr[-5000:]
    report: dict[str, Any] = json.loads(out.read_text())
    report["returncode"] = done.returncode
    report["stderr"] = done.stderr
    return report


def failures(report: dict[str, Any]) -> str:
    """The errors of Mage's block runs that did not complete, for assertion messages."""
    lines = []
    for run in report["block_runs"]:
        if run["status"] != "completed":
            error = run.get("error") or {}
            text = error.get("error") if isinstance(error, dict) else error
            lines.append(f"{run['block_uuid']}: {run['status']}: {str(text)[:800]}")
    return "\n".join(lines)


def same(ours: Any, theirs: Any, where: str = "output") -> None:
    """Equal as JSON, floats to 1e-9 (Mage's DataFrame JSON keeps 10 significant digits)."""
    if isinstance(ours, float) or isinstance(theirs, float):
        assert isinstance(ours, (int, float)) and isinstance(theirs, (int, float)), (
            f"{where}: {ours!r} != {theirs!r}"
        )
        assert math.isclose(ours, theirs, rel_tol=1e-9, abs_tol=1e-12), (
            f"{where}: {ours} != {theirs}"
        )
    elif isinstance(ours, dict):
        assert isinstance(theirs, dict) and set(ours) == set(theirs), (
            f"{where}: {ours!r} != {theirs!r}"
        )
        for key in ours:
            same(ours[key], theirs[key], f"{where}[{key!r}]")
    elif isinstance(ours, list):
        assert isinstance(theirs, list) and len(ours) == len(theirs), (
            f"{where}: {ours!r} != {theirs!r}"
        )
        for i, (a, b) in enumerate(zip(ours, theirs)):
            same(a, b, f"{where}[{i}]")
    else:
        assert ours == theirs, f"{where}: {ours!r} != {theirs!r}"


def pair_instances(
    record: dict[str, Any],
    report: dict[str, Any],
    direct: set[str] = frozenset(),  # type: ignore[assignment]
) -> list[tuple[str, str, Any, Any]]:
    """(our uuid, Mage's block run uuid, our output, Mage's output) for every instance.

    A block outside any fan-out is one Mage block run of its NAME. A block inside a fan-out
    is Mage's block runs ``NAME:...`` (Mage also keeps one run named NAME, which does no work
    and is skipped), taken in Mage's dynamic_block_index order against ours in instance
    order. Blocks in ``direct`` read the dynamic block itself: Mage names their runs by the
    item's name as we do, so the names must be equal too.
    """
    mage = {run["block_uuid"]: run for run in report["block_runs"]}
    by_block: dict[str, list[dict[str, Any]]] = {}
    for run in record["block_runs"]:
        by_block.setdefault(run["block"], []).append(run)
    pairs = []
    for block, runs in by_block.items():
        if len(runs) == 1 and not runs[0]["lineage"]:
            theirs = mage[block]
            pairs.append((runs[0]["uuid"], block, runs[0]["output"], _output(theirs)))
            continue
        children = sorted(
            (run for uuid, run in mage.items() if uuid.startswith(f"{block}:")),
            key=lambda run: run["dynamic_block_index"],
        )
        assert [r["dynamic_block_index"] for r in children] == list(range(len(runs))), (
            f"{block}: Mage ran {[r['block_uuid'] for r in children]} for our "
            f"{[r['uuid'] for r in runs]}"
        )
        for ours, theirs in zip(runs, children):
            if block in direct:
                assert theirs["block_uuid"] == ours["uuid"]
            pairs.append((ours["uuid"], theirs["block_uuid"], ours["output"], _output(theirs)))
    return pairs


def _output(run: dict[str, Any]) -> Any:
    outputs = run["outputs"]
    assert "unreadable" not in outputs, outputs
    return outputs.get("output_0")


def write_mage_project(root: Path, pipeline: str, blocks: list[dict[str, Any]]) -> Path:
    """A Mage project by hand: each block a dict of uuid, type, code (Python or SQL) and
    optionally upstream, configuration, language."""
    import yaml

    root.mkdir(parents=True, exist_ok=True)
    (root / "metadata.yaml").write_text(
        "project_type: standalone\nvariables_dir: .\nhelp_improve_mage: false\n"
    )
    folders = {
        "data_loader": "data_loaders",
        "transformer": "transformers",
        "data_exporter": "data_exporters",
        "custom": "custom",
    }
    entries = []
    for block in blocks:
        language = block.get("language", "python")
        folder = root / folders[block["type"]]
        folder.mkdir(exist_ok=True)
        ext = "sql" if language == "sql" else "py"
        (folder / f"{block['uuid']}.{ext}").write_text(textwrap.dedent(block["code"]).lstrip())
        configuration = dict(block.get("configuration") or {})
        if language == "sql":
            configuration.update(
                data_provider="duckdb",
                data_provider_profile="default",
                export_write_policy="replace",
            )
            (root / "io_config.yaml").write_text(
                "version: 0.1.1\ndefault:\n  DUCKDB_DATABASE: mage.duckdb\n"
            )
        entry = {
            "uuid": block["uuid"],
            "name": block["uuid"],
            "type": block["type"],
            "language": language,
            "configuration": configuration,
            "upstream_blocks": list(block.get("upstream", [])),
            "downstream_blocks": [
                b["uuid"] for b in blocks if block["uuid"] in b.get("upstream", [])
            ],
        }
        entry.update(block.get("extra", {}))
        entries.append(entry)
    folder = root / "pipelines" / pipeline
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.yaml").write_text(
        yaml.safe_dump(
            {"name": pipeline, "uuid": pipeline, "type": "python", "blocks": entries},
            sort_keys=False,
        )
    )
    return root
