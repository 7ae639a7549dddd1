"""Dependencies of SQL blocks, read from the SQL with sqlglot and from Jinja (SPEC §1.3, §8 SQL)."""

from __future__ import annotations

import pytest
from helpers import run_cells, specs_from_cells, statuses

from mage_nb.engine import Pipeline
from mage_nb.engine.errors import PipelineError

BLOCKS = (
    "%%loader users\n[{'id': 1, 'name': 'ann'}]",
    "%%loader orders\n[{'user_id': 1, 'amount': 10}]",
    "%%loader regions\n[{'id': 1, 'region': 'eu'}]",
)


def upstream_of(sql: str, *, header: str = "%%block sql q") -> tuple[str, ...]:
    """The upstream of a SQL block placed below the blocks users, orders and regions."""
    pipeline = Pipeline(specs_from_cells([*BLOCKS, f"{header}\n{sql}"]))
    return pipeline["q"].upstream


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM users", ("users",)),
        ('SELECT * FROM "users"', ("users",)),
        ("SELECT * FROM users u JOIN orders o ON o.user_id = u.id", ("users", "orders")),
        ("SELECT * FROM users LEFT JOIN orders USING (id) CROSS JOIN regions", None),
        ("WITH big AS (SELECT * FROM orders WHERE amount > 5) SELECT * FROM big", ("orders",)),
        ("SELECT * FROM (SELECT * FROM regions) r", ("regions",)),
        ("SELECT * FROM users WHERE id IN (SELECT user_id FROM orders)", ("users", "orders")),
        (
            "SELECT * FROM users u WHERE EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id)",
            ("users", "orders"),
        ),
        ("SELECT id FROM users UNION ALL SELECT user_id FROM orders", ("users", "orders")),
        ("FROM orders SELECT *", ("orders",)),
    ],
    ids=[
        "from",
        "quoted",
        "join",
        "three_joins",
        "cte_body",
        "subquery_in_from",
        "subquery_in_where",
        "exists",
        "union",
        "duckdb_from_first",
    ],
)
def test_table_references_that_name_blocks_are_edges(
    sql: str, expected: tuple[str, ...] | None
) -> None:
    assert upstream_of(sql) == (expected or ("users", "orders", "regions"))


def test_table_references_in_text_order() -> None:
    assert upstream_of("SELECT * FROM regions JOIN users USING (id) JOIN orders USING (id)") == (
        "regions",
        "users",
        "orders",
    )


def test_cte_named_like_a_block_shadows_it() -> None:
    assert upstream_of("WITH users AS (SELECT 1 AS id) SELECT * FROM users") == ()


def test_cte_reading_a_block_of_another_name_is_an_edge_to_that_block_only() -> None:
    sql = "WITH users AS (SELECT * FROM orders) SELECT * FROM users JOIN regions USING (id)"
    assert upstream_of(sql) == ("orders", "regions")


def test_names_that_are_not_table_references_are_not_edges() -> None:
    sql = "SELECT users, orders AS regions, 'FROM users' AS text FROM some_database_table"
    assert upstream_of(sql) == ()


def test_schema_qualified_table_is_a_database_table_not_a_block() -> None:
    assert upstream_of("SELECT * FROM main.users JOIN orders USING (id)") == ("orders",)


def test_tables_that_are_not_blocks_are_not_edges() -> None:
    assert upstream_of("SELECT * FROM warehouse_facts JOIN users USING (id)") == ("users",)


def test_template_variables_that_name_blocks_are_edges() -> None:
    sql = "SELECT {{ users.name }} AS name, {{ orders['amount'] }} AS amount, {{ other }} AS o"
    assert upstream_of(sql) == ("users", "orders")


def test_template_variable_in_a_control_structure_is_an_edge() -> None:
    sql = "SELECT 1 AS x {% for r in regions %}, {{ r.id }} AS id{% endfor %}"
    assert upstream_of(sql) == ("regions",)


def test_jinja_loop_variable_named_like_a_block_is_not_an_edge() -> None:
    sql = "SELECT 1 AS x {% for users in [1, 2] %}, {{ users }} AS n{% endfor %}"
    assert upstream_of(sql) == ()


def test_template_inside_a_string_literal_is_not_an_edge() -> None:
    assert upstream_of("SELECT '{{ users }}' AS a, '{% if orders %}x{% endif %}' AS b") == ()


def test_ident_argument_that_names_a_block_is_an_edge() -> None:
    assert upstream_of("SELECT * FROM {{ users | ident }}") == ("users",)


def test_table_and_template_references_to_one_block_make_one_edge() -> None:
    assert upstream_of("SELECT * FROM users WHERE id = {{ users[0].id }}") == ("users",)


def test_upstream_order_is_first_appearance_across_templates_and_tables() -> None:
    assert upstream_of("SELECT {{ users[0].name }} AS name, amount FROM orders") == (
        "users",
        "orders",
    )


def test_table_reference_beside_a_jinja_if_is_an_edge() -> None:
    sql = "SELECT name FROM users {% if only_ann %}WHERE name = 'ann'{% endif %}"
    assert upstream_of(sql) == ("users",)
    run = run_cells(*BLOCKS, f"%%block sql q\n{sql}", namespace={"only_ann": True})
    assert run.status == "completed"


def test_explicit_upstream_replaces_inference() -> None:
    assert upstream_of("SELECT * FROM users", header="%%block sql q --upstream regions") == (
        "regions",
    )


def test_sql_the_parser_cannot_read_takes_edges_from_templates() -> None:
    assert upstream_of("SELEC {{ orders.amount }} FROM users (((") == ("orders",)


def test_sql_the_parser_cannot_read_takes_edges_from_explicit_upstream() -> None:
    header = "%%block sql q --upstream users orders"
    assert upstream_of("SELEC * FROM (((", header=header) == ("users", "orders")


def test_inferred_edges_order_the_run_and_pass_outputs() -> None:
    run = run_cells(
        "%%block sql totals\nSELECT user_id, sum(amount) AS total FROM orders GROUP BY user_id",
        "%%block sql report\n"
        "WITH t AS (SELECT * FROM totals)\n"
        "SELECT u.name, t.total FROM users u JOIN t ON t.user_id = u.id",
        *BLOCKS,
    )
    assert run.status == "completed"
    assert run.blocks.index("orders") < run.blocks.index("totals") < run.blocks.index("report")
    assert run.block_runs["report"].upstream == ["totals", "users"]
    [frame] = run.outputs("report")
    assert frame.to_dict(orient="records") == [{"name": "ann", "total": 10}]


def test_self_reference_is_refused_before_anything_runs() -> None:
    with pytest.raises(PipelineError, match="'q'"):
        Pipeline(specs_from_cells(["%%block sql q\nSELECT * FROM q"]))


def test_cycle_between_sql_blocks_is_refused_naming_them() -> None:
    with pytest.raises(PipelineError, match="cycle") as info:
        Pipeline(
            specs_from_cells(["%%block sql a\nSELECT * FROM b", "%%block sql b\nSELECT * FROM a"])
        )
    assert "a" in str(info.value)
    assert "b" in str(info.value)


def test_template_syntax_error_is_refused_naming_the_block() -> None:
    with pytest.raises(PipelineError, match="'broken'") as info:
        Pipeline(specs_from_cells(["%%block sql broken\nSELECT {{ users. }}"]))
    assert "template" in str(info.value)


def test_unparsable_sql_is_not_refused_up_front() -> None:
    run = run_cells("%%loader users\n[{'id': 1}]", "%%block sql q\nSELEC {{ users }} (((")
    assert statuses(run) == {"users": "completed", "q": "failed"}
