"""``mage-nb run`` behaviour SPEC.md states that no other CLI test pinned down (SPEC §3.3, §8).

Real subprocesses (``python -m mage_nb``) on real notebooks, as tests/cli/test_run_command.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from helpers import run_cli, touch, write_notebook


def by_uuid(path: Path) -> dict[str, dict[str, Any]]:
    return {entry["uuid"]: entry for entry in json.loads(path.read_text())["block_runs"]}


def test_connection_on_a_non_sql_block_exits_2_and_runs_nothing(tmp_path: Path) -> None:
    """SPEC §8 Reduce: "... and `--connection` on a non-SQL block are refused before anything
    runs (exit 2)"; §3.3: "2 the notebook or the command is invalid ... — nothing ran"."""
    marker, record_path = tmp_path / "a-block-ran", tmp_path / "run.json"
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        [f"%%loader side_effect\n{touch(marker)}", "%%loader users --connection warehouse\n[1]"],
    )

    done = run_cli("run", nb, "--no-progress", "--json", record_path)

    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "users" in lines[0] and "--connection" in lines[0]
    assert "Traceback" not in done.stderr
    assert done.stdout.strip() == ""
    assert not marker.exists()
    assert not record_path.exists()


def test_sql_the_parser_cannot_read_fails_its_instance_and_exits_1(tmp_path: Path) -> None:
    """SPEC §8 SQL: "SQL that the parser cannot read is not refused up front ... and the
    database's error fails the instance (exit 1)"; §5: "Errors from the database name the
    block, the instance and the database's message"; §3.3: "1 some instance failed (the rest
    still ran)"."""
    record_path = tmp_path / "run.json"
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        [
            "%%loader n --dynamic\n[1, 2]",
            "%%block sql broken\nSELEC {{ n }} FROM nowhere",
            "%%loader fine\n'still ran'",
        ],
    )

    done = run_cli("run", nb, "--no-progress", "--json", record_path)

    assert done.returncode == 1, (done.stdout, done.stderr)
    runs = by_uuid(record_path)
    assert {u: r["status"] for u, r in runs.items()} == {
        "n": "completed",
        "broken:0": "failed",
        "broken:1": "failed",
        "fine": "completed",
    }
    assert runs["fine"]["output"] == "still ran"
    message = runs["broken:1"]["error"]["message"]
    assert "broken" in message and "broken:1" in message
    assert "SELEC" in message  # the database's own message quotes the bad token


def test_a_repeated_suffix_warns_in_the_summary_and_the_json_record(tmp_path: Path) -> None:
    """SPEC §2.2: "a suffix that repeats an earlier one in the same fan-out gets `_<index>`
    appended, and the run record warns"; §3.3: the record has `"warnings": []`; §8: "The
    end-of-run summary goes to stdout". A warning is not a failure: exit 0."""
    record_path = tmp_path / "run.json"
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        [
            "%%loader items --dynamic\n[[1, 2], [{'block_uuid': 's'}, {'block_uuid': 's'}]]",
            "%%transformer t\nitems * 10",
        ],
    )

    done = run_cli("run", nb, "--no-progress", "--json", record_path)

    assert done.returncode == 0, (done.stdout, done.stderr)
    record = json.loads(record_path.read_text())
    assert record["status"] == "completed"
    assert [r["uuid"] for r in record["block_runs"]] == ["items", "t:s", "t:s_1"]
    assert len(record["warnings"]) == 1
    assert "'s_1'" in record["warnings"][0]
    assert "s_1" in done.stdout and "warning" in done.stdout.lower()
