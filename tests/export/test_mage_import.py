"""``mage-nb import MAGE_PROJECT PIPELINE OUT.ipynb``: the notebook computes what Mage computes.

A Mage project written here (a dynamic loader with named items and metadata, a dynamic
child reading the metadata as keyword arguments, a reduce below it, an exporter with a
@test, a DataFrame read by a SQL block through {{ df_1 }}, a custom block, blocks whose
return values Mage splits into outputs) is run by Mage itself (tests/mage_driver.py) and,
imported, by ``mage-nb run --json``; the outputs must agree. Our own Mage export imported
back runs to the notebook's record. Bad projects, pipelines and files exit 2 and write
nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from mage_support import drive, failures, pair_instances, same, write_mage_project

import mage_nb
from mage_nb.export import export_notebook
from mage_nb.export.mage_import import MageImportError, import_pipeline
from mage_nb.notebook import load_notebook

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
SCRIPT = Path(sys.executable).parent / "mage-nb"
ENV = {**os.environ, "PYTHONUTF8": "1", "PYTHONIOENCODING": "utf-8"}

pytestmark = pytest.mark.timeout(1800)

GUARD = "if '{0}' not in globals():\n    from mage_ai.data_preparation.decorators import {0}\n"

BLOCKS: list[dict[str, Any]] = [
    {
        "uuid": "users",
        "type": "data_loader",
        "configuration": {"dynamic": True},
        "code": GUARD.format("data_loader")
        + """
@data_loader
def load_users(*args, **kwargs):
    users = [{"id": 1}, {"id": 2}, {"id": 3}]
    metadata = [{"block_uuid": f"u{u['id']}", "region": "north" if u["id"] < 3 else "south"} for u in users]
    return [users, metadata]
""",
    },
    {
        "uuid": "double",
        "type": "transformer",
        "upstream": ["users"],
        "code": GUARD.format("transformer")
        + """
@transformer
def double(user, *args, **kwargs):
    # metadata and runtime variables arrive as keyword arguments
    return {"id": user["id"] * 2, "region": kwargs["region"], "day": kwargs.get("day")}
""",
    },
    {
        "uuid": "label",
        "type": "transformer",
        "upstream": ["double"],
        "configuration": {"reduce_output": True},
        "code": GUARD.format("transformer")
        + """
@transformer
def label(user, *args, **kwargs):
    return {"id": user["id"], "label": f"{user['region']}-{user['id']}"}
""",
    },
    {
        "uuid": "collect",
        "type": "data_exporter",
        "upstream": ["label"],
        "code": GUARD.format("data_exporter")
        + GUARD.format("test")
        + """
@data_exporter
def collect(labels, *args, **kwargs):
    return {"count": len(labels), "labels": labels}


@test
def test_output(output, *args) -> None:
    assert output["count"] == 3
""",
    },
    {
        "uuid": "scores",
        "type": "data_loader",
        "code": "import pandas as pd\n\n"
        + GUARD.format("data_loader")
        + """
@data_loader
def scores(*args, **kwargs):
    return pd.DataFrame({"id": [1, 2, 3], "score": [10, 20, 12]})
""",
    },
    {
        "uuid": "total",
        "type": "transformer",
        "language": "sql",
        "upstream": ["scores"],
        "code": "SELECT SUM(score) AS total, COUNT(*) AS n FROM {{ df_1 }}\n",
    },
    {
        "uuid": "pair",
        "type": "custom",
        "upstream": ["scores"],
        "code": GUARD.format("custom")
        + """
@custom
def pair(df, *args, **kwargs):
    return int(df["score"].max()), int(df["score"].min())
""",
    },
    {
        "uuid": "one",
        "type": "data_loader",
        "code": GUARD.format("data_loader") + "\n@data_loader\ndef one():\n    return [5]\n",
    },
    {
        "uuid": "nothing",
        "type": "data_loader",
        "code": GUARD.format("data_loader")
        + "\n@data_loader\ndef nothing(*args, **kwargs):\n    return None\n",
    },
    {
        "uuid": "summary",
        "type": "transformer",
        "upstream": ["pair", "one", "nothing", "total"],
        "code": GUARD.format("transformer")
        + """
@transformer
def summary(pair, one, nothing, total, *args, **kwargs):
    return {"pair": pair, "one": one, "nothing": nothing, "total": int(total["total"][0])}
""",
    },
]
PARAMS = {"day": "mon"}


def cli(*args: object) -> subprocess.CompletedProcess[str]:
    if not SCRIPT.exists():
        pytest.skip("the mage-nb console script is not installed next to this interpreter")
    return subprocess.run(
        [str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
        env=ENV,
        check=False,
    )


def cells(notebook: Path) -> list[str]:
    return [str(c.source) for c in nbformat.read(notebook, as_version=4).cells]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mage_project(tmp_path_factory.mktemp("mage") / "project", "demo", BLOCKS)


@pytest.fixture(scope="module")
def both(
    project: Path, mage_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("import")
    mage_copy = work / "mage_run"
    shutil.copytree(project, mage_copy)  # Mage writes its database and outputs there
    report = drive(mage_python, mage_copy, "demo", work / "mage.json", variables=PARAMS)
    notebook = work / "demo.ipynb"
    imported = cli("import", project, "demo", notebook)
    assert imported.returncode == 0, imported.stderr
    ran = cli("run", notebook, "--json", work / "ours.json", "--no-progress", "--param", "day=mon")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    record = json.loads((work / "ours.json").read_text())
    return {"report": report, "record": record, "notebook": notebook, "imported": imported}


def test_imported_notebook_computes_what_mage_computes(both: dict[str, Any]) -> None:
    report, record = both["report"], both["record"]
    assert report["status"] == "completed", failures(report)
    assert record["status"] == "completed"
    pairs = pair_instances(record, report, {"double"})
    assert len(pairs) == len(record["block_runs"]) == 14
    mage_runs = {r["block_uuid"]: r for r in report["block_runs"]}
    for ours, theirs, a, _ in pairs:
        outputs = mage_runs[theirs]["outputs"]
        values = [outputs[f"output_{i}"] for i in range(len(outputs))]
        if ours == "users":  # a dynamic block: its items (output_1 is the metadata)
            same(a, values[0], ours)
        else:  # Mage splits a returned list into outputs; mage_block hands on the same value
            same(a, values[0] if len(values) == 1 else values, f"{ours} / Mage {theirs}")
    outputs = {ours: a for ours, _, a, _ in pairs}
    assert outputs["double:u3"] == {"id": 6, "region": "south", "day": "mon"}
    assert [u for u in outputs if u.startswith("label:")] == ["label:u1", "label:u2", "label:u3"]
    assert outputs["summary"] == {"pair": [20, 10], "one": 5, "nothing": [], "total": 42}
    assert outputs["total"] == [{"total": 42, "n": 3}]


def test_imported_cells(both: dict[str, Any]) -> None:
    sources = cells(both["notebook"])
    assert sources[0].startswith("# demo\n\nImported by `mage-nb import`")
    assert sources[1] == "%load_ext mage_nb"
    assert sources[2].startswith("import inspect\n\n\ndef mage_block(function):")
    headers = [s.split("\n", 1)[0] for s in sources[3:]]
    assert headers == [
        "%%block loader users --dynamic",
        "%%block transformer double --upstream users",
        "%%block transformer label --reduce --upstream double",
        "%%block exporter collect --upstream label",
        "%%block loader scores",
        "%%block sql total --upstream scores",
        "%%block custom pair --upstream scores",
        "%%block loader one",
        "%%block loader nothing",
        "%%block transformer summary --upstream pair one nothing total",
    ]
    by_name = {s.split("\n", 1)[0].split()[2]: s for s in sources[3:]}
    assert by_name["total"] == (
        "%%block sql total --upstream scores\nSELECT SUM(score) AS total, COUNT(*) AS n FROM scores\n"
    )
    # The body as it was: Mage's import guards off, mage_block under the role decorator
    # (not on the dynamic block, whose [items, metadata] mage_nb reads as Mage does).
    assert by_name["double"].startswith(
        "%%block transformer double --upstream users\n"
        "@transformer\n@mage_block\ndef double(user, *args, **kwargs):\n"
        "    # metadata and runtime variables arrive as keyword arguments\n"
    )
    assert "mage_ai" not in by_name["double"]
    assert "@mage_block" not in by_name["users"]
    assert "@test\ndef test_output(output, *args) -> None:" in by_name["collect"]
    assert both["imported"].stdout == f"imported the Mage pipeline demo to {both['notebook']}\n"


def test_our_mage_export_imported_back_runs_to_the_notebook_record(tmp_path: Path) -> None:
    """Notebook -> Mage project -> notebook: the same instances and outputs."""
    source = NOTEBOOKS / "dynamic_users.ipynb"
    export_notebook(load_notebook(source), tmp_path / "project", to="mage")
    back = tmp_path / "back.ipynb"
    done = cli("import", tmp_path / "project", "dynamic_users", back)
    assert done.returncode == 0, done.stderr
    want = json.loads(mage_nb.run_notebook(source).to_json())
    got = json.loads(mage_nb.run_notebook(back).to_json())
    assert got["status"] == want["status"] == "completed"
    assert [(r["uuid"], r["upstream"]) for r in got["block_runs"]] == [
        (r["uuid"], r["upstream"]) for r in want["block_runs"]
    ]
    for a, b in zip(want["block_runs"], got["block_runs"]):
        same(a["output"], b["output"], a["uuid"])


# -- bad inputs: exit 2, nothing written --------------------------------------------------------
def broken(project: Path, case: str) -> tuple[Path, str]:
    """A copy of the project broken one way; (project to import, pipeline)."""
    if case == "missing project":
        return project.parent / "no_such_project", "demo"
    copy = project.parent / f"broken_{case.replace(' ', '_')}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(project, copy)
    meta = copy / "pipelines" / "demo" / "metadata.yaml"
    if case == "not a project":
        (copy / "metadata.yaml").unlink()
    elif case == "unknown pipeline":
        return copy, "nope"
    elif case == "malformed yaml":
        meta.write_text("blocks:\n- uuid: users\n  type: [data_loader\n")
    elif case == "not a mapping":
        meta.write_text("- just\n- a list\n")
    elif case == "no blocks":
        meta.write_text("name: demo\nuuid: demo\n")
    elif case == "block without uuid":
        meta.write_text("blocks:\n- type: data_loader\n")
    elif case == "unknown upstream":
        meta.write_text(meta.read_text().replace("- users\n", "- userz\n", 1))
    elif case == "missing file":
        (copy / "transformers" / "double.py").unlink()
    elif case == "dbt block":
        meta.write_text(meta.read_text().replace("type: custom", "type: dbt", 1))
    elif case == "R block":
        meta.write_text(meta.read_text().replace("language: python", "language: r", 1))
    elif case == "integration pipeline":
        meta.write_text(meta.read_text().replace("type: python", "type: integration", 1))
    return copy, "demo"


BAD = {
    "missing project": "is not a folder",
    "not a project": "is not a Mage project (it has no metadata.yaml)",
    "unknown pipeline": "has no pipeline 'nope' (its pipelines: demo)",
    "malformed yaml": "metadata.yaml is not valid YAML (line 4)",
    "not a mapping": "is not a Mage pipeline (expected a mapping with blocks:)",
    "no blocks": "has no list of blocks (blocks:)",
    "block without uuid": "block 1 has no uuid",
    "unknown upstream": "block 'double' lists upstream 'userz', which is not a block",
    "missing file": "Mage block 'double': its file is missing",
    "dbt block": "Mage block 'pair' is a 'dbt' block",
    "R block": "Mage block 'users' is written in 'r'",
    "integration pipeline": "a 'integration' pipeline; only standard (python) pipelines",
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_and_writes_nothing(case: str, project: Path, tmp_path: Path) -> None:
    source, pipeline = broken(project, case)
    out = tmp_path / "out.ipynb"
    done = cli("import", source, pipeline, out)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("mage-nb: error: "), done.stderr
    assert BAD[case] in done.stderr, done.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_notebook_is_kept_unless_force(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.ipynb"
    out.write_text("mine")
    done = cli("import", project, "demo", out)
    assert done.returncode == 2
    assert "out.ipynb exists: choose another file, or pass --force" in done.stderr
    assert out.read_text() == "mine"
    assert cli("import", project, "demo", out, "--force").returncode == 0
    assert cells(out)[1] == "%load_ext mage_nb"


# -- what is kept, renamed or left out, with a warning ------------------------------------------
def test_warnings_for_what_does_not_carry_over(project: Path, tmp_path: Path) -> None:
    copy = tmp_path / "project"
    shutil.copytree(project, copy)
    meta = copy / "pipelines" / "demo" / "metadata.yaml"
    text = meta.read_text()
    text = text.replace(
        "- uuid: one\n",
        "- uuid: notes\n  type: scratchpad\n  language: python\n  upstream_blocks: []\n- uuid: one\n",
    )
    text = text.replace("data_provider: duckdb", "data_provider: postgres")
    meta.write_text(text)
    import yaml

    data = yaml.safe_load(meta.read_text())
    for block in data["blocks"]:
        if block["uuid"] == "double":
            block["retry_config"] = {"retries": 2, "delay": 3}
            block["timeout"] = 60
        if block["uuid"] == "pair":
            block["uuid"] = "pair-max"
            (copy / "custom" / "pair.py").rename(copy / "custom" / "pair-max.py")
        if "pair" in (block.get("upstream_blocks") or []):
            block["upstream_blocks"] = [
                "pair-max" if u == "pair" else u for u in block["upstream_blocks"]
            ]
    meta.write_text(yaml.safe_dump(data, sort_keys=False))
    (copy / "transformers" / "total.sql").write_text(
        "SELECT SUM(score) AS total, COUNT(*) AS n FROM {{ df_1 }} JOIN events USING (id)\n"
    )
    (copy / "data_loaders" / "one.py").write_text(
        "from mage_ai.data_preparation.variable_manager import get_variable\n"
        "from project.utils.helpers import shared\n\n"
        + (copy / "data_loaders" / "one.py").read_text()
    )
    result = import_pipeline(copy, "demo")
    warnings = "\n".join(result.warnings)
    assert "Mage scratchpad block 'notes' left out (it is not run)" in warnings
    assert "Mage block 'pair-max' is named 'pair_max' (a block NAME is an identifier)" in warnings
    assert "Mage block 'total' runs on 'postgres' in Mage; in the notebook it runs on DuckDB" in (
        warnings
    )
    assert "Mage block 'double': retries with exponential backoff become a constant" in warnings
    assert (
        "Mage block 'one' imports mage_ai.data_preparation.variable_manager: it needs mage-ai "
        "installed where the notebook runs" in warnings
    )
    assert (
        "Mage block 'one' imports project.utils.helpers from the Mage project itself: run the "
        "notebook with the project's parent folder on PYTHONPATH" in warnings
    )
    assert "Mage block 'total' reads events, which is not a block: Mage reads it from" in warnings
    headers = [c.source.split("\n", 1)[0] for c in result.cells if c.source.startswith("%%")]
    assert (
        "%%block transformer double --retries 2 --retry-delay 3 --timeout 60 --upstream users"
        in (headers)
    )
    assert "%%block transformer summary --upstream pair_max one nothing total" in headers


def test_a_root_block_whose_parameters_name_blocks_is_refused(
    project: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "project"
    shutil.copytree(project, copy)
    (copy / "data_loaders" / "nothing.py").write_text(
        "@data_loader\ndef nothing(scores=None, *args, **kwargs):\n    return None\n"
    )
    with pytest.raises(MageImportError, match="rename those parameters"):
        import_pipeline(copy, "demo")
