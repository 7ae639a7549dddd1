"""SQL blocks on SQLite through SQLAlchemy (``--connection sqlite:///file``), SPEC §5."""

from __future__ import annotations

import builtins
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cells, specs_from_cells

from mage_nb.engine import Pipeline, PipelineRun, Run, ThreadExecutor

PEOPLE = [(1, "Ada"), (2, "Alan"), (3, "Grace")]
PETS = [("Rex", 1), ("Tom", 1), ("Nemo", 3)]
EVIL = "x'); DROP TABLE people; --"


def _query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as con:
        return con.execute(sql, params).fetchall()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "shop.sqlite"
    with closing(sqlite3.connect(path)) as con:
        con.execute("create table people (id integer primary key, name text not null)")
        con.execute("create table pets (name text not null, owner integer not null)")
        con.execute("create table log (body text)")
        con.executemany("insert into people values (?, ?)", PEOPLE)
        con.executemany("insert into pets values (?, ?)", PETS)
        con.commit()
    return path


def _url(db: Path) -> str:
    return f"sqlite:///{db}"


@pytest.mark.parametrize("executor", ["sync", "threads"])
def test_a_dynamic_sqlite_query_fans_out_rows_into_per_row_queries(db: Path, executor: str) -> None:
    url = _url(db)
    run = run_cells(
        f"%%block sql persons --dynamic --connection {url}\n"
        "select id, name from people order by id",
        f"%%block sql pet_names --connection {url}\n"
        "select name from pets where owner = {{ persons.id }} order by name",
        "%%transformer line\nf\"{persons['name']}: {', '.join(pet_names['name'])}\"",
        executor=executor,
    )
    assert run.status == "completed", {u: r.error for u, r in run.block_runs.items() if r.error}
    assert run.block_runs["persons"].output == [{"id": i, "name": n} for i, n in PEOPLE]
    assert [r.uuid for r in run.instances("pet_names")] == [
        "pet_names:0",
        "pet_names:1",
        "pet_names:2",
    ]
    assert run.block_runs["pet_names:0"].output["name"].tolist() == ["Rex", "Tom"]
    assert run.outputs("line") == ["Ada: Rex, Tom", "Alan: ", "Grace: Nemo"]


def test_values_are_bind_parameters_on_sqlite(db: Path) -> None:
    url = _url(db)
    names = [EVIL, "O'Brien", "{{ 1 }}", "%(x)s ? :name"]
    run = run_cells(
        f"%%loader names --dynamic\n{names!r}",
        f"%%block sql echo --connection {url}\n"
        "select {{ names }} as name, (select count(*) from people) as people_left",
        f"%%block sql remember --connection {url}\ninsert into log (body) values ({{{{ names }}}})",
        executor="threads",
    )
    assert run.status == "completed", {u: r.error for u, r in run.block_runs.items() if r.error}
    for i, name in enumerate(names):
        assert run.block_runs[f"echo:{i}"].output.to_dict(orient="records") == [
            {"name": name, "people_left": len(PEOPLE)}
        ]
    assert _query(db, "select count(*) from people") == [(len(PEOPLE),)]
    assert sorted(body for (body,) in _query(db, "select body from log")) == sorted(names)


def test_a_named_sqlite_connection_with_env_expansion(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAGE_NB_TEST_SQLITE", str(db))
    executor = ThreadExecutor(2)
    try:
        run: PipelineRun = Run(
            Pipeline(
                specs_from_cells(
                    [
                        "%%loader wanted\n2",
                        "%%block sql who --connection local\n"
                        "select name from people where id = {{ wanted }}",
                    ]
                )
            ),
            {"__builtins__": builtins},
            executor=executor,
            connections={"local": "sqlite:///${MAGE_NB_TEST_SQLITE}"},
        ).execute()
    finally:
        executor.close()
    assert run.status == "completed"
    assert run.block_runs["who"].output["name"].tolist() == ["Alan"]


def test_a_sqlite_error_names_the_block_the_instance_the_sql_and_the_message(db: Path) -> None:
    url = _url(db)
    run = run_cells(
        "%%loader tables --dynamic\n['people', 'nowhere']",
        f"%%block sql size --connection {url}\n"
        "select count(*) as n from {{ tables | ident }} where id > {{ 1 }}",
        "%%transformer after\nint(size['n'][0])",
    )
    assert run.status == "failed"
    assert run.block_runs["size:0"].status == "completed"
    assert run.block_runs["after:0"].output == 2
    bad = run.block_runs["size:1"]
    assert bad.status == "failed"
    assert bad.error is not None and bad.error.type == "SqlError"
    message = bad.error.message
    assert "SQL block 'size'" in message
    assert "instance 'size:1'" in message
    assert "no such table: nowhere" in message
    assert 'select count(*) as n from "nowhere" where id > ?' in message
    assert run.block_runs["after:1"].status == "upstream_failed"


def test_a_missing_sqlite_table_fails_the_instance(db: Path) -> None:
    run = run_cells(f"%%block sql lost --connection {_url(db)}\nselect * from nowhere")
    bad = run.block_runs["lost"]
    assert bad.status == "failed"
    assert bad.error is not None
    assert "no such table: nowhere" in bad.error.message
    assert "select * from nowhere" in bad.error.message


def test_colons_and_percent_signs_in_sqlite_literals_stay_text(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'text.db'}"
    run = run_cells(
        "%%block loader word\n'x'",
        f"%%block sql q --connection {url}\n"
        "select '10:30' as at, '100%' as share, {{ word }} || ':' || {{ word }} as pair",
    )
    frame = run.block_runs["q"].output
    assert frame.to_dict(orient="records") == [{"at": "10:30", "share": "100%", "pair": "x:x"}]
