"""SQL blocks on DuckDB's default in-process connection (SPEC §2.7, §5, §8 SQL).

The default connection is process-wide: every table a test creates has a unique name and is
dropped when the test ends.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from helpers import outputs, run_cells, statuses

from mage_nb.engine import PipelineRun

INJECTION = "x'); DROP TABLE {table}; --"


@pytest.fixture
def table() -> Iterator[Callable[[str], str]]:
    """Make a uniquely named table in the default connection from a CREATE ... AS query."""
    made: list[str] = []

    def make(query: str) -> str:
        name = f"t_{uuid.uuid4().hex[:10]}"
        duckdb.execute(f"CREATE TABLE {name} AS {query}")
        made.append(name)
        return name

    yield make
    for name in made:
        duckdb.execute(f"DROP TABLE IF EXISTS {name}")


def only(run: PipelineRun, block: str) -> Any:
    [value] = outputs(run, block).values()
    return value


def error_message(run: PipelineRun, uuid_: str) -> str:
    error = run.block_runs[uuid_].error
    assert error is not None, f"{uuid_} has no error"
    return error.message


def rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    assert isinstance(frame, pd.DataFrame)
    return frame.to_dict(orient="records")


# -- plain queries and output -----------------------------------------------------------------------
def test_query_reads_a_table_created_through_duckdb_sql(table: Callable[[str], str]) -> None:
    name = table("SELECT * FROM (VALUES (1, 'ann'), (2, 'bob')) v(id, name)")
    run = run_cells(f"%%block sql people\nSELECT id, name FROM {name} ORDER BY id")
    assert run.status == "completed"
    assert rows(only(run, "people")) == [{"id": 1, "name": "ann"}, {"id": 2, "name": "bob"}]


def test_output_is_a_dataframe_that_python_blocks_receive() -> None:
    run = run_cells(
        "%%block sql numbers\nSELECT range AS n FROM range(4)",
        "%%transformer total\n(type(numbers).__name__, int(numbers['n'].sum()))",
    )
    assert run.status == "completed"
    assert list(only(run, "numbers").columns) == ["n"]
    assert only(run, "total") == ("DataFrame", 6)


def test_empty_result_is_an_empty_dataframe_with_its_columns() -> None:
    run = run_cells("%%block sql nothing\nSELECT 1 AS a, 'x' AS b WHERE false")
    frame = only(run, "nothing")
    assert isinstance(frame, pd.DataFrame)
    assert frame.empty
    assert list(frame.columns) == ["a", "b"]


def test_record_output_of_a_sql_block_is_a_list_of_row_objects() -> None:
    run = run_cells("%%block sql people\nSELECT * FROM (VALUES (1, 'ann'), (2, 'bob')) v(id, name)")
    record = json.loads(run.to_json())
    [entry] = record["block_runs"]
    assert entry["output"] == [{"id": 1, "name": "ann"}, {"id": 2, "name": "bob"}]
    assert run.to_record()["block_runs"][0]["output"] == entry["output"]


# -- upstream outputs as tables -------------------------------------------------------------------
TABLE_OUTPUTS = {
    "pandas_dataframe": "pd.DataFrame({'id': [1, 2], 'name': ['ann', 'bob']})",
    "arrow_table": "pa.table({'id': [1, 2], 'name': ['ann', 'bob']})",
    "polars_dataframe": "pl.DataFrame({'id': [1, 2], 'name': ['ann', 'bob']})",
    "list_of_dicts": "[{'id': 1, 'name': 'ann'}, {'id': 2, 'name': 'bob'}]",
    "tuple_of_dicts": "({'id': 1, 'name': 'ann'}, {'id': 2, 'name': 'bob'})",
}


@pytest.mark.parametrize("expression", TABLE_OUTPUTS.values(), ids=TABLE_OUTPUTS.keys())
def test_upstream_output_is_queryable_as_a_table_by_its_block_name(expression: str) -> None:
    run = run_cells(
        f"%%loader users\n{expression}",
        "%%block sql named\nSELECT name FROM users WHERE id = 2",
        namespace={"pd": pd, "pa": pa, "pl": pl},
    )
    assert run.status == "completed"
    assert run.block_runs["named"].upstream == ["users"]
    assert rows(only(run, "named")) == [{"name": "bob"}]


def test_dict_output_is_a_one_row_table() -> None:
    run = run_cells(
        "%%loader settings\n{'region': 'eu', 'limit': 3}",
        '%%block sql picked\nSELECT region, "limit" * 2 AS doubled FROM settings',
    )
    assert run.status == "completed"
    assert rows(only(run, "picked")) == [{"region": "eu", "doubled": 6}]


def test_several_upstream_tables_join() -> None:
    run = run_cells(
        "%%loader users\n[{'id': 1, 'name': 'ann'}, {'id': 2, 'name': 'bob'}]",
        "%%loader orders\npd.DataFrame({'user_id': [1, 1, 2], 'amount': [10, 20, 5]})",
        "%%block sql spend\n"
        "SELECT u.name, sum(o.amount) AS total\n"
        "FROM users u JOIN orders o ON o.user_id = u.id\n"
        "GROUP BY u.name ORDER BY u.name",
        namespace={"pd": pd},
    )
    assert run.status == "completed"
    assert run.block_runs["spend"].upstream == ["users", "orders"]
    assert rows(only(run, "spend")) == [{"name": "ann", "total": 30}, {"name": "bob", "total": 5}]


def test_upstream_block_shadows_a_database_table_of_the_same_name() -> None:
    name = f"shadowed_{uuid.uuid4().hex[:8]}"
    duckdb.execute(f"CREATE TABLE {name} AS SELECT 'database' AS source")
    try:
        run = run_cells(
            f"%%loader {name}\n[{{'source': 'block'}}]",
            f"%%block sql reader\nSELECT source FROM {name}",
        )
        assert rows(only(run, "reader")) == [{"source": "block"}]
        assert duckdb.sql(f"SELECT source FROM {name}").fetchall() == [("database",)]
    finally:
        duckdb.execute(f"DROP TABLE IF EXISTS {name}")


def test_upstream_tables_are_not_left_in_the_default_connection() -> None:
    name = f"leak_{uuid.uuid4().hex[:8]}"
    run = run_cells(f"%%loader {name}\n[{{'a': 1}}]", f"%%block sql reader\nSELECT a FROM {name}")
    assert run.status == "completed"
    with pytest.raises(duckdb.CatalogException):
        duckdb.sql(f"SELECT * FROM {name}").fetchall()


@pytest.mark.parametrize(
    ("expression", "type_name"), [("3", "int"), ("[1, 2]", "list"), ("'text'", "str")]
)
def test_non_table_upstream_used_as_a_table_fails_naming_the_block(
    expression: str, type_name: str
) -> None:
    run = run_cells(
        f"%%loader count_n\n{expression}",
        "%%block sql reader\nSELECT * FROM count_n",
        "%%transformer after\nlen(reader)",
    )
    assert statuses(run) == {
        "count_n": "completed",
        "reader": "failed",
        "after": "upstream_failed",
    }
    message = error_message(run, "reader")
    assert "'count_n'" in message
    assert type_name in message
    assert "table" in message


def test_each_instance_sees_its_own_item_as_the_table(executor: str) -> None:
    items = ", ".join(f"[{{'k': {i}, 'v': {i * i}}}]" for i in range(16))
    run = run_cells(
        f"%%loader batches --dynamic\n[{items}]",
        "%%block sql squared\nSELECT k, v FROM batches",
        executor=executor,
    )
    assert run.status == "completed"
    got = {uuid_: rows(frame) for uuid_, frame in outputs(run, "squared").items()}
    assert got == {f"squared:{i}": [{"k": i, "v": i * i}] for i in range(16)}


# -- templates and bind parameters -----------------------------------------------------------------
def test_item_that_looks_like_sql_injection_is_stored_and_returned_as_text(
    table: Callable[[str], str], executor: str
) -> None:
    users = table("SELECT 'seed' AS name")
    evil = INJECTION.format(table=users)
    run = run_cells(
        f"%%loader names --dynamic\n[{evil!r}, 'plain']",
        "%%block sql stored\nINSERT INTO {{ users_table | ident }} (name) VALUES ({{ names }})"
        " RETURNING name",
        namespace={"users_table": users},
        executor=executor,
    )
    assert run.status == "completed"
    assert rows(outputs(run, "stored")["stored:0"]) == [{"name": evil}]
    survived = duckdb.sql(f"SELECT name FROM {users} ORDER BY name").fetchall()
    assert sorted(survived) == sorted([("seed",), ("plain",), (evil,)])


def test_injection_text_compares_as_a_plain_string(table: Callable[[str], str]) -> None:
    users = table("SELECT 1 AS id, 'ann' AS name")
    evil = INJECTION.format(table=users)
    run = run_cells(
        f"%%loader who\n{evil!r}",
        f"%%block sql found\nSELECT count(*) AS n, {{{{ who }}}} AS asked FROM {users}"
        " WHERE name = {{ who }}",
    )
    assert run.status == "completed"
    assert rows(only(run, "found")) == [{"n": 0, "asked": evil}]
    assert duckdb.sql(f"SELECT count(*) FROM {users}").fetchall() == [(1,)]


def test_rendered_sql_holds_placeholders_not_values() -> None:
    run = run_cells(
        "%%loader secret\n'hunter2-value'",
        "%%block sql broken\nSELECT {{ secret }} AS s FROM no_such_table_anywhere",
    )
    message = error_message(run, "broken")
    assert "SELECT ? AS s FROM no_such_table_anywhere" in message
    assert "hunter2-value" not in message


def test_values_of_several_types_are_bound() -> None:
    run = run_cells(
        "%%block sql typed\n"
        "SELECT {{ n }} + 1 AS n, {{ f }} * 2 AS f, {{ none }} IS NULL AS is_null,"
        " {{ flag }} AS flag, list_sum({{ xs }}) AS total",
        namespace={"n": 41, "f": 1.25, "none": None, "flag": True, "xs": [1, 2, 3]},
    )
    assert run.status == "completed"
    assert rows(only(run, "typed")) == [
        {"n": 42, "f": 2.5, "is_null": True, "flag": True, "total": 6}
    ]


def test_template_sees_notebook_globals_upstream_outputs_and_context() -> None:
    run = run_cells(
        "%%loader threshold\n2",
        "%%block sql seen\n"
        "SELECT {{ threshold }} AS threshold, {{ unit }} AS unit, {{ context.uuid }} AS uuid,"
        " {{ context.block }} AS block, {{ context.params.region }} AS region",
        namespace={"unit": "kg"},
        params={"region": "eu"},
    )
    assert run.status == "completed"
    assert rows(only(run, "seen")) == [
        {"threshold": 2, "unit": "kg", "uuid": "seen", "block": "seen", "region": "eu"}
    ]


def test_context_uuid_in_a_template_is_the_instance_uuid(executor: str) -> None:
    run = run_cells(
        "%%loader users --dynamic\n"
        "[[{'id': 1}, {'id': 2}], [{'block_uuid': 'for_ann'}, {'block_uuid': 'for_bob'}]]",
        "%%block sql tagged\nSELECT {{ users.id }} AS id, {{ context.uuid }} AS uuid",
        executor=executor,
    )
    got = {k: rows(v) for k, v in outputs(run, "tagged").items()}
    assert got == {
        "tagged:for_ann": [{"id": 1, "uuid": "tagged:for_ann"}],
        "tagged:for_bob": [{"id": 2, "uuid": "tagged:for_bob"}],
    }


def test_template_braces_inside_a_string_literal_stay_text() -> None:
    run = run_cells(
        "%%loader users\n[{'id': 1}]",
        "%%block sql literal\nSELECT '{{ users }}' AS a, 'it''s {{ x }}' AS b, {{ y }} AS c",
        namespace={"y": 7},
    )
    assert run.status == "completed"
    assert run.block_runs["literal"].upstream == []
    assert rows(only(run, "literal")) == [{"a": "{{ users }}", "b": "it's {{ x }}", "c": 7}]


def test_apostrophe_in_a_line_comment_does_not_hide_a_template_value() -> None:
    run = run_cells(
        "%%block sql commented\n-- the user's id\nSELECT {{ y }} AS c", namespace={"y": 3}
    )
    assert rows(only(run, "commented")) == [{"c": 3}]


@pytest.mark.parametrize(
    "sql",
    ["/* the users' names */\nSELECT {{ who }} AS n", 'SELECT 1 AS "it\'s", {{ who }} AS n'],
    ids=["block_comment", "quoted_identifier"],
)
def test_template_value_after_an_apostrophe_outside_literals_is_a_bind_parameter(
    sql: str,
) -> None:
    run = run_cells(f"%%block sql named\n{sql}", namespace={"who": "bob"})
    assert run.status == "completed"
    assert only(run, "named")["n"].tolist() == ["bob"]


def test_like_pattern_built_by_concatenating_a_bound_value(executor: str) -> None:
    run = run_cells(
        "%%loader names\n[{'name': 'alice'}, {'name': 'bob'}, {'name': 'malice'}]",
        "%%loader patterns --dynamic\n['lic', 'o', \"%'\"]",
        "%%block sql matching\n"
        "SELECT name FROM names WHERE name LIKE '%' || {{ patterns }} || '%' ORDER BY name",
        executor=executor,
    )
    assert run.status == "completed"
    assert {k: v["name"].tolist() for k, v in outputs(run, "matching").items()} == {
        "matching:0": ["alice", "malice"],
        "matching:1": ["bob"],
        "matching:2": [],
    }


def test_jinja_control_structures_render_with_bound_values() -> None:
    run = run_cells(
        "%%block sql filtered\n"
        "SELECT * FROM range(10) t(n) WHERE true\n"
        "{% if low is not none %}AND n >= {{ low }}{% endif %}\n"
        "{% for bad in excluded %}AND n <> {{ bad }} {% endfor %}\n"
        "ORDER BY n",
        namespace={"low": 6, "excluded": [7, 9]},
    )
    assert run.status == "completed"
    assert only(run, "filtered")["n"].tolist() == [6, 8]


def test_undefined_attribute_in_a_template_fails_the_instance_clearly() -> None:
    run = run_cells("%%block sql missing\nSELECT {{ nowhere.field }} AS a")
    assert statuses(run) == {"missing": "failed"}
    message = error_message(run, "missing")
    assert "nowhere" in message
    assert "undefined" in message


def test_undefined_name_in_a_template_fails_with_a_message_naming_it() -> None:
    run = run_cells("%%block sql missing\nSELECT {{ nowhere }} AS a")
    assert statuses(run) == {"missing": "failed"}
    message = error_message(run, "missing")
    assert "nowhere" in message
    assert "undefined" in message.replace("StrictUndefined", "")


# -- identifiers ----------------------------------------------------------------------------------
def test_ident_filter_quotes_a_table_name(table: Callable[[str], str]) -> None:
    odd = f'odd "name" {uuid.uuid4().hex[:8]}'
    quoted = '"' + odd.replace('"', '""') + '"'
    duckdb.execute(f"CREATE TABLE {quoted} AS SELECT 5 AS v")
    try:
        run = run_cells(
            "%%block sql picked\nSELECT v, {{ t }} AS t FROM {{ t | ident }}", namespace={"t": odd}
        )
        assert rows(only(run, "picked")) == [{"v": 5, "t": odd}]
    finally:
        duckdb.execute(f"DROP TABLE IF EXISTS {quoted}")


def test_ident_filter_quotes_each_part_of_a_dotted_name() -> None:
    schema = f"s_{uuid.uuid4().hex[:8]}"
    duckdb.execute(f"CREATE SCHEMA {schema}")
    try:
        duckdb.execute(f"CREATE TABLE {schema}.things AS SELECT 1 AS id")
        run = run_cells(
            "%%block sql picked\nSELECT id FROM {{ name | ident }}",
            namespace={"name": f"{schema}.things"},
        )
        assert rows(only(run, "picked")) == [{"id": 1}]
    finally:
        duckdb.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_ident_filter_cannot_be_used_to_inject(table: Callable[[str], str]) -> None:
    users = table("SELECT 1 AS id")
    run = run_cells(
        "%%block sql picked\nSELECT * FROM {{ name | ident }}",
        namespace={"name": f'{users}"; DROP TABLE {users}; --'},
    )
    assert statuses(run) == {"picked": "failed"}
    assert "Catalog" in error_message(run, "picked")
    assert duckdb.sql(f"SELECT count(*) FROM {users}").fetchall() == [(1,)]


def test_table_name_without_ident_is_a_value_not_an_identifier(
    table: Callable[[str], str],
) -> None:
    users = table("SELECT 1 AS id")
    run = run_cells("%%block sql picked\nSELECT * FROM {{ name }}", namespace={"name": users})
    assert statuses(run) == {"picked": "failed"}
    message = error_message(run, "picked")
    assert "SELECT * FROM ?" in message


def test_ident_of_an_empty_name_fails_the_instance() -> None:
    run = run_cells("%%block sql picked\nSELECT 1 FROM {{ name | ident }}", namespace={"name": ""})
    assert statuses(run) == {"picked": "failed"}
    assert "identifier" in error_message(run, "picked")


# -- dynamic SQL ----------------------------------------------------------------------------------
def test_dynamic_sql_block_fans_out_one_dict_per_row(executor: str) -> None:
    run = run_cells(
        "%%block sql users --dynamic\n"
        "SELECT * FROM (VALUES (1, 'ann'), (2, 'bob'), (3, 'cy')) v(id, name) ORDER BY id",
        "%%transformer greet\n(type(users).__name__, f\"hi {users['name']}\", context.uuid)",
        executor=executor,
    )
    assert run.status == "completed"
    assert outputs(run, "greet") == {
        "greet:0": ("dict", "hi ann", "greet:0"),
        "greet:1": ("dict", "hi bob", "greet:1"),
        "greet:2": ("dict", "hi cy", "greet:2"),
    }
    record = {entry["uuid"]: entry for entry in json.loads(run.to_json())["block_runs"]}
    assert record["users"]["output"] == [
        {"id": 1, "name": "ann"},
        {"id": 2, "name": "bob"},
        {"id": 3, "name": "cy"},
    ]
    assert record["greet:1"]["lineage"] == [["users", "1"]]


def test_dynamic_sql_block_with_no_rows_makes_no_children(executor: str) -> None:
    run = run_cells(
        "%%block sql users --dynamic\nSELECT 1 AS id WHERE false",
        "%%transformer greet\nusers['id']",
        "%%transformer collected --reduce\ngreet",
        "%%transformer summary\ncollected",
        executor=executor,
    )
    assert run.status == "completed"
    assert outputs(run, "greet") == {}
    assert outputs(run, "collected") == {}
    assert outputs(run, "summary") == {"summary": []}


def test_sql_child_runs_once_per_item_with_the_item_in_its_template(
    table: Callable[[str], str], executor: str
) -> None:
    orders = table("SELECT * FROM (VALUES (1, 10), (1, 20), (2, 5), (3, 7)) v(user_id, amount)")
    run = run_cells(
        "%%loader users --dynamic\n[{'id': 1, 'name': 'ann'}, {'id': 2, 'name': 'bob'}]",
        f"%%block sql spend\nSELECT {{{{ users.name }}}} AS name, sum(amount) AS total\n"
        f"FROM {orders} WHERE user_id = {{{{ users.id }}}}",
        executor=executor,
    )
    assert run.status == "completed"
    assert run.block_runs["spend:0"].upstream == ["users"]
    got = {k: rows(v) for k, v in outputs(run, "spend").items()}
    assert got == {
        "spend:0": [{"name": "ann", "total": 30}],
        "spend:1": [{"name": "bob", "total": 5}],
    }


def test_sql_child_can_query_its_dict_item_as_a_one_row_table(executor: str) -> None:
    run = run_cells(
        "%%loader users --dynamic\n[{'id': 1, 'name': 'ann'}, {'id': 2, 'name': 'bob'}]",
        "%%block sql shout\nSELECT id, upper(name) AS name FROM users",
        executor=executor,
    )
    got = {k: rows(v) for k, v in outputs(run, "shout").items()}
    assert got == {"shout:0": [{"id": 1, "name": "ANN"}], "shout:1": [{"id": 2, "name": "BOB"}]}


def test_sql_child_of_a_dynamic_sql_block_gets_each_row(executor: str) -> None:
    run = run_cells(
        "%%block sql users --dynamic\nSELECT * FROM (VALUES (1, 'ann'), (2, 'bob')) v(id, name)",
        "%%block sql per_user\nSELECT {{ users.id }} * 100 AS id, {{ users.name }} AS name",
        "%%block sql as_table\nSELECT name FROM users",
        executor=executor,
    )
    assert run.status == "completed"
    assert {k: rows(v) for k, v in outputs(run, "per_user").items()} == {
        "per_user:0": [{"id": 100, "name": "ann"}],
        "per_user:1": [{"id": 200, "name": "bob"}],
    }
    assert {k: rows(v) for k, v in outputs(run, "as_table").items()} == {
        "as_table:0": [{"name": "ann"}],
        "as_table:1": [{"name": "bob"}],
    }


def test_dynamic_sql_child_nests_with_uuids_and_routing(
    table: Callable[[str], str], executor: str
) -> None:
    orders = table(
        "SELECT * FROM (VALUES (1, 'eu', 10), (2, 'us', 20), (3, 'eu', 30)) v(id, region, amount)"
    )
    run = run_cells(
        "%%loader regions --dynamic\n['eu', 'us', 'none']",
        f"%%block sql dynamic_sql_loader --dynamic\n"
        f"SELECT id, region, amount FROM {orders} WHERE region = {{{{ regions }}}} ORDER BY id",
        "%%transformer per_order\n"
        "(regions, dynamic_sql_loader['region'], dynamic_sql_loader['id'], context.uuid)",
        "%%block sql per_order_sql\n"
        "SELECT {{ regions }} AS region, {{ dynamic_sql_loader.amount }} AS amount,"
        " {{ context.uuid }} AS uuid",
        "%%transformer amount --reduce\nint(per_order_sql['amount'][0])",
        "%%transformer per_region\n(regions, sum(amount))",
        executor=executor,
    )
    assert run.status == "completed"
    assert outputs(run, "per_order") == {
        "per_order:0:0": ("eu", "eu", 1, "per_order:0:0"),
        "per_order:0:1": ("eu", "eu", 3, "per_order:0:1"),
        "per_order:1:0": ("us", "us", 2, "per_order:1:0"),
    }
    assert {k: rows(v) for k, v in outputs(run, "per_order_sql").items()} == {
        "per_order_sql:0:0": [{"region": "eu", "amount": 10, "uuid": "per_order_sql:0:0"}],
        "per_order_sql:0:1": [{"region": "eu", "amount": 30, "uuid": "per_order_sql:0:1"}],
        "per_order_sql:1:0": [{"region": "us", "amount": 20, "uuid": "per_order_sql:1:0"}],
    }
    assert outputs(run, "per_region") == {
        "per_region:0": ("eu", 40),
        "per_region:1": ("us", 20),
        "per_region:2": ("none", 0),
    }
    record = {entry["uuid"]: entry for entry in run.to_record()["block_runs"]}
    assert record["per_order_sql:0:1"]["lineage"] == [["regions", "0"], ["dynamic_sql_loader", "1"]]
    assert record["per_order_sql:0:1"]["upstream"] == ["regions", "dynamic_sql_loader"]
    assert record["dynamic_sql_loader:1"]["output"] == [{"id": 2, "region": "us", "amount": 20}]


# -- errors ---------------------------------------------------------------------------------------
def test_database_error_fails_only_that_instance_with_block_uuid_sql_and_message(
    executor: str,
) -> None:
    run = run_cells(
        "%%loader sizes --dynamic\n['2', 'x', '1']",
        "%%block sql dynamic_sql_loader --dynamic\n"
        "SELECT j FROM range(CAST({{ sizes }} AS INTEGER)) t(j)",
        "%%transformer per_row\n(dynamic_sql_loader['j'], context.uuid)",
        executor=executor,
    )
    assert run.status == "failed"
    assert statuses(run, "dynamic_sql_loader") == {
        "dynamic_sql_loader:0": "completed",
        "dynamic_sql_loader:1": "failed",
        "dynamic_sql_loader:2": "completed",
    }
    message = error_message(run, "dynamic_sql_loader:1")
    assert "'dynamic_sql_loader'" in message
    assert "'dynamic_sql_loader:1'" in message
    assert "SELECT j FROM range(CAST(? AS INTEGER)) t(j)" in message
    assert "Could not convert string 'x'" in message
    assert statuses(run, "per_row") == {
        "per_row:0:0": "completed",
        "per_row:0:1": "completed",
        "per_row:1": "upstream_failed",
        "per_row:2:0": "completed",
    }
    assert outputs(run, "per_row")["per_row:2:0"] == (0, "per_row:2:0")
    assert "dynamic_sql_loader:1" in error_message(run, "per_row:1")
    entry = next(e for e in run.to_record()["block_runs"] if e["uuid"] == "dynamic_sql_loader:1")
    assert entry["status"] == "failed"
    assert "Could not convert string 'x'" in entry["error"]["message"]


def test_unparsable_sql_runs_and_the_database_error_fails_the_instance() -> None:
    run = run_cells(
        "%%loader limit_n\n2",
        "%%block sql broken\nSELEC {{ limit_n }} FROM (((",
        "%%block sql explicit --upstream limit_n\nSELEC 1 FROM (((",
    )
    assert statuses(run) == {"limit_n": "completed", "broken": "failed", "explicit": "failed"}
    assert run.block_runs["broken"].upstream == ["limit_n"]
    assert run.block_runs["explicit"].upstream == ["limit_n"]
    message = error_message(run, "broken")
    assert "SELEC ? FROM (((" in message
    assert "syntax error" in message
