"""The widget feed: throttled while the run goes on, bounded in size, exact at the end."""

from __future__ import annotations

import builtins
import json
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from helpers import run_cells, specs_from_cells

from mage_nb.engine import Pipeline, PipelineRun, Run, ThreadExecutor
from mage_nb.widget import RunTree
from mage_nb.widget.feed import PAGE_SIZE, PER_FANOUT, WidgetFeed

#: The synced state of a finished 10,000-instance run stays under this many bytes.
STATE_BOUND = 256 * 1024
INTERVAL = 0.01


class CountingTree(RunTree):
    """A RunTree that counts how often the feed pushes state into it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.updates = 0

    def update(self, state: Mapping[str, Any], live: bool) -> None:
        self.updates += 1
        super().update(state, live)


def instance_nodes(nodes: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for node in nodes:
        if "uuid" in node:
            yield node
        yield from instance_nodes(node.get("children", []))


def big_run(feed: WidgetFeed, n: int = 10_000, fail: str = "a % 1000 == 7") -> tuple[Any, float]:
    started = time.perf_counter()
    run = run_cells(
        f"%%loader a --dynamic\nlist(range({n}))",
        f"%%transformer t\nif {fail}:\n    raise ValueError(f'bad {{a}}')\na * 2",
        "%%transformer kept --reduce list --reduce-policy partial\nt",
        "%%exporter final\nlen(kept)",
        executor="threads",
        listeners=[feed],
    )
    return run, time.perf_counter() - started


def test_ten_thousand_instances_keep_the_state_bounded_and_the_flushes_throttled() -> None:
    widget = CountingTree()
    feed = WidgetFeed(widget, interval=INTERVAL)
    run, elapsed = big_run(feed)
    assert len(run.block_runs) == 20_002  # a, t:*, kept:* (reduced), final
    assert 2 <= feed.flushes <= elapsed / INTERVAL + 3
    assert widget.updates == feed.flushes  # the widget is touched per flush, never per event
    assert 0 < feed.max_state_bytes <= STATE_BOUND
    final = len(json.dumps(widget.synced_state(), ensure_ascii=False).encode())
    assert final == widget.synced_bytes() <= feed.max_state_bytes
    assert len(list(instance_nodes(widget.tree))) <= feed.max_nodes


def test_final_counts_match_the_record() -> None:
    widget = RunTree()
    run, _ = big_run(WidgetFeed(widget, interval=INTERVAL))
    assert [row["name"] for row in widget.blocks] == run.blocks
    for row in widget.blocks:
        assert row["counts"] == run.counts(row["name"])
        assert row["total"] == sum(run.counts(row["name"]).values())
    assert widget.blocks[1]["depth"] == 1 and widget.blocks[0]["dynamic"]
    assert widget.blocks[2]["reduce"] == "list" and widget.blocks[3]["depth"] == 0
    assert widget.run["counts"] == run.counts()
    assert widget.run["total"] == 20_002
    assert widget.run["status"] == run.status == "failed"
    assert widget.run["id"] == run.run_id


def test_failed_instances_appear_in_the_tree_with_their_error_lines() -> None:
    widget = RunTree()
    run, _ = big_run(WidgetFeed(widget, interval=INTERVAL))
    failed = {r.uuid for r in run.instances() if r.status == "failed"}
    assert len(failed) == 10
    nodes = {n["uuid"]: n for n in instance_nodes(widget.tree)}
    assert failed <= set(nodes)
    for uuid in failed:
        assert nodes[uuid]["error_line"] == f"ValueError: bad {uuid.split(':')[1]}"
    assert nodes["t:0"]["error_line"] is None and nodes["t:0"]["attempts"] == 1


def test_items_nest_under_the_instance_that_made_them_and_the_rest_is_counted() -> None:
    widget = RunTree()
    big_run(WidgetFeed(widget, interval=INTERVAL))
    top = {n.get("uuid"): n for n in widget.tree}
    a = top["a"]
    items = a["children"]
    assert [i["label"] for i in items[:PER_FANOUT]] == [str(k) for k in range(PER_FANOUT)]
    assert all(i["of"] == "a" for i in items)
    assert items[0]["children"][0]["uuid"] == "t:0"
    assert a["more"] == 10_000 - len(items) and a["shown"] == len(items)
    assert "final" in top


def test_failures_beyond_the_bound_fill_it_and_no_more() -> None:
    widget = RunTree()
    feed = WidgetFeed(widget, interval=INTERVAL, max_nodes=100)
    run, _ = big_run(feed, n=2_000, fail="a % 3 == 0")
    nodes = list(instance_nodes(widget.tree))
    assert len(nodes) == 100
    assert {n["uuid"] for n in nodes if n["status"] != "failed"} == {"a", "final"}
    assert widget.run["counts"]["failed"] == run.counts()["failed"] == 667


def test_the_widget_updates_while_the_run_goes_on() -> None:
    widget = RunTree()
    seen: list[dict[str, Any]] = []
    widget.observe(lambda change: seen.append(change["new"]), names=["run"])
    feed = WidgetFeed(widget, interval=0.02)
    started = time.perf_counter()
    run = run_cells(
        "%%loader a --dynamic\nlist(range(120))",
        "%%transformer t\ntime.sleep(0.005)\na",
        executor="threads",
        namespace={"time": time},
        listeners=[feed],
    )
    elapsed = time.perf_counter() - started
    assert feed.flushes <= elapsed / 0.02 + 3
    live = [s for s in seen if s["status"] == "running"]
    assert live and live[0]["counts"]["completed"] < 121
    assert any(0 < s["counts"]["completed"] < 121 for s in live)
    assert seen[-1]["status"] == "completed" == run.status
    assert seen[-1]["counts"]["completed"] == 121


def test_paging_shows_the_next_items_of_a_fan_out() -> None:
    widget = RunTree()
    run_cells(
        "%%loader a --dynamic\nlist(range(100))",
        "%%transformer t\na + 1",
        listeners=[WidgetFeed(widget, interval=INTERVAL)],
    )
    a = widget.tree[0]
    assert (a["more"], a["shown"]) == (100 - PER_FANOUT, PER_FANOUT)
    widget.handle_message({"type": "page", "node": a["id"], "offset": a["shown"]})
    a = widget.tree[0]
    shown = PER_FANOUT + PAGE_SIZE
    assert [i["label"] for i in a["children"]] == [str(k) for k in range(shown)]
    assert a["children"][-1]["children"][0]["uuid"] == f"t:{shown - 1}"
    assert a["more"] == 100 - shown
    widget.handle_message({"type": "page", "node": a["id"], "offset": a["shown"]})
    a = widget.tree[0]
    assert len(a["children"]) == 100 and a["more"] == 0 and "id" not in a
    before = widget.tree
    widget.handle_message({"type": "page", "node": "no such node", "offset": 0})
    assert widget.tree == before


def test_filter_and_search_redraw_the_tree_from_the_whole_record() -> None:
    widget = RunTree(max_nodes=50)
    run, _ = big_run(WidgetFeed(widget, interval=INTERVAL, max_nodes=50))
    widget.filter = "completed"
    nodes = list(instance_nodes(widget.tree))
    assert len(nodes) == 50 and all(n["status"] == "completed" for n in nodes)
    assert widget.tree[-1]["more"] == run.counts()["completed"] - 50
    widget.handle_message({"type": "filter", "status": "failed"})
    assert widget.filter == "failed"
    assert {n["uuid"] for n in instance_nodes(widget.tree)} == {
        r.uuid for r in run.instances() if r.status == "failed"
    }
    widget.filter = ""
    widget.handle_message({"type": "search", "text": "t:999"})
    found = {n["uuid"] for n in instance_nodes(widget.tree)}
    assert found == {r.uuid for r in run.instances() if "t:999" in r.uuid}
    assert {"t:999", "t:9990", "kept:999"} <= found
    widget.search = ""
    assert widget.tree[0]["uuid"] == "a" and widget.tree[0]["more"] > 0


def test_attaching_a_finished_run_draws_it_without_a_feed() -> None:
    run = run_cells("%%loader a --dynamic\n[1, 2, 3]", "%%transformer t\na * 2")
    widget = RunTree()
    widget.attach(run)
    assert widget.run["counts"]["completed"] == 4
    assert [row["counts"]["completed"] for row in widget.blocks] == [1, 3]
    assert [n["uuid"] for n in instance_nodes(widget.tree)] == ["a", "t:0", "t:1", "t:2"]


class BrokenTree(RunTree):
    def update(self, state: Mapping[str, Any], live: bool) -> None:
        raise RuntimeError("display broke")


def test_a_broken_display_never_fails_the_run() -> None:
    feed = WidgetFeed(BrokenTree(), interval=100)
    with pytest.warns(RuntimeWarning, match="stopped updating"):
        run = run_cells("%%loader a --dynamic\n[1, 2]", "%%transformer t\na", listeners=[feed])
    assert run.status == "completed"
    assert isinstance(feed.error, RuntimeError) and feed.flushes == 0


def test_the_stop_button_cancels_a_running_run() -> None:
    widget = RunTree()
    feed = WidgetFeed(widget, interval=INTERVAL)
    executor = ThreadExecutor(2)
    ns: dict[str, Any] = {"__builtins__": builtins, "time": time}
    cells = ["%%loader a --dynamic\nlist(range(200))", "%%transformer t\ntime.sleep(0.01)\na"]
    run = Run(Pipeline(specs_from_cells(cells)), ns, executor=executor, listeners=[feed])
    widget.stop_callback = run.cancel
    result: list[PipelineRun] = []
    thread = threading.Thread(target=lambda: result.append(run.execute()))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while widget.run.get("counts", {}).get("completed", 0) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        widget.handle_message({"type": "stop"})
        thread.join(10)
    finally:
        executor.close()
    record = result[0]
    assert record.status == "cancelled" == widget.run["status"]
    assert widget.run["counts"]["cancelled"] == record.counts()["cancelled"] > 0
    assert widget.run["counts"]["running"] == widget.run["counts"]["pending"] == 0
