"""The static DAG and the expanded run graph as DOT, and SVG where ``dot`` exists (SPEC §6)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import run_cells, specs_from_cells

from mage_nb.engine import Pipeline
from mage_nb.graph import STATUS_COLORS, pipeline_dot, render_svg, run_dot

HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz's `dot` program is not installed")

_NODE = re.compile(r"^\t+(\w+) \[(.*)\]$", re.MULTILINE)
_EDGE = re.compile(r"^\t+(\w+) -> (\w+)(?: \[(.*)\])?$", re.MULTILINE)
_ATTR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^\s\]]+)')


def attrs_of(text: str | None) -> dict[str, str]:
    out = {}
    for key, value in _ATTR.findall(text or ""):
        out[key] = value[1:-1].replace('\\"', '"') if value.startswith('"') else value
    return out


def nodes(dot: str) -> dict[str, dict[str, str]]:
    """node id -> attributes (only node statements, not graph/node/edge defaults)."""
    return {
        name: attrs_of(body)
        for name, body in _NODE.findall(dot)
        if name not in ("graph", "node", "edge")
    }


def edges(dot: str) -> list[tuple[str, str, dict[str, str]]]:
    return [(a, b, attrs_of(body)) for a, b, body in _EDGE.findall(dot)]


def by_first_line(dot: str) -> dict[str, dict[str, str]]:
    """First label line (a block NAME or an instance uuid) -> node attributes (+ its id)."""
    out = {}
    for name, attrs in nodes(dot).items():
        out[attrs.get("label", "").split("\\n")[0]] = {**attrs, "id": name}
    return out


# -- the static DAG -----------------------------------------------------------------------------
DAG_CELLS = [
    "%%block loader users --dynamic\n[1, 2, 3]",
    "%%block transformer clean\nusers",
    "%%block transformer total --reduce sum --reduce-policy partial\nclean",
    "%%block custom regroup --dynamic --reduce\nclean",
    "%%block exporter save\ntotal",
    "%%block sql q --upstream users total\nselect 1",
]


@pytest.fixture
def dag() -> str:
    return pipeline_dot(Pipeline(specs_from_cells(DAG_CELLS)))


def test_dag_is_left_to_right_with_one_node_per_block(dag: str) -> None:
    assert dag.startswith("digraph")
    assert "rankdir=LR" in dag
    found = nodes(dag)
    assert set(found) == {"users", "clean", "total", "regroup", "save", "q"}
    assert found["clean"]["label"] == "clean\\ntransformer"
    assert found["save"]["label"] == "save\\nexporter"


def test_dynamic_blocks_are_marked(dag: str) -> None:
    users = nodes(dag)["users"]
    assert users["shape"] == "doubleoctagon"
    assert "bold" in users["style"]
    assert "fan-out" in users["label"]
    assert users["label"].startswith("users\\nloader\\n")
    assert "fan-out" not in nodes(dag)["clean"]["label"]


def test_reduce_blocks_show_strategy_and_policy(dag: str) -> None:
    total = nodes(dag)["total"]
    assert total["shape"] == "invhouse"
    assert "reduce: sum, partial" in total["label"]
    regroup = nodes(dag)["regroup"]  # reduces (list by default), then fans out again
    assert regroup["shape"] == "invhouse"
    assert regroup.get("peripheries") == "2"
    assert "reduce: list" in regroup["label"] and "partial" not in regroup["label"]
    assert "fan-out" in regroup["label"]


def test_sql_blocks_are_cylinders(dag: str) -> None:
    q = nodes(dag)["q"]
    assert q["shape"] == "cylinder"
    assert q["label"] == "q\\nsql"


def test_kinds_have_distinct_fills(dag: str) -> None:
    found = nodes(dag)
    fills = {found[n]["fillcolor"] for n in ("users", "clean", "regroup", "save", "q")}
    assert len(fills) == 5


def test_edges_follow_upstream_with_order_labels_only_when_several(dag: str) -> None:
    found = {(a, b): attrs for a, b, attrs in edges(dag)}
    assert set(found) == {
        ("users", "clean"),
        ("clean", "total"),
        ("clean", "regroup"),
        ("total", "save"),
        ("users", "q"),
        ("total", "q"),
    }
    assert found[("users", "q")]["label"] == "1"
    assert found[("total", "q")]["label"] == "2"
    assert "label" not in found[("clean", "total")]


def test_edge_order_labels_follow_upstream_order_not_notebook_order() -> None:
    dot = pipeline_dot(
        Pipeline(
            specs_from_cells(
                [
                    "%%block loader a\n1",
                    "%%block loader b\n2",
                    "%%block transformer c --upstream b a\nNone",
                ]
            )
        )
    )
    found = {(a, b): attrs["label"] for a, b, attrs in edges(dot)}
    assert found == {("b", "c"): "1", ("a", "c"): "2"}


def test_awkward_text_stays_valid_dot() -> None:
    # ``node`` is a DOT keyword; headers and error messages carry quotes, backslashes, <...>.
    cells = [
        "%%block loader node\n1",
        "%%block sql q --upstream node --connection 'C:\\db \"x\" <y>\\'\nselect 1",
    ]
    dag = pipeline_dot(Pipeline(specs_from_cells(cells)))
    assert '"node" [' in dag
    run = run_cells(
        "%%block loader node --dynamic\n[1]",
        "%%block transformer t\nraise ValueError('a \"quoted\" <b>\\\\')",
    )
    expanded = run_dot(run)
    assert 'ValueError: a \\"quoted\\" <b>' in expanded
    if HAS_DOT:
        for dot in (dag, expanded):
            svg = render_svg(dot)
            assert svg is not None and "<svg" in svg


@needs_dot
def test_dag_renders_to_svg(dag: str) -> None:
    svg = render_svg(dag)
    assert svg is not None
    assert "<svg" in svg
    for name in ("users", "clean", "total", "regroup", "save", "q"):
        assert f"<title>{name}</title>" in svg


def test_render_svg_returns_none_without_dot(tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    code = "from mage_nb.graph import render_svg; print(repr(render_svg('digraph { a -> b }')))"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": str(empty)},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "None"


# -- the run graph ------------------------------------------------------------------------------
FANOUT_CELLS = [
    "%%block loader users --dynamic\n[1, 2, 3]",
    "%%block transformer t\nif users == 2:\n    raise ValueError('boom')\nusers * 10",
    "%%block transformer r --reduce sum\nt",
    "%%block exporter e\nr",
]


def fill(status: str) -> str:
    return STATUS_COLORS[status][0]


def test_run_graph_of_a_small_fanout_with_one_failure() -> None:
    run = run_cells(*FANOUT_CELLS)
    dot = run_dot(run)
    found = by_first_line(dot)
    assert {u: found[u]["fillcolor"] for u in ("users", "t:0", "t:1", "t:2")} == {
        "users": fill("completed"),
        "t:0": fill("completed"),
        "t:1": fill("failed"),
        "t:2": fill("completed"),
    }
    assert found["r:1"]["fillcolor"] == fill("upstream_failed")
    assert found["r:0"]["fillcolor"] == found["r:2"]["fillcolor"] == fill("completed")
    assert found["e"]["fillcolor"] == fill("upstream_failed")
    assert "ValueError: boom" in found["t:1"]["tooltip"]
    assert "more" not in dot

    ids = {name: attrs["id"] for name, attrs in found.items()}
    pairs = {(a, b) for a, b, _ in edges(dot)}
    for i in range(3):
        assert (ids["users"], ids[f"t:{i}"]) in pairs
        assert (ids[f"t:{i}"], ids[f"r:{i}"]) in pairs
    # The reduce is one node between the instances it closed and its consumer.
    reduce_node = found["reduce: sum"]
    assert reduce_node["shape"] == "invhouse"
    assert reduce_node["fillcolor"] == fill("upstream_failed")
    assert "✓2" in reduce_node["label"] and "✗1" in reduce_node["label"]
    g = reduce_node["id"]
    assert {a for a, b in pairs if b == g} == {ids["r:0"], ids["r:1"], ids["r:2"]}
    assert {b for a, b in pairs if a == g} == {ids["e"]}
    styles = {a: attrs.get("style") for a, b, attrs in edges(dot) if b == g}
    assert styles[ids["r:1"]] == "dashed"
    # one node per instance and per reduce group, nothing else
    assert len(nodes(dot)) == 1 + 3 + 3 + 1 + 1
    # blocks are clusters labelled with their counts
    assert "subgraph cluster_t" in dot
    assert 'label="t  3  ✓2 ✗1"' in dot


def test_run_graph_of_a_clean_run_is_all_green() -> None:
    run = run_cells("%%block loader n --dynamic\n[1, 2]", "%%block transformer sq\nn * n")
    found = by_first_line(run_dot(run))
    assert {found[u]["fillcolor"] for u in ("n", "sq:0", "sq:1")} == {fill("completed")}


def test_block_without_instances_is_still_shown() -> None:
    run = run_cells("%%block loader n --dynamic\n[]", "%%block transformer sq\nn * n")
    dot = run_dot(run)
    assert "subgraph cluster_sq" in dot
    assert "no instances" in dot


def test_partial_reduce_group_is_completed_and_named_partial() -> None:
    run = run_cells(
        "%%block loader users --dynamic\n[1, 2, 3]",
        "%%block transformer t --reduce sum --reduce-policy partial\n"
        "if users == 2:\n    raise ValueError('boom')\nusers",
        "%%block exporter e\nt",
    )
    found = by_first_line(run_dot(run))
    group = found["reduce: sum, partial"]
    assert group["fillcolor"] == fill("completed")
    assert found["e"]["fillcolor"] == fill("completed")


def test_large_fanout_collapses_and_keeps_failures_visible() -> None:
    run = run_cells(
        "%%block loader items --dynamic\nlist(range(10_000))",
        "%%block transformer t\nif items == 9_990:\n    raise ValueError('bad item')\nitems",
        "%%block transformer c --reduce count\nt",
        "%%block exporter e\nc",
        executor="threads",
    )
    started = time.perf_counter()
    dot = run_dot(run)
    elapsed = time.perf_counter() - started
    assert len(dot.encode()) < 50_000
    assert elapsed < 5
    found = by_first_line(dot)
    # the failure and what it caused stay visible, though far past the limit
    assert found["t:9990"]["fillcolor"] == fill("failed")
    assert found["c:9990"]["fillcolor"] == fill("upstream_failed")
    assert (found["t:9990"]["id"], found["c:9990"]["id"]) in {(a, b) for a, b, _ in edges(dot)}
    # at most `limit` instances per block, the rest counted in one node
    assert sum(1 for u in found if u.startswith("t:")) == 20
    counted = [a["label"] for a in nodes(dot).values() if a["label"].startswith("…")]
    assert counted == ["… 9,980 more  ✓9,980", "… 9,980 more  ✓9,980"]  # t and c
    assert len(nodes(dot)) < 4 * 21 + 2


def test_collapsed_node_counts_hidden_failures() -> None:
    run = run_cells(
        "%%block loader items --dynamic\nlist(range(100))",
        "%%block transformer t\nif items % 10 == 0:\n    raise ValueError('x')\nitems",
    )
    found = by_first_line(run_dot(run, limit=5))
    t_nodes = [u for u in found if u.startswith("t:")]
    assert len(t_nodes) == 5
    assert all(found[u]["fillcolor"] == fill("failed") for u in t_nodes)  # failures first
    assert "… 95 more  ✓90 ✗5" in found


def test_limit_bounds_the_size_not_the_instance_count() -> None:
    run = run_cells(
        "%%block loader items --dynamic\nlist(range(3_000))",
        "%%block transformer t\nitems",
        executor="threads",
    )
    small, large = run_dot(run, limit=5), run_dot(run, limit=50)
    assert len(nodes(small)) == 1 + 5 + 1
    assert len(nodes(large)) == 1 + 50 + 1
    assert "… 2,995 more  ✓2,995" in small


@needs_dot
def test_run_graph_renders_to_svg() -> None:
    svg = render_svg(run_dot(run_cells(*FANOUT_CELLS)))
    assert svg is not None
    assert "<svg" in svg
    assert "t:1" in svg
