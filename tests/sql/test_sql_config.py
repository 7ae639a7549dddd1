"""Where SQL blocks run: ``--connection`` URLs, named connections from mage_nb.toml and
pyproject.toml with ``${ENV}`` expansion, SQLite through SQLAlchemy, and the errors that stop
a run before anything runs (SPEC §1.1, §3.3, §5, §8)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest
from helpers import run_cells, write_notebook

from mage_nb import run_notebook
from mage_nb.config import load_connections
from mage_nb.engine.errors import PipelineError

ENV = {**os.environ, "PYTHONUTF8": "1", "PYTHONIOENCODING": "utf-8"}
INJECTION = "x'); DROP TABLE people; --"


def run_cli(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mage_nb", "run", *map(str, args), "--no-progress"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        env={**ENV, **(env or {})},
        check=False,
    )


def sqlite_people(path: Path) -> Path:
    """A SQLite file with a table ``people(id, name)`` holding ann and bob."""
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE people (id INTEGER, name TEXT)")
        con.execute("INSERT INTO people VALUES (1, 'ann'), (2, 'bob')")
    con.close()
    return path


def sqlite_rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(path)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def duckdb_file(path: Path) -> Path:
    """A DuckDB file with a table ``facts(k, v)``."""
    con = duckdb.connect(str(path))
    try:
        con.execute("CREATE TABLE facts AS SELECT * FROM (VALUES ('a', 1), ('b', 2)) v(k, v)")
    finally:
        con.close()
    return path


def marker(path: Path) -> str:
    """A loader body that leaves ``path`` behind when it runs."""
    return f"%%loader first\n__import__('pathlib').Path({str(path)!r}).write_text('ran')"


def stderr_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def frame_rows(value: Any) -> list[dict[str, Any]]:
    return value.to_dict(orient="records")


# -- SQLite through SQLAlchemy ------------------------------------------------------------------
def test_sqlite_url_queries_a_table_with_a_bind_parameter(tmp_path: Path, executor: str) -> None:
    db = sqlite_people(tmp_path / "people.db")
    run = run_cells(
        "%%loader wanted --dynamic\n[2, 1, 3]",
        f"%%block sql person --connection sqlite:///{db}\n"
        "SELECT id, name FROM people WHERE id = {{ wanted }}",
        executor=executor,
    )
    assert run.status == "completed"
    assert run.block_runs["person:0"].upstream == ["wanted"]
    got = {r.uuid: frame_rows(r.output) for r in run.instances("person")}
    assert got["person:0"] == [{"id": 2, "name": "bob"}]
    assert got["person:1"] == [{"id": 1, "name": "ann"}]
    assert got["person:2"] == []


def test_sqlite_stores_an_injection_attempt_as_text_and_the_table_survives(
    tmp_path: Path,
) -> None:
    db = sqlite_people(tmp_path / "people.db")
    run = run_cells(
        f"%%loader who\n{INJECTION!r}",
        f"%%block sql stored --connection sqlite:///{db}\n"
        "INSERT INTO {{ table | ident }} (id, name) VALUES (3, {{ who }}) RETURNING name",
        namespace={"table": "people"},
    )
    assert run.status == "completed"
    [frame] = run.outputs("stored")
    assert frame_rows(frame) == [{"name": INJECTION}]
    assert sqlite_rows(db, "SELECT id, name FROM people ORDER BY id") == [
        (1, "ann"),
        (2, "bob"),
        (3, INJECTION),
    ]


def test_sqlite_database_error_names_block_instance_sql_and_message(tmp_path: Path) -> None:
    db = sqlite_people(tmp_path / "people.db")
    run = run_cells(f"%%block sql missing --connection sqlite:///{db}\nSELECT * FROM nowhere")
    assert run.status == "failed"
    error = run.block_runs["missing"].error
    assert error is not None
    assert "'missing'" in error.message
    assert "SELECT * FROM nowhere" in error.message
    assert "no such table: nowhere" in error.message


def test_upstream_as_table_on_sqlite_is_refused_before_anything_runs(tmp_path: Path) -> None:
    db = sqlite_people(tmp_path / "people.db")
    ran = tmp_path / "ran"
    with pytest.raises(PipelineError) as info:
        run_cells(
            marker(ran),
            "%%loader people_extra\n[{'id': 9, 'name': 'zed'}]",
            f"%%block sql joined --connection sqlite:///{db}\n"
            "SELECT * FROM people UNION ALL SELECT * FROM people_extra",
        )
    message = str(info.value)
    assert "'joined'" in message
    assert "'people_extra'" in message
    assert "DuckDB" in message
    assert not ran.exists()


def test_upstream_as_table_on_sqlite_exits_2_from_the_cli(tmp_path: Path) -> None:
    db = sqlite_people(tmp_path / "people.db")
    ran = tmp_path / "ran"
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        [
            marker(ran),
            "%%loader extra\n[{'id': 9}]",
            f"%%block sql joined --connection sqlite:///{db}\nSELECT id FROM extra",
        ],
    )
    proc = run_cli(nb)
    assert proc.returncode == 2
    assert "'extra'" in stderr_line(proc)
    assert not ran.exists()


# -- DuckDB files --------------------------------------------------------------------------------
def test_duckdb_file_url_joins_a_file_table_with_an_upstream_output(tmp_path: Path) -> None:
    path = duckdb_file(tmp_path / "w.duckdb")
    run = run_cells(
        "%%loader wanted\n[{'k': 'b'}]",
        f"%%block sql picked --connection duckdb:///{path}\n"
        "SELECT f.k, f.v FROM facts f JOIN wanted USING (k)",
    )
    assert run.status == "completed"
    [frame] = run.outputs("picked")
    assert frame_rows(frame) == [{"k": "b", "v": 2}]


# -- configured connections ----------------------------------------------------------------------
def test_connections_come_from_mage_nb_toml_and_the_pyproject_above(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        "[project]\nname = 'x'\n\n[tool.mage_nb.connections]\n"
        "shared = 'sqlite:///${DATA}/shared.db'\nlocal = 'sqlite:///from_pyproject.db'\n"
    )
    folder = tmp_path / "notebooks" / "deep"
    folder.mkdir(parents=True)
    (folder / "mage_nb.toml").write_text("[connections]\nlocal = 'duckdb:///${DATA}/w.duckdb'\n")
    assert load_connections(folder) == {
        "local": "duckdb:///${DATA}/w.duckdb",
        "shared": "sqlite:///${DATA}/shared.db",
    }
    assert load_connections(tmp_path / "notebooks") == {
        "shared": "sqlite:///${DATA}/shared.db",
        "local": "sqlite:///from_pyproject.db",
    }


def test_named_connection_from_mage_nb_toml_expands_env_vars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    sqlite_people(data / "people.db")
    (tmp_path / "mage_nb.toml").write_text(
        "[connections]\nwarehouse = 'sqlite:///${PEOPLE_DIR}/people.db'\n"
    )
    monkeypatch.setenv("PEOPLE_DIR", str(data))
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        [
            "%%loader wanted\n'ann'",
            "%%block sql person --connection warehouse\n"
            "SELECT id FROM people WHERE name = {{ wanted }}",
        ],
    )
    run = run_notebook(nb, executor="sync")
    assert run.status == "completed"
    assert frame_rows(run.block_runs["person"].output) == [{"id": 1}]


def test_named_connection_from_pyproject_above_the_notebook_expands_env_vars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = duckdb_file(tmp_path / "w.duckdb")
    (tmp_path / "pyproject.toml").write_text(
        "[tool.mage_nb.connections]\nlake = 'duckdb:///${LAKE_DIR}/w.duckdb'\n"
    )
    folder = tmp_path / "notebooks"
    folder.mkdir()
    monkeypatch.setenv("LAKE_DIR", str(path.parent))
    nb = write_notebook(
        folder / "nb.ipynb",
        [
            "%%block sql facts_by_key --connection lake --dynamic\nSELECT k, v FROM facts ORDER BY k",
            "%%transformer doubled\nfacts_by_key['v'] * 2",
        ],
    )
    run = run_notebook(nb)
    assert run.status == "completed"
    assert [r.output for r in run.instances("doubled")] == [2, 4]


def test_configured_connection_runs_from_the_cli_and_records_rows(tmp_path: Path) -> None:
    sqlite_people(tmp_path / "people.db")
    (tmp_path / "mage_nb.toml").write_text("[connections]\ncrm = 'sqlite:///${CRM_DB}'\n")
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        ["%%block sql everyone --connection crm\nSELECT id, name FROM people ORDER BY id"],
    )
    proc = run_cli(nb, "--json", tmp_path / "run.json", env={"CRM_DB": str(tmp_path / "people.db")})
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    [entry] = record["block_runs"]
    assert entry["output"] == [{"id": 1, "name": "ann"}, {"id": 2, "name": "bob"}]


def test_unused_connection_with_a_missing_env_var_does_not_stop_a_run(tmp_path: Path) -> None:
    (tmp_path / "mage_nb.toml").write_text(
        "[connections]\nunused = 'postgresql://${SURELY_UNSET_MAGE_NB_VAR}@db/x'\n"
    )
    nb = write_notebook(tmp_path / "nb.ipynb", ["%%block sql one\nSELECT 1 AS a"])
    proc = run_cli(nb)
    assert proc.returncode == 0, proc.stderr


# -- refused before anything runs (exit 2) -------------------------------------------------------
def refused(tmp_path: Path, header: str, env: dict[str, str] | None = None) -> str:
    ran = tmp_path / "ran"
    nb = write_notebook(tmp_path / "nb.ipynb", [marker(ran), f"{header}\nSELECT 1 AS a"])
    proc = run_cli(nb, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert not ran.exists()
    return stderr_line(proc)


def test_unknown_connection_name_exits_2_naming_it_and_the_configured_names(
    tmp_path: Path,
) -> None:
    (tmp_path / "mage_nb.toml").write_text("[connections]\nwarehouse = 'sqlite:///w.db'\n")
    line = refused(tmp_path, "%%block sql q --connection nosuch")
    assert line.startswith("mage-nb: error:")
    assert "'nosuch'" in line
    assert "'q'" in line
    assert "warehouse" in line


@pytest.mark.parametrize(
    "url",
    ["postgresql+nosuchdriver://x", "nosuchdb://host/db", "::::"],
    ids=["unknown_driver", "unknown_dialect", "not_a_url"],
)
def test_bad_connection_url_exits_2_with_one_clear_line(tmp_path: Path, url: str) -> None:
    line = refused(tmp_path, f"%%block sql q --connection '{url}'")
    assert line.startswith("mage-nb: error:")
    assert "'q'" in line
    assert url.split("://")[0] in line


def test_missing_env_var_in_a_configured_connection_exits_2_naming_it(tmp_path: Path) -> None:
    (tmp_path / "mage_nb.toml").write_text(
        "[connections]\nwarehouse = 'sqlite:///${MAGE_NB_TEST_UNSET_DIR}/w.db'\n"
    )
    env = dict(ENV)
    env.pop("MAGE_NB_TEST_UNSET_DIR", None)
    line = refused(tmp_path, "%%block sql q --connection warehouse", env=env)
    assert "MAGE_NB_TEST_UNSET_DIR" in line
    assert "warehouse" in line


def test_missing_env_var_in_a_connection_url_exits_2_naming_it(tmp_path: Path) -> None:
    line = refused(tmp_path, "%%block sql q --connection 'sqlite:///${MAGE_NB_TEST_UNSET_DB}'")
    assert "MAGE_NB_TEST_UNSET_DB" in line


def test_connection_on_a_non_sql_block_exits_2(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    nb = write_notebook(
        tmp_path / "nb.ipynb", [marker(ran), "%%transformer t --connection 'duckdb:///x'\nfirst"]
    )
    proc = run_cli(nb)
    assert proc.returncode == 2
    line = stderr_line(proc)
    assert "--connection" in line
    assert "sql" in line
    assert not ran.exists()


def test_unreadable_config_file_exits_2(tmp_path: Path) -> None:
    (tmp_path / "mage_nb.toml").write_text("[connections\nbroken = ")
    line = refused(tmp_path, "%%block sql q")
    assert "mage_nb.toml" in line


# -- unparsable SQL from the CLI (exit 1) --------------------------------------------------------
def test_unparsable_sql_fails_its_instance_and_exits_1(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        [
            "%%loader limit_n\n2",
            "%%block sql broken\nSELEC {{ limit_n }} FROM (((",
            "%%block sql fine --upstream limit_n\nSELECT 1 AS a",
        ],
    )
    proc = run_cli(nb, "--json", tmp_path / "run.json")
    assert proc.returncode == 1, proc.stderr
    record = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    entries = {entry["uuid"]: entry for entry in record["block_runs"]}
    assert {uuid: e["status"] for uuid, e in entries.items()} == {
        "limit_n": "completed",
        "broken": "failed",
        "fine": "completed",
    }
    assert entries["broken"]["upstream"] == ["limit_n"]
    message = entries["broken"]["error"]["message"]
    assert "'broken'" in message
    assert "SELEC ? FROM (((" in message
    assert "syntax error" in message
    assert entries["fine"]["output"] == [{"a": 1}]
