"""Every example notebook runs in a real Jupyter kernel, and shows what its text says.

SPEC §3.1 (the kernel: block cells run, bind NAME and show the run tree; ``%pipeline graph``,
``inputs``, ``rerun``; a failing instance never stops the kernel) and §6 (the run tree widget:
its saved state holds the run, the blocks' counts and a bounded tree; graphs are SVG where
``dot`` is installed, DOT text otherwise). The notebooks are executed by nbclient with
``store_widget_state=True`` (see conftest.py); the executed copies are in
``artifacts/executed/``.
"""

from __future__ import annotations

import ast
import hashlib
import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
RUN_TREE_TRAITS = {"run", "blocks", "tree", "detail", "selected", "filter", "search"}
STATUSES = {"pending", "running", "completed", "failed", "upstream_failed", "cancelled"}
#: Largest saved state of one RunTree model (its JSON, the widget's JS and CSS included).
MAX_MODEL_STATE_BYTES = 256_000
#: Most instance nodes a saved tree may hold (the widget's default ``max_nodes``).
MAX_TREE_NODES = 500
#: A block cell: the magics that register and run a block.
BLOCK_MAGIC = re.compile(r"^%%(block|loader|transformer|exporter)\b")
#: Line magics that start a run and show its tree.
RUN_MAGIC = re.compile(r"^%pipeline\s+(run|retry|rerun)\b", re.MULTILINE)
DOT_INSTALLED = shutil.which("dot") is not None


# -- reading executed notebooks --------------------------------------------------------------
def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code"]


def cell_starting(nb: nbformat.NotebookNode, prefix: str) -> nbformat.NotebookNode:
    """The one code cell whose source starts with ``prefix``."""
    found = [c for c in code_cells(nb) if c.source.lstrip().startswith(prefix)]
    assert len(found) == 1, f"expected one cell starting {prefix!r}, found {len(found)}"
    return found[0]


def text(value: str | list[str]) -> str:
    return value if isinstance(value, str) else "".join(value)


def stream(cell: nbformat.NotebookNode, name: str) -> str:
    return "".join(
        text(o.text) for o in cell.outputs if o.output_type == "stream" and o.name == name
    )


def result(cell: nbformat.NotebookNode) -> Any:
    """The cell's ``Out[]`` value, read back from its text/plain repr."""
    found = [o for o in cell.outputs if o.output_type == "execute_result"]
    assert len(found) == 1, f"expected one execute_result, got {cell.outputs}"
    return ast.literal_eval(text(found[0].data["text/plain"]))


def widget_states(nb: nbformat.NotebookNode) -> dict[str, Any]:
    return nb.metadata["widgets"][WIDGET_STATE]["state"]


def run_tree_models(nb: nbformat.NotebookNode, cell: nbformat.NotebookNode) -> list[Any]:
    """The saved state of each widget the cell displayed."""
    states = widget_states(nb)
    ids = [
        o.data[WIDGET_VIEW]["model_id"]
        for o in cell.outputs
        if o.output_type == "display_data" and WIDGET_VIEW in o.data
    ]
    for model_id in ids:
        assert model_id in states, f"widget {model_id} displayed but its state was not saved"
    return [states[model_id]["state"] for model_id in ids]


def the_run_tree(nb: nbformat.NotebookNode, prefix: str) -> Any:
    models = run_tree_models(nb, cell_starting(nb, prefix))
    assert len(models) == 1, f"cell {prefix!r} should show one run tree, shows {len(models)}"
    return models[0]


def block_counts(model: Any) -> dict[str, int]:
    return {b["name"]: b["total"] for b in model["blocks"]}


def instance_nodes(nodes: list[Any]) -> list[Any]:
    """Every instance node of a saved tree (item nodes have no ``uuid``)."""
    found = []
    for node in nodes:
        if "uuid" in node:
            found.append(node)
        found.extend(instance_nodes(node.get("children", [])))
    return found


def by_uuid(model: Any) -> dict[str, Any]:
    return {node["uuid"]: node for node in instance_nodes(model["tree"])}


def pseudonym(value: str) -> str:  # the notebook's helper, to check its output independently
    return hashlib.sha256(value.encode()).hexdigest()[:10]


# -- every notebook --------------------------------------------------------------------------
@pytest.fixture(params=NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def executed(request: pytest.FixtureRequest, execute: Any) -> nbformat.NotebookNode:
    return execute(request.param.stem)


def test_there_are_example_notebooks() -> None:
    assert {"dynamic_users", "fractal_fanout", "failure_isolation"} <= {p.stem for p in NOTEBOOKS}


def test_every_cell_runs_without_an_error(executed: nbformat.NotebookNode) -> None:
    # nbclient raises on an error already; also: every code cell (skip-tagged ones too) ran
    # in order, so the kernel stayed usable to the last cell.
    counts = [c.execution_count for c in code_cells(executed)]
    assert None not in counts
    assert counts == sorted(counts)
    errors = [o for c in code_cells(executed) for o in c.outputs if o.output_type == "error"]
    assert errors == []


def block_name(cell: nbformat.NotebookNode) -> str | None:
    """The NAME of a block cell that runs its block (not ``--no-run``), else None."""
    header = cell.source.lstrip().splitlines()[0] if cell.source.strip() else ""
    if not BLOCK_MAGIC.match(header) or "--no-run" in header.split():
        return None
    words = header.split()
    return words[2] if words[0] == "%%block" else words[1]


def test_each_run_shows_one_run_tree_whose_state_is_saved(
    executed: nbformat.NotebookNode,
) -> None:
    runs = [c for c in code_cells(executed) if block_name(c) or RUN_MAGIC.search(c.source)]
    assert runs, "a notebook without a block cell"
    for cell in runs:
        models = run_tree_models(executed, cell)
        assert len(models) == 1, f"{cell.source.splitlines()[0]!r} shows {len(models)} trees"
        assert set(models[0]) >= RUN_TREE_TRAITS
        name = block_name(cell)
        if name is not None:
            assert name in block_counts(models[0])


def test_saved_run_trees_are_finished_consistent_and_bounded(
    executed: nbformat.NotebookNode,
) -> None:
    models = [
        m["state"] for m in widget_states(executed).values() if set(m["state"]) >= RUN_TREE_TRAITS
    ]
    assert models
    for model in models:
        size = len(json.dumps(model).encode())
        assert size < MAX_MODEL_STATE_BYTES, f"saved RunTree state is {size} bytes"
        run = model["run"]
        assert set(run["counts"]) == STATUSES
        assert run["counts"]["pending"] == run["counts"]["running"] == 0, run
        assert sum(run["counts"].values()) == run["total"]
        assert sum(b["total"] for b in model["blocks"]) == run["total"]
        every_completed = run["counts"]["completed"] == run["total"]
        assert run["status"] == ("completed" if every_completed else "failed"), run
        for block in model["blocks"]:
            assert sum(block["counts"][s] for s in STATUSES) == block["total"], block
        nodes = instance_nodes(model["tree"])
        assert len(nodes) <= MAX_TREE_NODES
        uuids = [n["uuid"] for n in nodes]
        assert len(uuids) == len(set(uuids)), "an instance shown twice"
        names = set(block_counts(model))
        for node in nodes:
            assert node["block"] in names
            assert node["uuid"].split(":")[0] == node["block"]
            assert node["status"] in STATUSES
        if all(b["total"] <= 20 for b in model["blocks"]):  # small runs are shown whole
            assert len(nodes) == run["total"]
        assert model["detail"] == {} and model["selected"] == ""  # nothing clicked


# -- dynamic_users ---------------------------------------------------------------------------
@pytest.fixture
def users(execute: Any) -> nbformat.NotebookNode:
    return execute("dynamic_users")


def test_dynamic_users_binds_fanned_out_outputs_by_uuid(users: nbformat.NotebookNode) -> None:
    ada = result(cell_starting(users, 'anonymize_user_data["anonymize_user_data:for_user_1"]'))
    assert ada == {
        "id": 1,
        "name": pseudonym("Ada Lovelace"),
        "email": pseudonym("ada@example.com"),
        "sessions": 12,
        "minutes": 340,
    }


def test_dynamic_users_report_is_reduced_in_user_order_and_ranked(
    users: nbformat.NotebookNode,
) -> None:
    scores = [
        {"id": 3, "score": round(27 * 2 + 910 / 60, 2)},
        {"id": 1, "score": round(12 * 2 + 340 / 60, 2)},
        {"id": 2, "score": round(3 * 2 + 45 / 60, 2)},
    ]
    expected = {"users": 3, "top_user": 3, "scores": scores}
    assert result(cell_starting(users, "%%exporter engagement_report")) == expected
    assert result(cell_starting(users, "engagement_report")) == expected  # the skip-tagged cell


# Per block cell: the blocks its run covers (the block and its ancestors) and their instances.
USERS_RUNS = {
    "%%block loader users": {"users": 1},
    "%%transformer anonymize_user_data": {"users": 1, "anonymize_user_data": 3},
    "%%transformer clean_column_names": {
        "users": 1,
        "anonymize_user_data": 3,
        "clean_column_names": 3,
    },
    "%%transformer compute_engagement_score": {
        "users": 1,
        "anonymize_user_data": 3,
        "compute_engagement_score": 3,
    },
    "%%exporter engagement_report": {
        "users": 1,
        "anonymize_user_data": 3,
        "compute_engagement_score": 3,
        "engagement_report": 1,
    },
}


@pytest.mark.parametrize("prefix", list(USERS_RUNS))
def test_dynamic_users_run_tree_of_each_block_cell(
    users: nbformat.NotebookNode, prefix: str
) -> None:
    model = the_run_tree(users, prefix)
    assert model["run"]["status"] == "completed"
    assert block_counts(model) == USERS_RUNS[prefix]
    for block in model["blocks"]:
        assert block["counts"]["completed"] == block["total"], block
    flags = {b["name"]: (b["dynamic"], b["reduce"]) for b in model["blocks"]}
    assert flags["users"] == (True, None)
    if "compute_engagement_score" in flags:
        assert flags["compute_engagement_score"] == (False, "list")
    expected = {
        f"{name}:for_user_{i}" if total == 3 else name
        for name, total in USERS_RUNS[prefix].items()
        for i in range(1, total + 1)
    }
    assert set(by_uuid(model)) == expected


def test_dynamic_users_last_block_cell_tree_nests_instances_under_their_user(
    users: nbformat.NotebookNode,
) -> None:
    model = the_run_tree(users, "%%exporter engagement_report")
    assert model["run"]["total"] == 8
    top = {node.get("uuid") for node in model["tree"]}
    assert top == {"users", "engagement_report"}
    users_node = next(n for n in model["tree"] if n.get("uuid") == "users")
    assert [item["label"] for item in users_node["children"]] == [
        "for_user_1",
        "for_user_2",
        "for_user_3",
    ]
    first = users_node["children"][0]
    assert {n["uuid"] for n in first["children"]} == {
        "anonymize_user_data:for_user_1",
        "compute_engagement_score:for_user_1",
    }


def test_dynamic_users_graph(users: nbformat.NotebookNode) -> None:
    for prefix, wanted in (
        ("%pipeline graph", ["users", "anonymize_user_data", "engagement_report"]),
        ("%pipeline graph --expanded", ["for_user_1", "for_user_3", "completed"]),
    ):
        cell = next(c for c in code_cells(users) if c.source.strip() == prefix)
        if DOT_INSTALLED:
            svgs = [text(o.data["image/svg+xml"]) for o in cell.outputs if "data" in o]
            svgs = [s for s in svgs if s]
            assert len(svgs) == 1, cell.outputs
            assert "<svg" in svgs[0]
            for word in wanted:
                assert word in svgs[0]
        else:
            assert "digraph" in stream(cell, "stdout")


def test_dynamic_users_graph_is_dot_text_without_graphviz(execute: Any) -> None:
    nb = execute("dynamic_users", kernel="no_dot")  # the kernel's PATH has no `dot`
    graphs = [c for c in code_cells(nb) if c.source.startswith("%pipeline graph")]
    assert len(graphs) == 2
    for cell in graphs:
        assert all("image/svg+xml" not in o.get("data", {}) for o in cell.outputs)
        dot = stream(cell, "stdout")
        assert re.match(r"\s*(strict\s+)?digraph\b", dot), dot[:200]
        assert "anonymize_user_data" in dot


def test_dynamic_users_inputs_binds_one_instances_inputs(users: nbformat.NotebookNode) -> None:
    cell = cell_starting(users, "%pipeline inputs clean_column_names:for_user_2")
    assert "clean_column_names:for_user_2" in stream(cell, "stdout")
    assert "anonymize_user_data" in stream(cell, "stdout")
    bound, uuid = result(cell)
    assert uuid == "clean_column_names:for_user_2"
    assert bound == {
        "id": 2,
        "name": pseudonym("Alan Turing"),
        "email": pseudonym("alan@example.com"),
        "sessions": 3,
        "minutes": 45,
    }


def test_dynamic_users_rerun_reruns_only_that_instance(users: nbformat.NotebookNode) -> None:
    model = the_run_tree(users, "%pipeline rerun clean_column_names:for_user_2")
    assert model["run"]["status"] == "completed"
    assert block_counts(model) == {
        "users": 1,
        "anonymize_user_data": 3,
        "clean_column_names": 3,
        "compute_engagement_score": 3,
        "engagement_report": 1,
    }
    nodes = by_uuid(model)
    ran = sorted(uuid for uuid, node in nodes.items() if not node["reused"])
    assert ran == ["clean_column_names:for_user_2"]  # it has no descendants


# -- fractal_fanout --------------------------------------------------------------------------
@pytest.fixture
def fractal(execute: Any) -> nbformat.NotebookNode:
    return execute("fractal_fanout")


def expected_revenue() -> float:
    """The notebook's figures, recomputed here: 3 regions, their stores, 7 days each."""

    def daily_sales(store: str) -> list[float]:
        rng = random.Random(store)
        return [round(rng.uniform(800, 2400), 2) for _ in range(7)]

    regions = {"north": 3, "south": 2, "east": 4}
    region_totals = [
        round(sum(round(sum(daily_sales(f"{r}-{n}")), 2) for n in range(1, k + 1)), 2)
        for r, k in regions.items()
    ]
    return round(sum(region_totals), 2)


def test_fractal_company_report(fractal: nbformat.NotebookNode) -> None:
    report = result(cell_starting(fractal, "%%exporter company_report"))
    assert report["revenue"] == pytest.approx(expected_revenue(), abs=0.011)
    assert report["regions"] == 3
    assert report["from"] == [
        "region_revenue:north",
        "region_revenue:south",
        "region_revenue:east",
    ]
    assert result(cell_starting(fractal, "%%block loader regions")) == ["north", "south", "east"]


def test_fractal_run_tree_nests_two_levels(fractal: nbformat.NotebookNode) -> None:
    model = the_run_tree(fractal, "%%exporter company_report")
    assert model["run"]["status"] == "completed"
    assert block_counts(model) == {
        "regions": 1,
        "stores": 3,
        "store_week": 9,
        "region_total": 9,
        "region_summary": 3,
        "region_revenue": 3,
        "company_report": 1,
    }
    depth = {b["name"]: b["depth"] for b in model["blocks"]}
    assert depth == {
        "regions": 0,
        "stores": 1,
        "store_week": 2,
        "region_total": 2,
        "region_summary": 1,
        "region_revenue": 1,
        "company_report": 0,
    }
    regions = next(n for n in model["tree"] if n.get("uuid") == "regions")
    east = next(item for item in regions["children"] if item["label"] == "east")
    stores = next(n for n in east["children"] if n.get("uuid") == "stores:east")
    assert [item["label"] for item in stores["children"]] == [f"store{n}" for n in (1, 2, 3, 4)]
    store4 = {n["uuid"] for n in stores["children"][3]["children"]}
    assert store4 == {"store_week:east:store4", "region_total:east:store4"}


# -- failure_isolation -----------------------------------------------------------------------
@pytest.fixture
def failures(execute: Any) -> nbformat.NotebookNode:
    return execute("failure_isolation")


def test_failure_traceback_is_shown_under_the_cell(failures: nbformat.NotebookNode) -> None:
    cell = cell_starting(failures, "%%transformer amount_in_eur")
    stderr = stream(cell, "stderr")
    assert "amount_in_eur:A-3 failed" in stderr
    assert "Traceback" in stderr
    assert "ValueError: could not convert string to float: '12O.00'" in stderr
    for sibling in ("A-1", "A-2", "A-4"):
        assert f"amount_in_eur:{sibling}" not in stderr
    # the flaky rate service was retried away: no failure under that cell
    assert "failed" not in stream(cell_starting(failures, "%%transformer exchange_rate"), "stderr")


def test_failure_stays_in_its_branch_in_the_run_tree(failures: nbformat.NotebookNode) -> None:
    rates = by_uuid(the_run_tree(failures, "%%transformer exchange_rate"))
    assert {u: (n["status"], n["attempts"]) for u, n in rates.items() if ":" in u} == {
        "exchange_rate:A-1": ("completed", 1),
        "exchange_rate:A-2": ("completed", 1),
        "exchange_rate:A-3": ("completed", 2),
        "exchange_rate:A-4": ("completed", 2),
    }
    model = the_run_tree(failures, "%%transformer amount_in_eur")
    assert model["run"]["status"] == "failed"
    amounts = next(b for b in model["blocks"] if b["name"] == "amount_in_eur")
    assert amounts["counts"]["completed"] == 3 and amounts["counts"]["failed"] == 1
    failed = by_uuid(model)["amount_in_eur:A-3"]
    assert failed["status"] == "failed"
    assert "could not convert string to float" in failed["error_line"]

    model = the_run_tree(failures, "%%exporter large_orders")
    flagged = next(b for b in model["blocks"] if b["name"] == "flagged")
    assert flagged["counts"]["upstream_failed"] == 1 and flagged["counts"]["completed"] == 3
    assert by_uuid(model)["flagged:A-3"]["status"] == "upstream_failed"
    assert by_uuid(model)["large_orders"]["status"] == "completed"


def test_partial_reduce_report_lists_what_is_missing(failures: nbformat.NotebookNode) -> None:
    report = result(cell_starting(failures, "%%exporter daily_report"))
    assert report == {
        "total_eur": round(120.50 * 1.0 + 80 * 0.92 + 15000 * 0.0061, 2),
        "missing": ["eur_total:A-3"],
        "included": ["eur_total:A-1", "eur_total:A-2", "eur_total:A-4"],
    }


def test_the_kernel_kept_going_after_the_failure(failures: nbformat.NotebookNode) -> None:
    cells = code_cells(failures)
    failing = cells.index(cell_starting(failures, "%%transformer amount_in_eur"))
    assert all(c.execution_count is not None for c in cells[failing + 1 :])
    assert result(cells[-1]) == ["A-1"]  # large_orders, the last cell, ran on the survivors
