"""What a dynamic block may output, and how it fans out (SPEC §2.1, §8).

Every test runs on the synchronous, thread and process executors and on a real Dask cluster:
the items and their children's outputs must not depend on where the instances run.
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers import outputs, run_cells, statuses

import mage_nb


@pytest.fixture
def executor(any_executor: Any) -> Any:
    """Output forms fan out the same on every executor."""
    return any_executor


CHILD = "%%transformer child\n(src, context.uuid, dict(context.metadata))"


def fan(body: str, executor: Any = "sync", **kwargs: Any) -> mage_nb.PipelineRun:
    """Run a dynamic block ``src`` with ``body`` and one child that echoes its item."""
    return run_cells(f"%%loader src --dynamic\n{body}", CHILD, executor=executor, **kwargs)


def items(run: mage_nb.PipelineRun) -> list[Any]:
    assert run.status == "completed", [r.error for r in run.block_runs.values()]
    return [value for value, _, _ in outputs(run, "child").values()]


def children(run: mage_nb.PipelineRun) -> list[tuple[Any, str, dict[str, Any]]]:
    assert run.status == "completed", [r.error for r in run.block_runs.values()]
    return list(outputs(run, "child").values())


# -- explicit forms ----------------------------------------------------------------------------


def test_fanout_object_gives_items_and_metadata(executor: Any) -> None:
    run = fan(
        "import mage_nb\nmage_nb.Fanout(['x', 'y'], [{'block_uuid': 'first', 'k': 1}, {'k': 2}])",
        executor,
    )
    assert children(run) == [("x", "child:first", {"k": 1}), ("y", "child:1", {"k": 2})]


def test_fanout_object_without_metadata_gives_plain_items(executor: Any) -> None:
    run = fan("import mage_nb\nmage_nb.Fanout(('x', 'y'))", executor)
    assert children(run) == [("x", "child:0", {}), ("y", "child:1", {})]


def test_fanout_is_importable_from_mage_nb_without_the_engine(executor: Any) -> None:
    run = fan("from mage_nb import Fanout\nFanout(range(2))", executor)
    assert items(run) == [0, 1]


@pytest.mark.parametrize(
    "body",
    [
        "[['x', 'y'], [{'k': 1}, {'k': 2}]]",
        "(['x', 'y'], [{'k': 1}, {'k': 2}])",
        "[('x', 'y'), ({'k': 1}, {'k': 2})]",
        "(('x', 'y'), ({'k': 1}, {'k': 2}))",
    ],
)
def test_items_and_metadata_pair_in_lists_or_tuples(body: str, executor: Any) -> None:
    run = fan(body, executor)
    assert children(run) == [("x", "child:0", {"k": 1}), ("y", "child:1", {"k": 2})]


def test_items_and_metadata_pair_names_items_by_block_uuid(executor: Any) -> None:
    run = fan("[[1, 2], [{'block_uuid': 'for_user_1'}, {'block_uuid': 'for_user_2'}]]", executor)
    assert [uuid for _, uuid, _ in children(run)] == ["child:for_user_1", "child:for_user_2"]
    assert [meta for _, _, meta in children(run)] == [{}, {}]


def test_empty_items_and_metadata_pair_is_zero_items(executor: Any) -> None:
    run = run_cells(
        "%%loader src --dynamic\n[[], []]",
        CHILD,
        "%%exporter after --reduce\nchild",
        "%%exporter final\nafter",
        executor=executor,
    )
    assert run.status == "completed"
    assert list(run.instances("child")) == []
    assert outputs(run, "final") == {"final": []}
    assert run.block_runs["src"].output == []


def test_two_lists_whose_second_is_not_metadata_are_two_items(executor: Any) -> None:
    assert items(fan("[[1, 2], [3, 4]]", executor)) == [[1, 2], [3, 4]]


def test_two_lists_of_different_lengths_are_two_items(executor: Any) -> None:
    assert items(fan("[[1, 2, 3], [{'k': 1}]]", executor)) == [[1, 2, 3], [{"k": 1}]]


# -- sequences and iterables -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("[1, 2, 3]", [1, 2, 3]),
        ("(1, 2, 3)", [1, 2, 3]),
        ("['only']", ["only"]),
        ("[{'id': 1}, {'id': 2}]", [{"id": 1}, {"id": 2}]),
        ("[1, 2, [3, 4]]", [1, 2, [3, 4]]),
        ("range(4)", [0, 1, 2, 3]),
        ("range(2, 8, 3)", [2, 5]),
    ],
)
def test_list_tuple_and_range_elements_are_the_items(
    body: str, expected: list[Any], executor: Any
) -> None:
    run = fan(body, executor)
    assert items(run) == expected
    assert [uuid for _, uuid, _ in children(run)] == [f"child:{i}" for i in range(len(expected))]


def test_plain_list_items_have_no_metadata(executor: Any) -> None:
    assert [meta for _, _, meta in children(fan("['a', 'b']", executor))] == [{}, {}]


def test_set_gives_its_items_in_iteration_order(executor: Any) -> None:
    value = {"pear", "apple", "fig", "kiwi"}
    run = fan("fruit", executor, namespace={"fruit": value})
    assert items(run) == list(value)


def test_numpy_array_gives_one_item_per_element(executor: Any) -> None:
    run = fan("import numpy as np\nnp.array([10, 20, 30])", executor)
    assert [int(v) for v in items(run)] == [10, 20, 30]


def test_pandas_series_gives_its_values(executor: Any) -> None:
    run = fan("import pandas as pd\npd.Series([5, 6], index=['a', 'b'])", executor)
    assert [int(v) for v in items(run)] == [5, 6]


def test_pandas_dataframe_gives_one_dict_per_row(executor: Any) -> None:
    run = fan("import pandas as pd\npd.DataFrame({'id': [1, 2], 'name': ['ann', 'bob']})", executor)
    assert items(run) == [{"id": 1, "name": "ann"}, {"id": 2, "name": "bob"}]


def test_empty_dataframe_is_zero_items(executor: Any) -> None:
    run = fan("import pandas as pd\npd.DataFrame({'id': []})", executor)
    assert run.status == "completed"
    assert list(run.instances("child")) == []


def test_pyarrow_table_gives_one_dict_per_row(executor: Any) -> None:
    run = fan("import pyarrow as pa\npa.table({'id': [1, 2], 'name': ['ann', 'bob']})", executor)
    assert items(run) == [{"id": 1, "name": "ann"}, {"id": 2, "name": "bob"}]


def test_polars_dataframe_gives_one_dict_per_row(executor: Any) -> None:
    pytest.importorskip("polars")
    run = fan("import polars as pl\npl.DataFrame({'id': [1, 2], 'name': ['ann', 'bob']})", executor)
    assert items(run) == [{"id": 1, "name": "ann"}, {"id": 2, "name": "bob"}]


def test_generator_items_fan_out(executor: Any) -> None:
    run = fan("def gen():\n    for i in range(3):\n        yield i * 10\ngen()", executor)
    assert items(run) == [0, 10, 20]


def test_generator_expression_items_fan_out(executor: Any) -> None:
    assert items(fan("(c for c in 'abc')", executor)) == ["a", "b", "c"]


def test_iterator_items_fan_out(executor: Any) -> None:
    assert items(fan("iter([4, 5])", executor)) == [4, 5]
    assert items(fan("map(str, [1, 2])", executor)) == ["1", "2"]


def test_yielded_item_carries_its_name_and_metadata(executor: Any) -> None:
    body = (
        "import mage_nb\n"
        "def gen():\n"
        "    yield mage_nb.Item('ann', uuid='user_1', metadata={'tier': 'gold'})\n"
        "    yield 'bob'\n"
        "    yield mage_nb.Item('cy', metadata={'tier': 'free'})\n"
        "gen()"
    )
    run = fan(body, executor)
    assert children(run) == [
        ("ann", "child:user_1", {"tier": "gold"}),
        ("bob", "child:1", {}),
        ("cy", "child:2", {"tier": "free"}),
    ]


def test_empty_generator_is_zero_items(executor: Any) -> None:
    run = fan("def gen():\n    yield from ()\ngen()", executor)
    assert run.status == "completed"
    assert list(run.instances("child")) == []


def test_item_is_a_value_with_optional_uuid_and_metadata() -> None:
    item = mage_nb.Item(3)
    assert (item.value, item.uuid, item.metadata) == (3, None, None)
    named = mage_nb.Item("v", uuid="u", metadata={"k": 1})
    assert (named.value, named.uuid, named.metadata) == ("v", "u", {"k": 1})


def test_dynamic_block_output_is_the_list_of_its_item_values(executor: Any) -> None:
    run = fan("(i for i in range(3))", executor)
    assert run.block_runs["src"].output == [0, 1, 2]


# -- refused forms -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "type_name"),
    [
        ("{'a': 1}", "dict"),
        ("'abc'", "str"),
        ("b'abc'", "bytes"),
        ("None", "NoneType"),
        ("5", "int"),
        ("2.5", "float"),
    ],
)
def test_refused_form_fails_the_instance_naming_block_type_and_accepted_forms(
    body: str, type_name: str, executor: Any
) -> None:
    run = run_cells(
        f"%%loader src --dynamic\n{body}",
        CHILD,
        "%%loader other\n'still ran'",
        "%%transformer after_other\nother + '!'",
        executor=executor,
    )
    assert statuses(run, "src") == {"src": "failed"}
    error = run.block_runs["src"].error
    message = error.message
    assert "'src'" in message
    assert type_name in message
    assert "cannot be fanned out" in message
    for form in ("list", "tuple", "Fanout", "DataFrame", "Arrow", "generator"):
        assert form in message, form
    assert statuses(run, "child") == {"child": "upstream_failed"}
    assert run.block_runs["other"].output == "still ran"
    assert run.block_runs["after_other"].output == "still ran!"
    assert run.block_runs["after_other"].status == "completed"
    assert run.status == "failed"


def test_fanout_of_a_non_iterable_is_refused(executor: Any) -> None:
    run = fan("import mage_nb\nmage_nb.Fanout(5)", executor)
    assert run.block_runs["src"].status == "failed"
    message = run.block_runs["src"].error.message
    assert "'src'" in message
    assert "int" in message


# -- --max-children ----------------------------------------------------------------------------


@pytest.mark.parametrize("body", ["[1, 2, 3, 4]", "iter([1, 2, 3, 4])"])
def test_max_children_overflow_fails_naming_the_count_and_the_limit(
    body: str, executor: Any
) -> None:
    run = run_cells(
        f"%%loader src --dynamic --max-children 2\n{body}",
        CHILD,
        "%%loader other\n1",
        executor=executor,
    )
    assert statuses(run, "src") == {"src": "failed"}
    message = run.block_runs["src"].error.message
    assert "'src'" in message
    assert "3" in message or "4" in message
    assert "--max-children 2" in message
    assert statuses(run, "child") == {"child": "upstream_failed"}
    assert run.block_runs["other"].status == "completed"


def test_max_children_overflow_of_a_list_names_the_exact_count(executor: Any) -> None:
    run = run_cells(
        "%%loader src --dynamic --max-children 2 --on-overflow fail\n[1, 2, 3, 4]",
        executor=executor,
    )
    assert "4 items" in run.block_runs["src"].error.message


def test_max_children_at_the_limit_is_fine(executor: Any) -> None:
    run = run_cells("%%loader src --dynamic --max-children 3\n[1, 2, 3]", CHILD, executor=executor)
    assert items(run) == [1, 2, 3]
    assert run.warnings == []


@pytest.mark.parametrize("body", ["[1, 2, 3, 4]", "iter([1, 2, 3, 4])"])
def test_max_children_truncate_runs_the_first_n_and_warns(body: str, executor: Any) -> None:
    run = run_cells(
        f"%%loader src --dynamic --max-children 2 --on-overflow truncate\n{body}",
        CHILD,
        executor=executor,
    )
    assert items(run) == [1, 2]
    assert run.block_runs["src"].output == [1, 2]
    assert len(run.warnings) == 1
    warning = run.warnings[0]
    assert "'src'" in warning
    assert "--max-children 2" in warning
    assert "kept the first 2" in warning
