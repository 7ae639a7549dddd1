"""Failure isolation, placeholders, reduce policies, retries and timeouts (SPEC §2.6, §3.2, §8).

Every test runs on the synchronous, thread and process executors and on a real Dask cluster,
unless it says why not. Bodies may run in other processes, so what they do is counted in a
file (``note``), not in this process's memory.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    TIMEOUT_EXECUTORS,
    WAIT_FOR,
    note_to,
    notes,
    on_executors,
    outputs,
    run_cells,
    statuses,
)

from mage_nb import RunListener
from mage_nb.engine import BlockRun, PipelineRun, ProcessExecutor


@pytest.fixture
def executor(any_executor: Any) -> Any:
    """Failures, retries and reduce policies are the same on every executor."""
    return any_executor


def _error_line(run: PipelineRun, uuid: str) -> str:
    error = run.block_runs[uuid].error
    assert error is not None, f"{uuid} has no error"
    return f"{error.type}: {error.message}"


# -- one failure fails only its descendants -----------------------------------------------------
def test_one_failing_item_fails_only_its_own_descendants(executor: Any) -> None:
    run = run_cells(
        "%%loader unrelated\n'static branch'",
        "%%block loader items --dynamic\n[1, 2, 3]",
        "%%transformer risky\nif items == 2:\n    raise ValueError(f'bad item {items}')\nitems * 10",
        "%%transformer child\nrisky + 1",
        "%%transformer grandchild\nchild + 1",
        "%%transformer other_branch\nitems * 100",
        "%%transformer joined\n(grandchild, other_branch)",
        executor=executor,
    )
    assert run.status == "failed"
    assert statuses(run, "risky") == {
        "risky:0": "completed",
        "risky:1": "failed",
        "risky:2": "completed",
    }
    for block in ("child", "grandchild", "joined"):
        assert statuses(run, block) == {
            f"{block}:0": "completed",
            f"{block}:1": "upstream_failed",
            f"{block}:2": "completed",
        }
        placeholder = run.block_runs[f"{block}:1"]
        assert placeholder.attempts == 0
        assert placeholder.output is None
        assert "risky:1" in _error_line(run, f"{block}:1")
    assert outputs(run, "grandchild")["grandchild:2"] == 32
    assert statuses(run, "other_branch") == {f"other_branch:{i}": "completed" for i in range(3)}
    assert statuses(run, "unrelated") == {"unrelated": "completed"}
    error = run.block_runs["risky:1"].error
    assert error is not None
    assert (error.type, error.message) == ("ValueError", "bad item 2")


class _SignalOnUpstreamFailed(RunListener):
    """Creates the file ``flag`` when instance ``uuid`` is marked upstream_failed."""

    def __init__(self, uuid: str, flag: Path) -> None:
        self.uuid = uuid
        self.flag = flag

    def instance_finished(self, *, run: PipelineRun, instance: BlockRun) -> None:
        if instance.uuid == self.uuid and instance.status == "upstream_failed":
            self.flag.touch()


# Not on the sync executor: there risky:1 runs inline before risky:0's failure is handled.
@on_executors("threads", "processes", "dask")
def test_descendants_of_a_failure_are_upstream_failed_while_siblings_still_run(
    executor: Any, tmp_path: Path
) -> None:
    flag = tmp_path / "child0_marked"
    listener = _SignalOnUpstreamFailed("child:0", flag)
    run = run_cells(
        "%%block loader items --dynamic\n[0, 1]",
        "%%transformer risky\n"
        "if items == 0:\n    raise ValueError('zero')\n"
        "assert wait_for(FLAG, 5), 'child:0 was not marked while risky:1 ran'\n"
        "items",
        "%%transformer child\nrisky",
        namespace={**WAIT_FOR, "FLAG": str(flag)},
        executor=executor,
        listeners=[listener],
    )
    assert statuses(run, "risky") == {"risky:0": "failed", "risky:1": "completed"}
    assert statuses(run, "child") == {"child:0": "upstream_failed", "child:1": "completed"}


def test_upstream_failed_in_the_record_has_zero_attempts_and_names_the_cause(
    executor: Any,
) -> None:
    run = run_cells(
        "%%block loader items --dynamic\n[[1, 2], [{'block_uuid': 'ok'}, {'block_uuid': 'bad'}]]",
        "%%transformer risky\nassert items == 1, 'not one'\nitems",
        "%%transformer below\nrisky",
        executor=executor,
    )
    record = {r["uuid"]: r for r in run.to_record()["block_runs"]}
    assert record["risky:bad"]["status"] == "failed"
    assert record["risky:bad"]["attempts"] == 1
    assert record["risky:bad"]["error"]["type"] == "AssertionError"
    below = record["below:bad"]
    assert below["status"] == "upstream_failed"
    assert below["attempts"] == 0
    assert below["lineage"] == [["items", "bad"]]
    assert "risky:bad" in below["error"]["message"]
    assert record["below:ok"]["status"] == "completed"
    assert run.to_record()["status"] == "failed"


def test_error_traceback_contains_the_blocks_line(executor: Any) -> None:
    run = run_cells(
        "%%block loader items --dynamic\n[1, 2]",
        "%%transformer risky\nfactor = 3\nvalue = items * factor\n"
        "raise KeyError(f'missing {value}')\n",
        executor=executor,
    )
    error = run.block_runs["risky:1"].error
    assert error is not None
    assert error.type == "KeyError"
    assert error.traceback is not None
    assert "raise KeyError(f'missing {value}')" in error.traceback
    assert "line 4" in error.traceback  # the cell's line: the header is line 1


# -- a failed dynamic instance: placeholders ----------------------------------------------------
def test_failed_dynamic_instance_gives_one_placeholder_per_block_below(executor: Any) -> None:
    run = run_cells(
        "%%block loader outer --dynamic\n[['p', 'q'], [{'block_uuid': 'P'}, {'block_uuid': 'Q'}]]",
        "%%block transformer inner --dynamic\n"
        "if outer == 'q':\n    raise RuntimeError('no items for q')\n[outer + '0', outer + '1']",
        "%%transformer leaf\ninner.upper()",
        "%%transformer below_leaf\nleaf + '!'",
        executor=executor,
    )
    assert run.status == "failed"
    assert statuses(run, "inner") == {"inner:P": "completed", "inner:Q": "failed"}
    for block in ("leaf", "below_leaf"):
        assert statuses(run, block) == {
            f"{block}:P:0": "completed",
            f"{block}:P:1": "completed",
            f"{block}:Q": "upstream_failed",
        }
        placeholder = run.block_runs[f"{block}:Q"]
        assert placeholder.attempts == 0
        assert placeholder.lineage == [("outer", "Q")]
        assert "inner:Q" in _error_line(run, f"{block}:Q")
    assert outputs(run, "below_leaf")["below_leaf:P:1"] == "P1!"


def test_failed_top_level_dynamic_block_gives_placeholders_named_after_the_blocks(
    executor: Any,
) -> None:
    run = run_cells(
        "%%block loader items --dynamic\n{'a dict': 'cannot fan out'}",
        "%%transformer child\nitems",
        "%%transformer grandchild\nchild",
        executor=executor,
    )
    assert statuses(run) == {
        "items": "failed",
        "child": "upstream_failed",
        "grandchild": "upstream_failed",
    }
    for uuid in ("child", "grandchild"):
        assert run.block_runs[uuid].attempts == 0
        assert run.block_runs[uuid].lineage == []
        assert "'items'" in _error_line(run, uuid)
    assert run.status == "failed"


def test_reduce_below_a_failed_dynamic_instance_makes_its_consumer_upstream_failed(
    executor: Any,
) -> None:
    run = run_cells(
        "%%block loader outer --dynamic\n[1, 2]",
        "%%block transformer inner --dynamic\n"
        "if outer == 2:\n    raise RuntimeError('boom')\n[outer, outer]",
        "%%transformer leaf\ninner",
        "%%transformer collect --reduce\nleaf",
        "%%transformer consumer\ncollect",
        executor=executor,
    )
    assert statuses(run, "collect") == {
        "collect:0:0": "completed",
        "collect:0:1": "completed",
        "collect:1": "upstream_failed",
    }
    assert statuses(run, "consumer") == {"consumer:0": "completed", "consumer:1": "upstream_failed"}
    assert outputs(run, "consumer")["consumer:0"] == [1, 1]
    assert run.block_runs["consumer:1"].attempts == 0
    assert "inner:1" in _error_line(run, "consumer:1")


# -- reduce policies ----------------------------------------------------------------------------
def test_reduce_over_a_group_with_a_failure_makes_the_consumer_upstream_failed(
    executor: Any,
) -> None:
    run = run_cells(
        "%%block loader items --dynamic\n[1, 2, 3]",
        "%%transformer risky\nif items == 3:\n    raise ValueError('three')\nitems",
        "%%transformer collect --reduce\nrisky",
        "%%transformer consumer\ncollect",
        "%%transformer after_consumer\nconsumer",
        executor=executor,
    )
    assert statuses(run, "collect") == {
        "collect:0": "completed",
        "collect:1": "completed",
        "collect:2": "upstream_failed",
    }
    for uuid in ("consumer", "after_consumer"):
        assert run.block_runs[uuid].status == "upstream_failed"
        assert run.block_runs[uuid].attempts == 0
        assert "risky:2" in _error_line(run, uuid)
    assert run.status == "failed"


def test_partial_reduce_runs_on_the_successful_outputs(executor: Any) -> None:
    run = run_cells(
        "%%block loader items --dynamic\n[1, 2, 3, 4]",
        "%%transformer risky\nif items % 2 == 0:\n    raise ValueError('even')\nitems * 10",
        "%%transformer collect --reduce --reduce-policy partial\nrisky",
        "%%transformer consumer\n(collect, context.reduced_from, context.failed)",
        executor=executor,
    )
    assert statuses(run, "consumer") == {"consumer": "completed"}
    assert outputs(run, "consumer") == {
        "consumer": ([10, 30], ["collect:0", "collect:2"], ["collect:1", "collect:3"])
    }
    assert run.status == "failed"  # the failed instances still fail the run


def test_partial_reduce_lists_failed_reducing_instances_too(executor: Any) -> None:
    run = run_cells(
        "%%block loader items --dynamic\n[1, 2, 3]",
        "%%transformer collect --reduce --reduce-policy partial\n"
        "if items == 1:\n    raise ValueError('one')\nitems",
        "%%transformer consumer\n(collect, context.reduced_from, context.failed)",
        executor=executor,
    )
    assert statuses(run, "collect") == {
        "collect:0": "failed",
        "collect:1": "completed",
        "collect:2": "completed",
    }
    assert outputs(run, "consumer") == {
        "consumer": ([2, 3], ["collect:1", "collect:2"], ["collect:0"])
    }


def test_partial_reduce_with_every_instance_failing_passes_an_empty_list(executor: Any) -> None:
    run = run_cells(
        "%%block loader items --dynamic\n[1, 2]",
        "%%transformer risky\nraise ValueError('always')",
        "%%transformer uses\n(items, risky)",
        "%%transformer collect --reduce sum --reduce-policy partial\nuses",
        "%%transformer consumer\n(collect, context.reduced_from, context.failed)",
        executor=executor,
    )
    assert outputs(run, "consumer") == {"consumer": (0, [], ["collect:0", "collect:1"])}


def test_partial_reduce_over_a_fanout_that_was_never_produced(executor: Any) -> None:
    run = run_cells(
        "%%block loader outer --dynamic\n[1, 2]",
        "%%block transformer inner --dynamic\n"
        "if outer == 2:\n    raise RuntimeError('no inner items')\n[outer * 10, outer * 10 + 1]",
        "%%transformer leaf\ninner",
        "%%transformer collect --reduce --reduce-policy partial\nleaf",
        "%%transformer consumer\n(collect, context.reduced_from, context.failed)",
        executor=executor,
    )
    assert statuses(run, "consumer") == {"consumer:0": "completed", "consumer:1": "completed"}
    assert outputs(run, "consumer") == {
        "consumer:0": ([10, 11], ["collect:0:0", "collect:0:1"], []),
        "consumer:1": ([], [], ["collect:1"]),
    }
    assert run.block_runs["collect:1"].status == "upstream_failed"
    assert run.status == "failed"


def test_partial_reduce_at_top_level_over_a_failed_dynamic_block(executor: Any) -> None:
    run = run_cells(
        "%%block loader items --dynamic\nraise RuntimeError('source down')",
        "%%transformer child\nitems",
        "%%transformer collect --reduce --reduce-policy partial\nchild",
        "%%transformer consumer\n(collect, context.reduced_from, context.failed)",
        executor=executor,
    )
    assert statuses(run) == {
        "items": "failed",
        "child": "upstream_failed",
        "collect": "upstream_failed",
        "consumer": "completed",
    }
    assert outputs(run, "consumer") == {"consumer": ([], [], ["collect"])}


# -- retries ------------------------------------------------------------------------------------
def test_flaky_instance_completes_on_its_third_attempt(executor: Any, tmp_path: Path) -> None:
    log = tmp_path / "attempts"
    run = run_cells(
        "%%block loader items --dynamic\n[1, 2, 3]",
        "%%transformer flaky --retries 2\n"
        "note(items, context.attempt)\n"
        "if items == 2 and context.attempt < 3:\n"
        "    raise ConnectionError(f'try {context.attempt}')\n"
        "(items, context.attempt)",
        "%%transformer after\nflaky",
        namespace=note_to(log),
        executor=executor,
    )
    assert run.status == "completed"
    assert outputs(run, "flaky") == {"flaky:0": (1, 1), "flaky:1": (2, 3), "flaky:2": (3, 1)}
    assert [run.block_runs[f"flaky:{i}"].attempts for i in range(3)] == [1, 3, 1]
    assert sorted(notes(log)) == [(1, 1), (2, 1), (2, 2), (2, 3), (3, 1)]
    assert run.block_runs["flaky:1"].error is None
    assert run.to_record()["block_runs"][2]["attempts"] == 3
    assert statuses(run, "after") == {f"after:{i}": "completed" for i in range(3)}


def test_always_failing_instance_ends_failed_after_all_attempts(
    executor: Any, tmp_path: Path
) -> None:
    log = tmp_path / "attempts"
    run = run_cells(
        "%%block loader items --dynamic\n[1, 2]",
        "%%transformer doomed --retries 2\n"
        "note(items, context.attempt)\n"
        "if items == 2:\n    raise ConnectionError(f'attempt {context.attempt}')\n"
        "items",
        "%%transformer after\ndoomed",
        namespace=note_to(log),
        executor=executor,
    )
    assert statuses(run, "doomed") == {"doomed:0": "completed", "doomed:1": "failed"}
    assert run.block_runs["doomed:1"].attempts == 3
    assert run.block_runs["doomed:0"].attempts == 1
    assert sorted(notes(log)) == [(1, 1), (2, 1), (2, 2), (2, 3)]
    assert _error_line(run, "doomed:1") == "ConnectionError: attempt 3"
    assert run.block_runs["after:1"].status == "upstream_failed"
    assert run.block_runs["after:1"].attempts == 0
    assert run.status == "failed"


def test_upstream_failed_instances_are_not_retried(executor: Any) -> None:
    run = run_cells(
        "%%block loader items --dynamic\n[1, 2]",
        "%%transformer risky\nif items == 2:\n    raise ValueError('x')\nitems",
        "%%transformer patient --retries 3\nrisky",
        executor=executor,
    )
    assert run.block_runs["patient:1"].status == "upstream_failed"
    assert run.block_runs["patient:1"].attempts == 0


def test_retry_delay_waits_between_attempts(executor: Any, tmp_path: Path) -> None:
    log = tmp_path / "stamps"
    delay = 0.3
    start = time.monotonic()
    run = run_cells(
        "%%block loader items --dynamic\n[1]",
        f"%%transformer flaky --retries 2 --retry-delay {delay}\n"
        "import time\n"
        "note(context.attempt, time.monotonic())\n"  # one clock for every process here
        "if context.attempt < 3:\n    raise ConnectionError('later')\n"
        "items",
        namespace=note_to(log),
        executor=executor,
    )
    elapsed = time.monotonic() - start
    assert run.block_runs["flaky:0"].status == "completed"
    assert run.block_runs["flaky:0"].attempts == 3
    stamps = [stamp for _, stamp in sorted(notes(log))]
    assert [attempt for attempt, _ in sorted(notes(log))] == [1, 2, 3]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(gap >= delay * 0.95 for gap in gaps), gaps
    assert elapsed >= 2 * delay * 0.95


# -- timeouts ----------------------------------------------------------------------------------
# On threads, processes and Dask (TIMEOUT_EXECUTORS): the sync executor cannot abandon a body.


def _stuck(executor: Any, tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """Names for a body that gets stuck: ``wait_for(RELEASE, STUCK)``, and the file that frees it.

    On threads a stuck body waits (up to 5 s) for the test to free it once the run is over, so
    the run's duration shows it was abandoned; in a worker process the timeout's alarm
    interrupts it, so the duration shows that too. A Dask worker cannot give up a call, so
    there the body returns by itself after 0.6 s (3-4 × --timeout).
    """
    release = tmp_path / "release"
    seconds = 5.0 if _gives_up_calls(executor) else 0.6
    return {**WAIT_FOR, "RELEASE": str(release), "STUCK": seconds}, release


def _gives_up_calls(executor: Any) -> bool:
    return executor in ("threads", "processes")


@TIMEOUT_EXECUTORS
def test_timeout_fails_a_slow_instance_while_its_siblings_complete(
    executor: Any, tmp_path: Path
) -> None:
    names, release = _stuck(executor, tmp_path)
    start = time.monotonic()
    try:
        run = run_cells(
            "%%block loader items --dynamic\n[0.0, 5.0, 0.01, 0.02]",
            "%%transformer slow --timeout 0.2\n"
            "import time\n"
            "if items > 1:\n    wait_for(RELEASE, STUCK)\n"
            "else:\n    time.sleep(items)\n"
            "items",
            "%%transformer after\nslow",
            namespace=names,
            executor=executor,
        )
        elapsed = time.monotonic() - start
    finally:
        release.touch()  # free the abandoned worker
    if _gives_up_calls(executor):
        assert elapsed < 2.5  # the stuck call was abandoned or interrupted, not waited for
    assert statuses(run, "slow") == {
        "slow:0": "completed",
        "slow:1": "failed",
        "slow:2": "completed",
        "slow:3": "completed",
    }
    assert run.block_runs["slow:1"].error is not None
    assert run.block_runs["slow:1"].error.type == "TimeoutError"
    assert run.block_runs["slow:1"].attempts == 1
    assert statuses(run, "after")["after:1"] == "upstream_failed"
    assert statuses(run, "after")["after:3"] == "completed"
    assert run.status == "failed"


@TIMEOUT_EXECUTORS
def test_timed_out_instance_is_retried(executor: Any, tmp_path: Path) -> None:
    names, release = _stuck(executor, tmp_path)
    start = time.monotonic()
    try:
        run = run_cells(
            "%%block loader items --dynamic\n[1, 2]",
            "%%transformer slow --timeout 0.2 --retries 2\n"
            "if items == 2 and context.attempt == 1:\n    wait_for(RELEASE, STUCK)\n"
            "(items, context.attempt)",
            namespace=names,
            executor=executor,
        )
        elapsed = time.monotonic() - start
    finally:
        release.touch()
    if _gives_up_calls(executor):
        assert elapsed < 2.5
    assert outputs(run, "slow") == {"slow:0": (1, 1), "slow:1": (2, 2)}
    assert run.block_runs["slow:1"].attempts == 2
    assert run.status == "completed"


@TIMEOUT_EXECUTORS
def test_instance_that_times_out_on_every_attempt_fails_with_timeout_error(
    executor: Any, tmp_path: Path
) -> None:
    names, release = _stuck(executor, tmp_path)
    try:
        run = run_cells(
            "%%block loader items --dynamic\n[1, 2]",
            "%%transformer slow --timeout 0.15 --retries 1\n"
            "if items == 2:\n    wait_for(RELEASE, STUCK)\n"
            "items",
            namespace=names,
            executor=executor,
        )
    finally:
        release.touch()
    assert statuses(run, "slow") == {"slow:0": "completed", "slow:1": "failed"}
    assert run.block_runs["slow:1"].attempts == 2
    assert _error_line(run, "slow:1").startswith("TimeoutError")


@TIMEOUT_EXECUTORS
@pytest.mark.parametrize("policy", ["all", "partial"])
def test_timed_out_instance_counts_as_failed_in_a_reduce(
    policy: str, executor: Any, tmp_path: Path
) -> None:
    names, release = _stuck(executor, tmp_path)
    try:
        run = run_cells(
            "%%block loader items --dynamic\n[1, 2, 3]",
            "%%transformer slow --timeout 0.2\nif items == 2:\n    wait_for(RELEASE, STUCK)\nitems",
            f"%%transformer collect --reduce --reduce-policy {policy}\nslow",
            "%%transformer consumer\n(collect, context.failed)",
            namespace=names,
            executor=executor,
        )
    finally:
        release.touch()
    consumer = run.block_runs["consumer"]
    if policy == "all":
        assert consumer.status == "upstream_failed"
        assert "slow:1" in _error_line(run, "consumer")
    else:
        assert consumer.status == "completed"
        assert consumer.output == ([1, 3], ["collect:1"])


def test_a_body_stuck_where_no_signal_reaches_is_abandoned_at_the_backstop(
    tmp_path: Path,
) -> None:
    """On processes the worker's alarm cannot interrupt a long C call (``sum(range(...))``):
    the scheduler's backstop deadline (2 × --timeout + 1 s) fails the instance, its siblings
    complete on the other worker, and the run does not wait for the stuck process at the
    end: that process is terminated."""
    pid_file = tmp_path / "stuck.pid"
    start = time.monotonic()
    run = run_cells(
        "%%block loader items --dynamic\n[0, 1, 2, 3]",
        "%%transformer slow --timeout 0.5\n"
        "import os\n"
        "if items == 0:\n"
        "    open(PID_FILE, 'w').write(str(os.getpid()))\n"
        "    sum(range(10**12))\n"
        "items",
        namespace={"PID_FILE": str(pid_file)},
        executor=ProcessExecutor(2),
    )
    elapsed = time.monotonic() - start
    assert statuses(run, "slow") == {
        "slow:0": "failed",
        "slow:1": "completed",
        "slow:2": "completed",
        "slow:3": "completed",
    }
    assert _error_line(run, "slow:0") == (
        "TimeoutError: instance 'slow:0' ran longer than --timeout 0.5s"
    )
    assert elapsed < 30  # the sum would take hours: the run did not wait for it
    stuck = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(stuck):
        assert time.monotonic() < deadline, f"worker process {stuck} outlived the run"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# Not on the sync executor: it runs one instance at a time, inline.
@on_executors("threads", "processes", "dask")
def test_time_spent_waiting_for_a_worker_does_not_count_towards_the_timeout(
    executor: Any,
) -> None:
    # Four instances of 0.3 s each, on 2 workers (processes, Dask) or 8 threads: each one runs
    # well within its --timeout, whether it had to wait for a worker or not.
    run = run_cells(
        "%%block loader items --dynamic\n[1, 2, 3, 4]",
        "%%transformer steady --timeout 0.5\nimport time\ntime.sleep(0.3)\nitems",
        executor=executor,
    )
    assert statuses(run, "steady") == {f"steady:{i}": "completed" for i in range(4)}
    assert run.status == "completed"
