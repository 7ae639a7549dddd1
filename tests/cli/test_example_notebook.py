"""The example notebook (notebooks/dynamic_users.ipynb) runs headless as its markdown promises."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from mage_nb import PipelineRun, run_notebook

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "notebooks" / "dynamic_users.ipynb"
USERS = ["for_user_1", "for_user_2", "for_user_3"]
PER_USER = ("anonymize_user_data", "clean_column_names", "compute_engagement_score")
# sessions * 2 + minutes / 60, rounded to 2 places, for users 1, 2 and 3.
SCORES = [{"id": 1, "score": 29.67}, {"id": 2, "score": 6.75}, {"id": 3, "score": 69.17}]


@pytest.fixture(scope="module")
def example_run() -> PipelineRun:
    return run_notebook(EXAMPLE, executor="sync")


def test_example_notebook_runs_headless_without_warnings(example_run: PipelineRun) -> None:
    assert example_run.status == "completed"
    assert example_run.warnings == []  # its `%load_ext mage_nb` is skipped silently
    assert all(r.status == "completed" for r in example_run.block_runs.values())


def test_users_fans_out_three_items_named_for_user_n(example_run: PipelineRun) -> None:
    users = example_run.block_runs["users"]

    assert [u["id"] for u in users.output] == [1, 2, 3]
    children = list(example_run.instances("anonymize_user_data"))
    assert [r.lineage for r in children] == [[("users", suffix)] for suffix in USERS]


def test_each_block_below_the_loader_has_one_instance_per_user(example_run: PipelineRun) -> None:
    below = [r.uuid for r in example_run.block_runs.values() if r.lineage]

    assert len(below) == 9
    for block in PER_USER:
        assert [r.uuid for r in example_run.instances(block)] == [
            f"{block}:{suffix}" for suffix in USERS
        ]
    assert list(example_run.block_runs) == [
        "users",
        *(f"{block}:{suffix}" for block in PER_USER for suffix in USERS),
        "engagement_report",
    ]


def test_instances_receive_their_own_user(example_run: PipelineRun) -> None:
    runs = example_run.block_runs
    anonymized = [runs[f"anonymize_user_data:{s}"].output for s in USERS]

    assert [a["id"] for a in anonymized] == [1, 2, 3]
    assert all(a["name"] != "Ada Lovelace" and len(a["name"]) == 10 for a in anonymized)
    assert [runs[f"clean_column_names:{s}"].output for s in USERS] == anonymized
    assert [runs[f"compute_engagement_score:{s}"].output for s in USERS] == SCORES


def test_engagement_report_ranks_the_three_scores(example_run: PipelineRun) -> None:
    report = example_run.block_runs["engagement_report"]

    assert report.lineage == []
    assert report.output == {
        "users": 3,
        "top_user": 3,
        "scores": sorted(SCORES, key=lambda row: row["score"], reverse=True),
    }


def instrumented_copy(tmp_path: Path) -> tuple[Path, Path]:
    """The example, with compute_engagement_score finishing in reverse user order and
    engagement_report writing down exactly what it received."""
    nb = nbformat.read(EXAMPLE, as_version=4)
    received = tmp_path / "received.json"
    for cell in nb.cells:
        header, _, body = cell.source.partition("\n")
        if header.startswith("%%transformer compute_engagement_score"):
            sleep = "__import__('time').sleep(0.1 * (3 - anonymize_user_data['id']))\n"
            cell.source = f"{header}\n{sleep}{body}"
        elif header.startswith("%%exporter engagement_report"):
            dump = (
                f"__import__('pathlib').Path({str(received)!r}).write_text(__import__('json').dumps("
                "[list(compute_engagement_score), list(context.reduced_from)]))\n"
            )
            cell.source = f"{header}\n{dump}{body}"
    path = tmp_path / "dynamic_users.ipynb"
    nbformat.write(nb, path)
    return path, received


def test_engagement_report_receives_the_scores_in_user_order(tmp_path: Path) -> None:
    path, received = instrumented_copy(tmp_path)

    run = run_notebook(path, executor="threads")

    assert run.status == "completed"
    finished = sorted(run.instances("compute_engagement_score"), key=lambda r: r.ended or 0)
    assert finished[0].uuid == "compute_engagement_score:for_user_3"
    scores, reduced_from = json.loads(received.read_text())
    assert scores == SCORES
    assert reduced_from == [f"compute_engagement_score:{s}" for s in USERS]


def demo_command() -> list[str]:
    """The arguments `make demo` passes to mage-nb, read from the Makefile."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^demo:.*\n\t(.+)$", makefile, re.MULTILINE)
    assert recipe is not None, "the Makefile has no demo target"
    words = shlex.split(recipe.group(1))
    assert words[0].endswith("mage-nb"), words
    return words[1:]


def test_make_demo_command_exits_0_and_prints_the_run_tree() -> None:
    args = demo_command()
    assert args == ["run", "notebooks/dynamic_users.ipynb", "--tree"]

    done = subprocess.run(
        [sys.executable, "-m", "mage_nb", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        env={**os.environ, "PYTHONUTF8": "1", "PYTHONIOENCODING": "utf-8"},
        check=False,
    )

    assert done.returncode == 0, done.stderr
    out = done.stdout
    for block in PER_USER:
        for suffix in USERS:
            assert f"{block}:{suffix}" in out
    assert re.search(r"compute_engagement_score\s+3/3", out)
