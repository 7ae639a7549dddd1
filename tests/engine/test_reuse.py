"""Partial runs: running a subset of blocks, and reusing an earlier run's results by key."""

from __future__ import annotations

import builtins
from typing import Any

from helpers import specs_from_cells

from mage_nb.engine import Pipeline, PipelineRun, Run, SyncExecutor

CELLS = [
    "%%loader a --dynamic\ncalls.append('a')\n[[1, 2, 0], [{'block_uuid': 'x'}, {}, {}]]",
    "%%transformer t\ncalls.append(context.uuid)\n10 / a if a else flaky()",
    "%%transformer r --reduce sum --reduce-policy partial\nt",
    "%%exporter e\ncalls.append('e')\n(r, context.failed)",
    "%%loader other\ncalls.append('other')\n1",
]


def _run(namespace: dict[str, Any], *, memo: Any = None, blocks: Any = None) -> PipelineRun:
    run = Run(
        Pipeline(specs_from_cells(CELLS)),
        namespace,
        executor=SyncExecutor(),
        memo=memo,
        blocks=blocks,
    )
    return run.execute()


def _memo(run: PipelineRun) -> dict[str, dict[tuple[int, ...], Any]]:
    return {block: {r.key: r for r in run.instances(block)} for block in run.blocks}


def _namespace(fail: bool) -> dict[str, Any]:
    def flaky() -> float:
        if fail:
            raise RuntimeError("flaky")
        return 100.0

    return {"__builtins__": builtins, "calls": [], "flaky": flaky}


def test_a_subset_run_runs_the_block_and_its_ancestors_only() -> None:
    ns = _namespace(fail=False)
    run = _run(ns, blocks=["t"])
    assert run.blocks == ["a", "t"]
    assert ns["calls"] == ["a", "t:x", "t:1", "t:2"]


def test_reusing_a_run_reruns_only_what_did_not_complete_and_what_depends_on_it() -> None:
    ns = _namespace(fail=True)
    first = _run(ns)
    assert first.block_runs["t:2"].status == "failed"
    assert first.block_runs["e"].output == (15.0, ["r:2"])
    ns_again = _namespace(fail=False)
    second = _run(ns_again, memo=_memo(first))
    # Only the failed instance runs again, then the consumer of the reduce it feeds.
    assert ns_again["calls"] == ["t:2", "e"]
    assert second.status == "completed"
    assert second.block_runs["e"].output == (115.0, [])
    assert {u for u, r in second.block_runs.items() if r.reused} == {
        "a",
        "t:x",
        "t:1",
        "r:x",
        "r:1",
        "other",
    }


def test_a_reused_dynamic_instance_keeps_its_item_names() -> None:
    first = _run(_namespace(fail=False))
    second = _run(_namespace(fail=False), memo=_memo(first))
    assert [r.uuid for r in second.instances("t")] == ["t:x", "t:1", "t:2"]
    assert second.block_runs["a"].reused


def test_reuse_with_every_instance_completed_runs_nothing() -> None:
    first = _run(_namespace(fail=False))
    ns = _namespace(fail=False)
    second = _run(ns, memo=_memo(first))
    assert ns["calls"] == []
    assert second.block_runs["e"].output == first.block_runs["e"].output
