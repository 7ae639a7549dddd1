"""Dynamic expansion (SPEC §2.2–2.5, §2.6 reduce shape, §8 run record and uuids).

Every test runs on the synchronous, thread and process executors and on a real Dask cluster
(the ``executor`` fixture): results must not depend on where or in which order instances run
(SPEC §3.2).
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers import outputs, run_cells, statuses

from mage_nb.engine import DaskExecutor

USERS_WITH_NAMES = (
    "%%block loader users --dynamic\n"
    "[[{'id': 1}, {'id': 2}, {'id': 3}],\n"
    " [{'block_uuid': 'for_user_1'}, {'block_uuid': 'for_user_2'},"
    " {'block_uuid': 'for_user_3'}]]"
)


# -- §2.2 uuids and lineage ------------------------------------------------------------------
@pytest.fixture(params=["sync", "threads", "processes", "dask"])
def executor(request: pytest.FixtureRequest) -> Any:
    """Expansion is the same on every executor: worker processes and a real Dask cluster."""
    if request.param == "dask":
        return DaskExecutor(request.getfixturevalue("cluster").address)
    return str(request.param)


def test_instance_uuid_is_name_plus_metadata_block_uuid(executor: str) -> None:
    run = run_cells(
        USERS_WITH_NAMES,
        "%%transformer anonymize_user_data\n{'id': users['id'], 'name': 'anon'}",
        executor=executor,
    )
    assert run.status == "completed"
    assert outputs(run, "anonymize_user_data") == {
        "anonymize_user_data:for_user_1": {"id": 1, "name": "anon"},
        "anonymize_user_data:for_user_2": {"id": 2, "name": "anon"},
        "anonymize_user_data:for_user_3": {"id": 3, "name": "anon"},
    }
    child = run.block_runs["anonymize_user_data:for_user_2"]
    assert child.lineage == [("users", "for_user_2")]


def test_instance_uuid_is_name_plus_item_index_without_metadata(executor: str) -> None:
    run = run_cells(
        "%%block loader users --dynamic\n['ann', 'bob', 'cy']",
        "%%transformer greet\nf'hi {users}'",
        executor=executor,
    )
    assert outputs(run, "greet") == {"greet:0": "hi ann", "greet:1": "hi bob", "greet:2": "hi cy"}
    assert [r.lineage for r in run.instances("greet")] == [
        [("users", "0")],
        [("users", "1")],
        [("users", "2")],
    ]


def test_block_outside_any_fanout_has_one_instance_named_after_the_block(executor: str) -> None:
    run = run_cells(
        "%%loader source\n41",
        "%%transformer plus_one\n(source + 1, context.uuid, context.index, context.lineage)",
        executor=executor,
    )
    assert outputs(run, "plus_one") == {"plus_one": (42, "plus_one", (), [])}


def test_three_items_times_two_downstream_blocks_make_six_instances(executor: str) -> None:
    run = run_cells(
        "%%block loader items --dynamic\n[1, 2, 3]",
        "%%transformer double\nitems * 2",
        "%%transformer square\nitems ** 2",
        executor=executor,
    )
    assert run.status == "completed"
    assert outputs(run, "double") == {"double:0": 2, "double:1": 4, "double:2": 6}
    assert outputs(run, "square") == {"square:0": 1, "square:1": 4, "square:2": 9}
    dynamic_children = [r for r in run.instances() if r.block in ("double", "square")]
    assert len(dynamic_children) == 6
    assert len(run.block_runs) == 7  # plus the dynamic block's own single instance


def test_grandchildren_keep_the_lineage_suffix(executor: str) -> None:
    run = run_cells(
        USERS_WITH_NAMES,
        "%%transformer anonymize\nusers['id'] * 10",
        "%%transformer export\n(anonymize + 1, context.uuid, context.lineage, context.index)",
        executor=executor,
    )
    assert outputs(run, "export") == {
        "export:for_user_1": (11, "export:for_user_1", [("users", "for_user_1")], (0,)),
        "export:for_user_2": (21, "export:for_user_2", [("users", "for_user_2")], (1,)),
        "export:for_user_3": (31, "export:for_user_3", [("users", "for_user_3")], (2,)),
    }


def test_context_index_and_lineage_describe_the_instance(executor: str) -> None:
    run = run_cells(
        "%%block loader outer --dynamic\n[['p', 'q'], [{'block_uuid': 'P'}, {'block_uuid': 'Q'}]]",
        "%%block transformer inner --dynamic\n[outer + '0', outer + '1', outer + '2']",
        "%%transformer leaf\n(inner, context.uuid, context.block, context.index, context.lineage)",
        executor=executor,
    )
    assert outputs(run, "leaf")["leaf:Q:2"] == (
        "q2",
        "leaf:Q:2",
        "leaf",
        (1, 2),
        [("outer", "Q"), ("inner", "2")],
    )


# -- §2.3 which instances a block gets ---------------------------------------------------------
def test_static_upstream_output_is_passed_whole_to_every_instance(executor: str) -> None:
    run = run_cells(
        "%%loader config\n{'factor': 3, 'names': ['x', 'y']}",
        "%%block loader items --dynamic\n[1, 2]",
        "%%transformer scaled\n(items * config['factor'], config)",
        executor=executor,
    )
    config = {"factor": 3, "names": ["x", "y"]}
    assert outputs(run, "scaled") == {"scaled:0": (3, config), "scaled:1": (6, config)}
    assert [r.lineage for r in run.instances("scaled")] == [[("items", "0")], [("items", "1")]]


def test_siblings_of_one_parent_zip_by_item_never_a_product(executor: str) -> None:
    run = run_cells(
        "%%block loader parent --dynamic\n[1, 2, 3]",
        "%%transformer left\nparent * 10",
        "%%transformer right\nparent * 100",
        "%%transformer joined\n(left, right)",
        executor=executor,
    )
    assert run.status == "completed"
    assert outputs(run, "joined") == {
        "joined:0": (10, 100),
        "joined:1": (20, 200),
        "joined:2": (30, 300),
    }
    assert [r.lineage for r in run.instances("joined")] == [
        [("parent", "0")],
        [("parent", "1")],
        [("parent", "2")],
    ]


def test_independent_fanouts_give_the_product_in_upstream_order(executor: str) -> None:
    run = run_cells(
        "%%block loader A --dynamic\n[['x', 'y'], [{'block_uuid': 'a0'}, {'block_uuid': 'a1'}]]",
        "%%block loader B --dynamic\n[[1, 2, 3], [{'block_uuid': f'b{i}'} for i in range(3)]]",
        "%%transformer D\n(A, B)",
        executor=executor,
    )
    assert list(outputs(run, "D").items()) == [
        ("D:a0:b0", ("x", 1)),
        ("D:a0:b1", ("x", 2)),
        ("D:a0:b2", ("x", 3)),
        ("D:a1:b0", ("y", 1)),
        ("D:a1:b1", ("y", 2)),
        ("D:a1:b2", ("y", 3)),
    ]
    assert run.block_runs["D:a1:b2"].lineage == [("A", "a1"), ("B", "b2")]


def test_swapping_upstream_order_swaps_the_suffix_order(executor: str) -> None:
    run = run_cells(
        "%%block loader A --dynamic\n[['x', 'y'], [{'block_uuid': 'a0'}, {'block_uuid': 'a1'}]]",
        "%%block loader B --dynamic\n[[1, 2, 3], [{'block_uuid': f'b{i}'} for i in range(3)]]",
        "%%transformer D --upstream B A\n(A, B)",
        "%%transformer E\n(B, A)",
        executor=executor,
    )
    expected = [
        ("b0", "a0", ("x", 1)),
        ("b0", "a1", ("y", 1)),
        ("b1", "a0", ("x", 2)),
        ("b1", "a1", ("y", 2)),
        ("b2", "a0", ("x", 3)),
        ("b2", "a1", ("y", 3)),
    ]
    assert list(outputs(run, "D").items()) == [(f"D:{b}:{a}", v) for b, a, v in expected]
    assert list(outputs(run, "E").items()) == [(f"E:{b}:{a}", v[::-1]) for b, a, v in expected]
    assert run.block_runs["D:b2:a1"].lineage == [("B", "b2"), ("A", "a1")]


def test_dynamic_child_that_is_dynamic_nests_two_by_three(executor: str) -> None:
    run = run_cells(
        "%%block loader outer --dynamic\n['p', 'q']",
        "%%block transformer t --dynamic\n[f'{outer}{j}' for j in range(3)]",
        "%%transformer leaf\n(t, context.index)",
        executor=executor,
    )
    assert outputs(run, "t") == {"t:0": ["p0", "p1", "p2"], "t:1": ["q0", "q1", "q2"]}
    assert outputs(run, "leaf") == {
        f"leaf:{i}:{j}": (f"{'pq'[i]}{j}", (i, j)) for i in range(2) for j in range(3)
    }
    assert list(outputs(run, "leaf")) == [f"leaf:{i}:{j}" for i in range(2) for j in range(3)]
    assert run.block_runs["leaf:1:2"].lineage == [("outer", "1"), ("t", "2")]


def test_nested_instance_zips_with_its_ancestor(executor: str) -> None:
    run = run_cells(
        "%%block loader outer --dynamic\n[10, 20]",
        "%%block transformer inner --dynamic\n[outer + j for j in range(3)]",
        "%%transformer both\n(outer, inner)",
        executor=executor,
    )
    assert outputs(run, "both") == {
        f"both:{i}:{j}": ((i + 1) * 10, (i + 1) * 10 + j) for i in range(2) for j in range(3)
    }


def test_nested_instance_zips_with_a_sibling_of_its_ancestor(executor: str) -> None:
    run = run_cells(
        "%%block loader outer --dynamic\n[1, 2]",
        "%%transformer label\nf'label{outer}'",
        "%%block transformer inner --dynamic\n[outer * 100 + j for j in range(2)]",
        "%%transformer both\n(label, inner)",
        executor=executor,
    )
    assert outputs(run, "both") == {
        "both:0:0": ("label1", 100),
        "both:0:1": ("label1", 101),
        "both:1:0": ("label2", 200),
        "both:1:1": ("label2", 201),
    }


# -- §2.4 metadata --------------------------------------------------------------------------
def test_item_metadata_is_visible_to_every_descendant(executor: str) -> None:
    run = run_cells(
        "%%block loader users --dynamic\n"
        "[[1, 2], [{'block_uuid': 'u1', 'region': 'eu'}, {'block_uuid': 'u2', 'region': 'us'}]]",
        "%%transformer child\n(users, dict(context.metadata))",
        "%%transformer grandchild\n(child[0], dict(context.metadata))",
        "%%transformer fn_style\n"
        "@transformer\n"
        "def go(grandchild, region, block_uuid, dynamic_block_index):\n"
        "    return (grandchild[0], region, block_uuid, dynamic_block_index)\n",
        executor=executor,
    )
    assert outputs(run, "child") == {
        "child:u1": (1, {"region": "eu"}),
        "child:u2": (2, {"region": "us"}),
    }
    assert outputs(run, "grandchild") == {
        "grandchild:u1": (1, {"region": "eu"}),
        "grandchild:u2": (2, {"region": "us"}),
    }
    assert outputs(run, "fn_style") == {
        "fn_style:u1": (1, "eu", "fn_style:u1", 0),
        "fn_style:u2": (2, "us", "fn_style:u2", 1),
    }


def test_nearer_fanout_metadata_overrides_farther_on_the_same_key(executor: str) -> None:
    run = run_cells(
        "%%block loader outer --dynamic\n"
        "[['x', 'y'], [{'region': 'eu', 'tier': 1}, {'region': 'us', 'tier': 2}]]",
        "%%block transformer inner --dynamic\n[[outer + '1', outer + '2'], [{'tier': 10}, {}]]",
        "%%transformer leaf\n(inner, dict(context.metadata))",
        "%%transformer below_leaf\ndict(context.metadata) if leaf else None",
        executor=executor,
    )
    assert outputs(run, "leaf") == {
        "leaf:0:0": ("x1", {"region": "eu", "tier": 10}),
        "leaf:0:1": ("x2", {"region": "eu", "tier": 1}),
        "leaf:1:0": ("y1", {"region": "us", "tier": 10}),
        "leaf:1:1": ("y2", {"region": "us", "tier": 2}),
    }
    assert outputs(run, "below_leaf")["below_leaf:1:0"] == {"region": "us", "tier": 10}


def test_metadata_of_a_product_merges_in_lineage_order_later_wins(executor: str) -> None:
    run = run_cells(
        "%%block loader A --dynamic\n[['x'], [{'key': 'from_a', 'only_a': 1}]]",
        "%%block loader B --dynamic\n[['y'], [{'key': 'from_b', 'only_b': 2}]]",
        "%%transformer AB\n(A, B, dict(context.metadata))",
        "%%transformer BA --upstream B A\n(A, B, dict(context.metadata))",
        executor=executor,
    )
    assert outputs(run, "AB") == {"AB:0:0": ("x", "y", {"key": "from_b", "only_a": 1, "only_b": 2})}
    assert outputs(run, "BA") == {"BA:0:0": ("x", "y", {"key": "from_a", "only_a": 1, "only_b": 2})}


def test_block_uuid_is_not_part_of_the_visible_metadata(executor: str) -> None:
    run = run_cells(
        "%%block loader users --dynamic\n[[1], [{'block_uuid': 'one', 'k': 'v'}]]",
        "%%transformer child\n(users, dict(context.metadata))",
        executor=executor,
    )
    assert outputs(run, "child") == {"child:one": (1, {"k": "v"})}


# -- §2.2 / §8 suffix sanitising and de-duplication --------------------------------------------
def test_unsafe_characters_in_a_suffix_become_underscores(executor: str) -> None:
    run = run_cells(
        "%%block loader files --dynamic\n"
        "[[1, 2], [{'block_uuid': 'a b/c'}, {'block_uuid': 'ok.name-1_é'}]]",
        "%%transformer load\nfiles",
        executor=executor,
    )
    assert list(outputs(run, "load")) == ["load:a_b_c", "load:ok.name-1__"]
    assert run.block_runs["load:a_b_c"].lineage == [("files", "a_b_c")]
    assert run.warnings == []


def test_repeated_suffix_gets_its_index_appended_and_the_run_warns(executor: str) -> None:
    run = run_cells(
        "%%block loader files --dynamic\n"
        "[[1, 2, 3], [{'block_uuid': 'same'}, {'block_uuid': 'other'}, {'block_uuid': 'same'}]]",
        "%%transformer load\nfiles",
        executor=executor,
    )
    assert outputs(run, "load") == {"load:same": 1, "load:other": 2, "load:same_2": 3}
    assert run.status == "completed"
    assert len(run.warnings) == 1
    assert "same" in run.warnings[0]
    assert "same_2" in run.warnings[0]
    assert run.to_record()["warnings"] == run.warnings


def test_sanitised_names_that_collide_are_deduplicated(executor: str) -> None:
    run = run_cells(
        "%%block loader files --dynamic\n[[1, 2], [{'block_uuid': 'a b'}, {'block_uuid': 'a/b'}]]",
        "%%transformer load\nfiles",
        executor=executor,
    )
    assert list(outputs(run, "load")) == ["load:a_b", "load:a_b_1"]
    assert len(run.warnings) == 1


def test_deduplication_appends_the_index_again_if_that_is_taken(executor: str) -> None:
    run = run_cells(
        "%%block loader files --dynamic\n"
        "[[1, 2, 3], [{'block_uuid': 'x_2'}, {'block_uuid': 'x'}, {'block_uuid': 'x'}]]",
        "%%transformer load\nfiles",
        executor=executor,
    )
    uuids = list(outputs(run, "load"))
    assert uuids == ["load:x_2", "load:x", "load:x_2_2"]
    assert len(set(uuids)) == 3
    assert len(run.warnings) == 1


# -- §2.5 empty fan-out -----------------------------------------------------------------------
def test_empty_fanout_makes_zero_instances_and_the_run_completes(executor: str) -> None:
    run = run_cells(
        "%%block loader nothing --dynamic\n[]",
        "%%transformer child\nnothing",
        "%%transformer grandchild\nchild",
        "%%block transformer nested --dynamic\n[child]",
        executor=executor,
    )
    assert run.status == "completed"
    assert list(run.instances("child")) == []
    assert list(run.instances("grandchild")) == []
    assert list(run.instances("nested")) == []
    assert statuses(run) == {"nothing": "completed"}


def test_metadata_form_with_two_empty_lists_is_zero_items(executor: str) -> None:
    run = run_cells(
        "%%block loader nothing --dynamic\n[[], []]",
        "%%transformer child\nnothing",
        executor=executor,
    )
    assert run.status == "completed"
    assert list(run.instances("child")) == []


def test_reduce_over_an_empty_fanout_passes_an_empty_list(executor: str) -> None:
    run = run_cells(
        "%%block loader nothing --dynamic\n[]",
        "%%transformer child\nnothing",
        "%%transformer collect --reduce\nchild",
        "%%transformer after\n(collect, context.reduced_from)",
        executor=executor,
    )
    assert run.status == "completed"
    assert list(run.instances("collect")) == []
    assert outputs(run, "after") == {"after": ([], [])}


def test_empty_inner_fanout_reduces_to_empty_for_its_outer_item_only(executor: str) -> None:
    run = run_cells(
        "%%block loader outer --dynamic\n[2, 0, 1]",
        "%%block transformer inner --dynamic\nlist(range(outer))",
        "%%transformer leaf\ninner + 100",
        "%%transformer per_outer --reduce\nleaf",
        "%%transformer after\nper_outer",
        executor=executor,
    )
    assert run.status == "completed"
    assert outputs(run, "after") == {"after:0": [100, 101], "after:1": [], "after:2": [100]}


# -- §2.3 instance order ------------------------------------------------------------------------
def test_reduce_list_follows_item_index_whatever_the_completion_order(executor: str) -> None:
    run = run_cells(
        "%%block loader items --dynamic\nlist(range(6))",
        "%%transformer slow_first\nimport time\ntime.sleep((6 - items) * 0.01)\nitems",
        "%%transformer collect --reduce\nslow_first",
        "%%transformer after\n(collect, context.reduced_from)",
        executor=executor,
    )
    assert outputs(run, "after") == {
        "after": ([0, 1, 2, 3, 4, 5], [f"collect:{i}" for i in range(6)])
    }


def test_instances_are_listed_by_item_index_not_by_suffix_text(executor: str) -> None:
    run = run_cells(
        "%%block loader outer --dynamic\n[12, 3]",
        "%%block transformer inner --dynamic\nlist(range(outer))",
        "%%transformer leaf\nimport time\ntime.sleep(0.001 * (12 - inner))\ninner",
        executor=executor,
    )
    expected = [f"leaf:0:{j}" for j in range(12)] + [f"leaf:1:{j}" for j in range(3)]
    assert [r.uuid for r in run.instances("leaf")] == expected
    assert list(run.block_runs)[-15:] == expected
    record_uuids = [r["uuid"] for r in run.to_record()["block_runs"]]
    assert record_uuids[-15:] == expected


def test_named_items_keep_item_order_not_name_order(executor: str) -> None:
    run = run_cells(
        "%%block loader items --dynamic\n"
        "[[1, 2, 3], [{'block_uuid': 'zeta'}, {'block_uuid': 'alpha'}, {'block_uuid': 'mu'}]]",
        "%%transformer child\nitems",
        "%%transformer collect --reduce\nchild",
        "%%transformer after\ncollect",
        executor=executor,
    )
    assert list(outputs(run, "child")) == ["child:zeta", "child:alpha", "child:mu"]
    assert outputs(run, "after") == {"after": [1, 2, 3]}


# -- §2.6 reduce shape ----------------------------------------------------------------------------
def test_reduce_inside_a_nest_gives_one_consumer_per_outer_item(executor: str) -> None:
    run = run_cells(
        "%%block loader outer --dynamic\n[['p', 'q'], [{'block_uuid': 'P'}, {'block_uuid': 'Q'}]]",
        "%%block transformer inner --dynamic\n[outer + str(j) for j in range(3)]",
        "%%transformer leaf\ninner.upper()",
        "%%transformer per_outer --reduce\nleaf",
        "%%transformer consumer\n(per_outer, context.reduced_from, context.lineage)",
        "%%transformer everything --reduce\nconsumer[0]",
        "%%transformer final\n(everything, context.reduced_from, context.lineage)",
        executor=executor,
    )
    assert outputs(run, "consumer") == {
        "consumer:P": (
            ["P0", "P1", "P2"],
            ["per_outer:P:0", "per_outer:P:1", "per_outer:P:2"],
            [("outer", "P")],
        ),
        "consumer:Q": (
            ["Q0", "Q1", "Q2"],
            ["per_outer:Q:0", "per_outer:Q:1", "per_outer:Q:2"],
            [("outer", "Q")],
        ),
    }
    assert outputs(run, "final") == {
        "final": (["P0", "P1", "P2", "Q0", "Q1", "Q2"], ["everything:P", "everything:Q"], [])
    }


def test_dynamic_reduce_block_reduces_its_inputs_fanout_then_fans_out(executor: str) -> None:
    run = run_cells(
        "%%block loader items --dynamic\n[1, 2, 3]",
        "%%block transformer regroup --dynamic --reduce\n[items, items * 10]",
        "%%transformer after\n(regroup, context.lineage)",
        executor=executor,
    )
    assert run.status == "completed"
    values = [1, 10, 2, 20, 3, 30]
    assert outputs(run, "after") == {
        f"after:{j}": (value, [("regroup", str(j))]) for j, value in enumerate(values)
    }


# -- §8 run record ------------------------------------------------------------------------------
def test_run_record_has_lineage_upstream_and_dynamic_output(executor: str) -> None:
    run = run_cells(
        "%%loader settings\n{'prefix': 'u'}",
        USERS_WITH_NAMES,
        "%%transformer anonymize_user_data\n{'id': users['id'], 'p': settings['prefix']}",
        "%%transformer ordered --upstream settings users\n(users, settings)",
        executor=executor,
    )
    record = run.to_record()
    assert record["status"] == "completed"
    by_uuid = {r["uuid"]: r for r in record["block_runs"]}
    users = by_uuid["users"]
    assert users["lineage"] == []
    assert users["upstream"] == []
    assert users["output"] == [{"id": 1}, {"id": 2}, {"id": 3}]
    child = by_uuid["anonymize_user_data:for_user_1"]
    assert child == {
        **child,
        "block": "anonymize_user_data",
        "status": "completed",
        "lineage": [["users", "for_user_1"]],
        "upstream": ["users", "settings"],
        "attempts": 1,
        "output": {"id": 1, "p": "u"},
        "error": None,
    }
    assert by_uuid["ordered:for_user_3"]["upstream"] == ["settings", "users"]
    assert [r["uuid"] for r in record["block_runs"]][:2] == ["settings", "users"]


def test_run_record_lineage_suffixes_are_strings(executor: str) -> None:
    run = run_cells(
        "%%block loader outer --dynamic\n[5, 6]",
        "%%block transformer inner --dynamic\n[outer]",
        "%%transformer leaf\ninner",
        executor=executor,
    )
    record = {r["uuid"]: r for r in run.to_record()["block_runs"]}
    assert record["leaf:1:0"]["lineage"] == [["outer", "1"], ["inner", "0"]]
    assert record["leaf:1:0"]["upstream"] == ["inner"]
    assert record["inner:1"]["output"] == [6]
    for entry in record.values():
        for pair in entry["lineage"]:
            assert all(isinstance(part, str) for part in pair)
