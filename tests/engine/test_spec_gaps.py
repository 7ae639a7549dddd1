"""SPEC statements that no other test pinned down (an audit of SPEC.md against tests/).

Each test quotes the sentence of SPEC.md it checks. They run on the synchronous and the
thread executor (the ``executor`` fixture of tests/conftest.py) and stay fast.
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers import outputs, run_cells, statuses

# Two independent fan-outs: ``a`` (2 items) and ``b`` (3 items); ``d`` reads both.
PRODUCT = (
    "%%loader a --dynamic\n['x', 'y']",
    "%%loader b --dynamic\n[1, 2, 3]",
    "%%transformer d\nf'{a}{b}'",
)


def test_reduce_over_a_product_closes_the_innermost_fan_out(executor: str) -> None:
    """SPEC §2.6: "`--reduce [STRATEGY]` on a block inside a fan-out closes the **innermost**
    lineage element: its downstream get one instance per remaining lineage ... receiving the
    combined outputs in instance order", with §2.3: "two independent fan-outs give the
    **Cartesian product**, lineage elements in upstream order" (so ``b`` is innermost), and
    "`context.reduced_from` lists the uuids of the instances whose outputs it received, in
    order"."""
    run = run_cells(
        *PRODUCT,
        "%%transformer r --reduce\nd",
        "%%transformer c\n(r, context.reduced_from, context.index, context.lineage)",
        executor=executor,
    )
    assert run.status == "completed"
    assert list(statuses(run, "r")) == ["r:0:0", "r:0:1", "r:0:2", "r:1:0", "r:1:1", "r:1:2"]
    assert outputs(run, "c") == {
        "c:0": (["x1", "x2", "x3"], ["r:0:0", "r:0:1", "r:0:2"], (0,), [("a", "0")]),
        "c:1": (["y1", "y2", "y3"], ["r:1:0", "r:1:1", "r:1:2"], (1,), [("a", "1")]),
    }


def test_second_reduce_over_a_product_closes_the_outer_fan_out(executor: str) -> None:
    """SPEC §2.6: "A second reduce further down closes the next level" — after both fan-outs
    of a product are closed the consumer is "a static one at the top level"."""
    run = run_cells(
        *PRODUCT,
        "%%transformer r --reduce\nd",
        "%%transformer joined --reduce\n'+'.join(r)",
        "%%transformer top\n(joined, context.reduced_from, context.lineage)",
        executor=executor,
    )
    assert run.status == "completed"
    assert list(statuses(run, "joined")) == ["joined:0", "joined:1"]
    assert outputs(run, "top") == {
        "top": (["x1+x2+x3", "y1+y2+y3"], ["joined:0", "joined:1"], []),
    }


def test_empty_inner_fan_out_of_a_product_reduces_to_empty_per_outer_item(
    executor: str,
) -> None:
    """SPEC §2.5: "Zero items make zero instances downstream, at once (no waiting, no phantom
    instance). A reduce over zero instances passes `[]` (or the strategy's empty value) on. The
    run completes." — here the empty fan-out is the inner one of a product, so each item of the
    outer fan-out gets its own empty reduce."""
    run = run_cells(
        "%%loader a --dynamic\n['x', 'y']",
        "%%loader b --dynamic\n[]",
        "%%transformer d\nf'{a}{b}'",
        "%%transformer r --reduce\nd",
        "%%transformer total --reduce count\nd",
        "%%transformer c\n(r, total, context.reduced_from)",
        executor=executor,
    )
    assert run.status == "completed"
    assert statuses(run, "d") == {}
    assert statuses(run, "r") == {}
    assert outputs(run, "c") == {"c:0": ([], 0, []), "c:1": ([], 0, [])}


def test_metadata_of_a_closed_fan_out_is_not_visible_after_the_reduce(executor: str) -> None:
    """SPEC §2.4: "An item's metadata dict ... is visible to every descendant in its lineage"
    — and §2.6: a reduce closes the innermost lineage element, so below the reduce only the
    metadata of the fan-outs that remain open is seen (in `context.metadata` and as function
    keywords)."""
    run = run_cells(
        "%%loader outer --dynamic\n"
        "[['p', 'q'], [{'region': 'eu', 'k': 'outer'}, {'region': 'us', 'k': 'outer'}]]",
        "%%transformer inner --dynamic\n"
        "[[outer + '0', outer + '1'], [{'tier': 'gold', 'k': 'inner'}, {'tier': 'x', 'k': 'inner'}]]",
        "%%transformer leaf\n(inner, dict(context.metadata))",
        "%%transformer r --reduce\nleaf",
        "%%transformer c\n(r, dict(context.metadata))",
        "%%transformer fn_style\n@transformer\ndef f(r, **kwargs):\n"
        "    return {k: kwargs[k] for k in ('region', 'tier', 'k') if k in kwargs}\n",
        executor=executor,
    )
    assert run.status == "completed"
    # Inside the inner fan-out both levels are visible, nearer wins on "k".
    assert outputs(run, "leaf")["leaf:1:0"] == (
        "q0",
        {"region": "us", "tier": "gold", "k": "inner"},
    )
    c = outputs(run, "c")
    assert c["c:0"][1] == {"region": "eu", "k": "outer"}
    assert c["c:1"][1] == {"region": "us", "k": "outer"}
    assert outputs(run, "fn_style") == {
        "fn_style:0": {"region": "eu", "k": "outer"},
        "fn_style:1": {"region": "us", "k": "outer"},
    }


def test_reduced_from_and_failed_are_bound_in_instances_outside_any_reduce(executor: str) -> None:
    """SPEC §2.8: "Bound in every instance: `uuid`, `block`, `index`, `lineage`, `metadata`,
    `params`, `reduced_from`, `failed`, `attempt`" — an instance that reduced nothing has
    empty `reduced_from` and `failed`."""
    run = run_cells(
        "%%loader a\n(list(context.reduced_from), list(context.failed))",
        "%%loader items --dynamic\n[1, 2]",
        "%%transformer child\n(items, list(context.reduced_from), list(context.failed))",
        executor=executor,
    )
    assert outputs(run, "a") == {"a": ([], [])}
    assert outputs(run, "child") == {"child:0": (1, [], []), "child:1": (2, [], [])}


def test_partial_count_and_named_callable_see_only_the_completed_instances(
    executor: str,
) -> None:
    """SPEC §2.6: with `--reduce-policy partial` the consumer "runs on the successful outputs
    and `context.failed` lists the uuids of the group's instances that did not complete"; §8:
    "`count` counts the instances reduced"; a named callable is "called with the ordered list
    of outputs"."""
    run = run_cells(
        "%%loader items --dynamic\n[1, 2, 3, 4, 5]",
        "%%transformer counted --reduce count --reduce-policy partial\n"
        "if items % 2 == 0:\n    raise ValueError('even')\nitems",
        "%%transformer called --reduce keep --reduce-policy partial\n"
        "if items % 2 == 0:\n    raise ValueError('even')\nitems * 10",
        "%%transformer consumer\n(counted, context.reduced_from, context.failed)",
        "%%transformer consumer2\ncalled",
        namespace={"keep": lambda values: ("kept", list(values))},
        executor=executor,
    )
    assert outputs(run, "consumer") == {
        "consumer": (3, ["counted:0", "counted:2", "counted:4"], ["counted:1", "counted:3"])
    }
    assert outputs(run, "consumer2") == {"consumer2": ("kept", [10, 30, 50])}
    assert run.status == "failed"


@pytest.mark.parametrize(
    ("body", "items"),
    [
        ("[[1, 2], [{'block_uuid': 'a'}, {'block_uuid': 'b'}]]", [1, 2]),
        ("(('p', 'q'), ({'tier': 1}, {'tier': 2}))", ["p", "q"]),
        ("import mage_nb\nmage_nb.Fanout(['x', 'y'], metadata=[{'m': 1}, {'m': 2}])", ["x", "y"]),
        ("import pandas as pd\npd.DataFrame({'x': [1, 2]})", [{"x": 1}, {"x": 2}]),
        ("range(3)", [0, 1, 2]),
    ],
    ids=["items-metadata-lists", "items-metadata-tuples", "fanout", "dataframe", "range"],
)
def test_record_output_of_a_dynamic_block_is_its_item_values(
    body: str, items: list[Any], executor: str
) -> None:
    """SPEC §8 Run record: "a dynamic instance's `output` is the list of its item values" —
    for every output form of §2.1, not only generators: the metadata half of `[items,
    metadata]` or of a `Fanout` is not part of it."""
    run = run_cells(f"%%loader src --dynamic\n{body}", "%%transformer c\nsrc", executor=executor)
    assert run.status == "completed"
    record = {r["uuid"]: r for r in run.to_record()["block_runs"]}
    assert record["src"]["output"] == items
    assert [entry["output"] for uuid, entry in record.items() if uuid != "src"] == items


def test_non_string_and_colliding_suffixes_become_unique_strings(executor: str) -> None:
    """SPEC §2.2: "A suffix is the item's metadata `block_uuid` if it has one, else the item's
    index (0-based). Characters outside `[A-Za-z0-9_.-]` become `_`. Uuids are unique: a suffix
    that repeats an earlier one in the same fan-out gets `_<index>` appended, and the run
    record warns." §8: "`lineage` is a list of `[block NAME, suffix]` with the suffix always a
    string". Here an int `block_uuid` and a name that equals a later item's index."""
    run = run_cells(
        "%%loader src --dynamic\n[['a', 'b', 'c'], [{'block_uuid': 7}, {'block_uuid': '2'}, {}]]",
        "%%transformer c\nsrc.upper()",
        executor=executor,
    )
    assert run.status == "completed"
    assert outputs(run, "c") == {"c:7": "A", "c:2": "B", "c:2_2": "C"}
    record = run.to_record()
    lineages = {r["uuid"]: r["lineage"] for r in record["block_runs"]}
    assert lineages["c:7"] == [["src", "7"]]
    assert lineages["c:2_2"] == [["src", "2_2"]]
    assert len(record["warnings"]) == 1
    assert "'2_2'" in record["warnings"][0]


def test_concat_reduces_polars_dataframes_in_instance_order(executor: str) -> None:
    """SPEC §2.6: "`concat`: DataFrames / Arrow tables concatenated into one" — §2.1 counts
    "a pandas or polars DataFrame" as a DataFrame; only pandas and Arrow were tested."""
    pl = pytest.importorskip("polars")
    run = run_cells(
        "%%loader src --dynamic\n[1, 2, 3]",
        "%%transformer part --reduce concat\n"
        "import time\ntime.sleep(0.01 * (3 - src))\npl.DataFrame({'x': [src, src * 10]})",
        "%%transformer c\ncombined = part\n(type(combined).__module__.split('.')[0], "
        "combined['x'].to_list())",
        namespace={"pl": pl},
        executor=executor,
    )
    assert run.status == "completed"
    assert outputs(run, "c") == {"c": ("polars", [1, 10, 2, 20, 3, 30])}
    record = {r["uuid"]: r for r in run.to_record()["block_runs"]}
    assert record["part:0"]["output"] == [{"x": 1}, {"x": 10}]


def test_record_writes_a_missing_pandas_datetime_as_null() -> None:
    """SPEC §3.3: "`output` is JSON: ... DataFrames and Arrow tables as lists of row objects";
    §8: "NaN becomes `null`, datetimes ISO strings". A missing datetime (`pd.NaT`, in a
    DataFrame column or alone) is the datetime counterpart of NaN: `null`, not "NaT"."""
    pd = pytest.importorskip("pandas")
    run = run_cells(
        "%%loader frame\npd.DataFrame({'when': pd.to_datetime(['2024-01-02', None]),"
        " 'n': [1.0, float('nan')]})",
        "%%loader scalars\n{'nat': pd.NaT, 'nan': float('nan')}",
        namespace={"pd": pd},
    )
    record = {r["uuid"]: r for r in run.to_record()["block_runs"]}
    assert record["frame"]["output"] == [
        {"when": "2024-01-02T00:00:00", "n": 1.0},
        {"when": None, "n": None},
    ]
    assert record["scalars"]["output"] == {"nat": None, "nan": None}


def test_dynamic_block_index_is_the_innermost_item_of_a_product_and_none_after_a_reduce(
    executor: str,
) -> None:
    """SPEC §8 Function style: "`dynamic_block_index` is the index of the innermost item
    (`None` outside a fan-out)" — in a product of independent fan-outs the innermost element is
    the last upstream's; a consumer whose fan-out a reduce closed is outside every fan-out."""
    run = run_cells(
        "%%loader a --dynamic\n['x', 'y']",
        "%%loader b --dynamic\n[1, 2, 3]",
        "%%transformer d\n@transformer\ndef f(a, b, dynamic_block_index, block_uuid):\n"
        "    return (dynamic_block_index, block_uuid)\n",
        "%%transformer r --reduce\n@transformer\ndef g(a, dynamic_block_index):\n"
        "    return dynamic_block_index\n",
        "%%transformer c\n@transformer\ndef h(r, dynamic_block_index):\n"
        "    return (r, dynamic_block_index)\n",
        executor=executor,
    )
    assert run.status == "completed"
    assert outputs(run, "d") == {
        f"d:{i}:{j}": (j, f"d:{i}:{j}") for i in range(2) for j in range(3)
    }
    assert outputs(run, "c") == {"c": ([0, 1], None)}
