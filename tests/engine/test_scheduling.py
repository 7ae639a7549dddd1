"""The execution model (SPEC §3.2, §3.1 cancellation, §4 scale): event-driven scheduling,
determinism across executors, concurrency bounds, cancellation and listener events.

Tests run on the synchronous, thread and process executors and on a real Dask cluster where
what they check does not depend on the executor; each one that does not says why. Bodies may
run in other processes: they signal each other with files and note what they did in one.
"""

from __future__ import annotations

import builtins
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    TIMEOUT_EXECUTORS,
    WAIT_FOR,
    build_run,
    note_to,
    notebook_code,
    notes,
    on_executors,
    outputs,
    run_cells,
    specs_from_cells,
    statuses,
    wait_for,
)

from mage_nb import RunListener
from mage_nb.engine import BlockRun, Pipeline, PipelineRun, Run, ThreadExecutor
from mage_nb.engine.executors import default_workers


@pytest.fixture
def executor(any_executor: Any) -> Any:
    """The execution model is the same on every executor."""
    return any_executor


def _namespace(**names: Any) -> dict[str, Any]:
    return {"__builtins__": builtins, "__name__": "__main__", **names}


class Recorder(RunListener):
    """Keeps every event, in delivery order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.final_status: str | None = None

    def run_started(self, *, run: PipelineRun) -> None:
        self.events.append(("run_started", run.run_id))

    def instance_created(self, *, run: PipelineRun, instance: BlockRun) -> None:
        self.events.append(("created", instance.uuid))

    def instance_started(self, *, run: PipelineRun, instance: BlockRun) -> None:
        self.events.append(("started", instance.uuid))

    def instance_retried(self, *, run: PipelineRun, instance: BlockRun) -> None:
        self.events.append(("retried", instance.uuid))

    def instance_finished(self, *, run: PipelineRun, instance: BlockRun) -> None:
        self.events.append(("finished", (instance.uuid, instance.status)))

    def warning(self, *, run: PipelineRun, message: str) -> None:
        self.events.append(("warning", message))

    def run_finished(self, *, run: PipelineRun) -> None:
        self.final_status = run.status
        self.events.append(("run_finished", run.status))

    def of(self, kind: str) -> list[Any]:
        return [value for name, value in self.events if name == kind]


class Peak:
    """Counts bodies inside ``with peak:`` at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def __enter__(self) -> Peak:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1


# -- event-driven, no level barrier ------------------------------------------------------------
def test_grandchild_of_the_first_item_finishes_before_the_child_of_the_last_starts(
    executor: Any, tmp_path: Path
) -> None:
    path = tmp_path / "log"
    run = run_cells(
        "%%block loader items --dynamic\nlist(range(5))",
        "%%transformer child --max-concurrency 1\n"
        "note('child', items, 'start')\n"
        "sleep(0.05)\n"
        "note('child', items, 'end')\n"
        "items",
        "%%transformer grandchild\n"
        "note('grandchild', child, 'start')\n"
        "note('grandchild', child, 'end')\n"
        "child",
        namespace={**note_to(path), "sleep": time.sleep},
        executor=executor,
    )
    assert run.status == "completed"
    log = notes(path)
    assert len(log) == 20
    assert log.index(("grandchild", 0, "end")) < log.index(("child", 4, "start"))
    first_grandchild = run.block_runs["grandchild:0"]
    last_child = run.block_runs["child:4"]
    assert first_grandchild.ended is not None
    assert last_child.started is not None
    assert first_grandchild.ended <= last_child.started


# Not on the sync executor: there child:2 waits inline, before any grandchild can run.
@on_executors("threads", "processes", "dask")
def test_slow_item_does_not_hold_back_the_descendants_of_fast_items(
    executor: Any, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    run = run_cells(
        "%%block loader items --dynamic\n[0, 1, 2]",
        "%%transformer child\n"
        "if items == 2:\n"
        "    assert wait_for(RELEASE, 5), 'no grandchild ran while child:2 ran'\n"
        "items",
        "%%transformer grandchild\nif child == 1:\n    open(RELEASE, 'w').close()\nchild",
        namespace={**WAIT_FOR, "RELEASE": str(release)},
        executor=executor,
    )
    # child:2 waits for grandchild:1: with a level barrier it would time out and fail.
    assert run.status == "completed"
    assert statuses(run, "child")["child:2"] == "completed"


# Not on the sync executor: there one instance runs at a time, so one of them has to wait.
@on_executors("threads", "processes", "dask")
def test_reduce_over_an_empty_fanout_does_not_wait_for_unrelated_work(
    executor: Any, tmp_path: Path
) -> None:
    ran = tmp_path / "consumer_ran"
    run = run_cells(
        "%%block loader nothing --dynamic\n[]",
        "%%transformer child\nnothing",
        "%%transformer collect --reduce\nchild",
        "%%transformer consumer\nopen(RAN, 'w').close()\ncollect",
        "%%loader unrelated\nassert wait_for(RAN, 5), 'consumer waited for unrelated work'\n1",
        namespace={**WAIT_FOR, "RAN": str(ran)},
        executor=executor,
    )
    assert run.status == "completed"
    assert outputs(run, "consumer") == {"consumer": []}


def test_cancel_during_a_retry_delay_does_not_wait_for_the_delay(
    executor: Any, tmp_path: Path
) -> None:
    failed_once = tmp_path / "failed_once"
    recorder = Recorder()
    run, chosen = build_run(
        "%%block loader items --dynamic\n[1, 2]",
        "%%transformer flaky --retries 3 --retry-delay 30\n"
        "if items == 2:\n    open(FAILED_ONCE, 'w').close()\n    raise ConnectionError('later')\n"
        "items",
        namespace={"FAILED_ONCE": str(failed_once)},
        executor=executor,
        listeners=[recorder],
    )

    def cancel_after_failure() -> None:
        if wait_for(failed_once, 10):
            time.sleep(0.1)
            run.cancel()

    canceller = threading.Thread(target=cancel_after_failure)
    canceller.start()
    start = time.monotonic()
    try:
        record = run.execute()
    finally:
        canceller.join()
        chosen.close()
    assert time.monotonic() - start < 10
    assert record.status == "cancelled"
    assert statuses(record, "flaky") == {"flaky:0": "completed", "flaky:1": "cancelled"}
    assert record.block_runs["flaky:1"].attempts == 1
    assert recorder.events[-1] == ("run_finished", "cancelled")


# On threads only: about the thread executor's own default size.
def test_default_thread_executor_runs_several_instances_at_once() -> None:
    assert ThreadExecutor().workers == default_workers() == min(32, (os.cpu_count() or 1) + 4)
    barrier = threading.Barrier(3, timeout=5)
    record = Run(
        Pipeline(
            specs_from_cells(
                [
                    "%%block loader items --dynamic\n[1, 2, 3]",
                    "%%transformer meet\nbarrier.wait()\nitems",
                ]
            )
        ),
        _namespace(barrier=barrier),
    ).execute()
    assert statuses(record, "meet") == {f"meet:{i}": "completed" for i in range(3)}


# -- determinism -------------------------------------------------------------------------------
DETERMINISM_CELLS = (
    "%%block loader items --dynamic\n"
    "[list(range(30)), [{'block_uuid': f'n{i}', 'parity': i % 2} for i in range(30)]]",
    "%%block transformer parts --dynamic\n"
    "jitter()\n[[f'{items}.{j}' for j in range(items % 4)], [{'j': j} for j in range(items % 4)]]",
    "%%transformer leaf\njitter()\n(parts, context.metadata['parity'], context.metadata['j'])",
    "%%transformer per_item --reduce\njitter()\n[leaf]",
    "%%transformer summary\njitter()\n(per_item, context.reduced_from, items)",
    "%%transformer everything --reduce\nsummary",
    "%%transformer final\n(len(everything), everything[-1], context.reduced_from[:3])",
)


def _fingerprint(run: PipelineRun) -> list[tuple[str, str, Any]]:
    return [(r.uuid, r.status, r.output) for r in run.instances()]


JITTER = notebook_code(
    "def jitter():\n    import random, time\n    time.sleep(random.random() * 0.002)\n"
)


@on_executors("threads", "processes", "dask")
def test_concurrent_executors_give_the_same_outputs_and_order_as_sync_for_a_nested_fanout(
    executor: Any,
) -> None:
    expected = _fingerprint(run_cells(*DETERMINISM_CELLS, namespace=JITTER))
    assert len(expected) > 150
    assert expected[-1][0] == "final"
    for _ in range(3):
        record = run_cells(*DETERMINISM_CELLS, namespace=JITTER, executor=executor)
        assert record.status == "completed"
        assert _fingerprint(record) == expected
        assert list(record.block_runs) == [uuid for uuid, _, _ in expected]


# -- concurrency bounds ------------------------------------------------------------------------
# On threads only: the peak is measured with a lock shared by the bodies of this process.
def test_max_concurrency_bounds_the_instances_of_a_block_running_at_once() -> None:
    limited, unlimited = Peak(), Peak()
    run = run_cells(
        "%%block loader items --dynamic\nlist(range(12))",
        "%%transformer limited_block --max-concurrency 2\nwith limited:\n    sleep(0.03)\nitems",
        "%%transformer unlimited_block\nwith unlimited:\n    sleep(0.03)\nitems",
        namespace={"limited": limited, "unlimited": unlimited, "sleep": time.sleep},
        executor="threads",
    )
    assert run.status == "completed"
    assert 1 <= limited.peak <= 2
    assert unlimited.peak > 2  # the measurement can see concurrency when there is some
    assert outputs(run, "limited_block") == {f"limited_block:{i}": i for i in range(12)}


# On threads only: the same in-process peak measurement.
def test_max_concurrency_holds_with_retries() -> None:
    peak = Peak()
    run = run_cells(
        "%%block loader items --dynamic\nlist(range(8))",
        "%%transformer flaky --max-concurrency 2 --retries 1\n"
        "with peak:\n    sleep(0.02)\n"
        "if context.attempt == 1 and items % 2:\n    raise ConnectionError('retry me')\n"
        "items",
        namespace={"peak": peak, "sleep": time.sleep},
        executor="threads",
    )
    assert run.status == "completed"
    assert peak.peak <= 2


# -- cancellation ------------------------------------------------------------------------------
# Not on the sync executor: the run is cancelled while a body is stuck, which would be inline.
@on_executors("threads", "processes", "dask")
def test_cancel_from_another_thread_cancels_pending_and_running_instances(
    executor: Any, tmp_path: Path
) -> None:
    blocked, gate = tmp_path / "blocked", tmp_path / "gate"
    recorder = Recorder()
    run, chosen = build_run(
        "%%block loader items --dynamic\nlist(range(8))",
        "%%transformer work --max-concurrency 1\n"
        "if items >= 3:\n    open(BLOCKED, 'w').close()\n    wait_for(GATE, 10)\n"
        "items * 10",
        "%%transformer after\nwork + 1",
        namespace={**WAIT_FOR, "BLOCKED": str(blocked), "GATE": str(gate)},
        executor=executor,
        listeners=[recorder],
    )

    def cancel_when_blocked() -> None:
        if wait_for(blocked, 10):
            run.cancel()

    canceller = threading.Thread(target=cancel_when_blocked)
    canceller.start()
    start = time.monotonic()
    try:
        record = run.execute()
        elapsed = time.monotonic() - start
    finally:
        gate.touch()
        canceller.join()
        chosen.close()
    assert elapsed < 5
    assert record.status == "cancelled"
    assert recorder.final_status == "cancelled"
    work = statuses(record, "work")
    assert [work[f"work:{i}"] for i in range(3)] == ["completed"] * 3
    assert [work[f"work:{i}"] for i in range(3, 8)] == ["cancelled"] * 5
    assert outputs(record, "work")["work:2"] == 20  # completed work is kept
    assert record.block_runs["work:3"].attempts == 1  # it was running
    assert record.block_runs["work:7"].attempts == 0  # it never started
    assert all(
        status in ("completed", "cancelled") for status in statuses(record, "after").values()
    )
    assert "after:3" not in record.block_runs
    assert recorder.events[-1] == ("run_finished", "cancelled")
    finished = [uuid for uuid, _ in recorder.of("finished")]
    assert sorted(finished) == sorted(record.block_runs)


@pytest.mark.parametrize("listeners", [1, 2, 3, 4])
def test_every_listener_gets_every_event_in_the_same_order(listeners: int) -> None:
    """The hub spells out calls for two and three listeners of a per-instance event and
    loops for more: each way, every listener sees the whole run, in one order."""
    recorders = [Recorder() for _ in range(listeners)]
    run = run_cells(
        "%%block loader items --dynamic\n[1, 2, 3]",
        "%%transformer child --retries 1 --retry-delay 0\n"
        "if items == 2 and context.attempt == 1:\n    raise ValueError('once')\nitems",
        "%%transformer total --reduce sum\nchild",
        listeners=[RunListener(), *recorders],  # one that listens to nothing, too
    )
    assert run.status == "completed"
    first = recorders[0].events
    assert [r.events for r in recorders] == [first] * listeners
    assert first[0] == ("run_started", run.run_id)
    assert first[-1] == ("run_finished", "completed")
    assert recorders[0].of("retried") == ["child:1"]
    assert recorders[0].of("started").count("child:1") == 2
    assert sorted(uuid for uuid, _ in recorders[0].of("finished")) == sorted(run.block_runs)


# On sync only: a KeyboardInterrupt raised in this process (a worker process's is its own).
def test_keyboard_interrupt_in_a_body_cancels_the_run_on_the_sync_executor() -> None:
    recorder = Recorder()
    run = run_cells(
        "%%block loader items --dynamic\n[1, 2, 3]",
        "%%transformer child\nif items == 2:\n    raise KeyboardInterrupt\nitems",
        "%%transformer after\nchild",
        listeners=[recorder],
    )
    assert run.status == "cancelled"
    assert recorder.events[-1] == ("run_finished", "cancelled")
    assert statuses(run, "child")["child:1"] == "cancelled"  # the one that raised
    assert statuses(run, "child")["child:2"] == "cancelled"
    assert run.block_runs["items"].status == "completed"


# On threads only: a KeyboardInterrupt raised in one of this process's worker threads.
def test_keyboard_interrupt_in_a_body_ends_the_run_on_the_thread_executor() -> None:
    recorder = Recorder()
    executor = ThreadExecutor(2)
    run = Run(
        Pipeline(
            specs_from_cells(
                [
                    "%%block loader items --dynamic\n[1, 2, 3]",
                    "%%transformer child\nif items == 2:\n    raise KeyboardInterrupt\nitems",
                ]
            )
        ),
        _namespace(),
        executor=executor,
        listeners=[recorder],
    )
    result: list[PipelineRun] = []
    # A daemon thread, so that a hang fails this test instead of blocking the session.
    thread = threading.Thread(target=lambda: result.append(run.execute()), daemon=True)
    thread.start()
    thread.join(3)
    executor.close(wait=False)
    assert not thread.is_alive(), "execute() did not return"
    assert result[0].status == "cancelled"
    assert recorder.events[-1] == ("run_finished", "cancelled")


# On threads only: SIGINT to this process's main thread while its worker threads run.
def test_ctrl_c_during_a_threaded_run_cancels_it_and_keeps_completed_work() -> None:
    blocked, gate = threading.Event(), threading.Event()
    recorder = Recorder()
    executor = ThreadExecutor(4)
    run = Run(
        Pipeline(
            specs_from_cells(
                [
                    "%%block loader items --dynamic\nlist(range(6))",
                    "%%transformer work --max-concurrency 1\n"
                    "if items >= 2:\n    blocked.set()\n    gate.wait(10)\nitems",
                ]
            )
        ),
        _namespace(blocked=blocked, gate=gate),
        executor=executor,
        listeners=[recorder],
    )
    main = threading.get_ident()

    def press_ctrl_c() -> None:
        if blocked.wait(10):
            time.sleep(0.05)
            signal.pthread_kill(main, signal.SIGINT)

    presser = threading.Thread(target=press_ctrl_c)
    presser.start()
    try:
        record = run.execute()
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped Run.execute()")
    finally:
        gate.set()
        presser.join()
        executor.close()
    assert record.status == "cancelled"
    assert statuses(record, "work") == {
        "work:0": "completed",
        "work:1": "completed",
        **{f"work:{i}": "cancelled" for i in range(2, 6)},
    }
    assert recorder.events[-1] == ("run_finished", "cancelled")


# -- listener events ---------------------------------------------------------------------------
LISTENER_CELLS = (
    "%%loader static\n'config'",
    "%%block loader items --dynamic\n"
    "[[1, 2, 3, 4], [{'block_uuid': 'x'}, {'block_uuid': 'x'}, {}, {}]]",
    "%%transformer flaky --retries 2\n"
    "if items == 1 and context.attempt < 3:\n    raise ConnectionError('again')\n(items, static)",
    "%%transformer risky\nif items == 4:\n    raise ValueError('four')\nflaky",
    "%%transformer below\nrisky",
    "%%transformer collect --reduce --reduce-policy partial\nbelow",
    "%%transformer final\ncollect",
    "%%block loader nothing --dynamic\n[]",
    "%%transformer never\nnothing",
)


def test_listener_sees_each_instance_created_and_finished_exactly_once(executor: Any) -> None:
    recorder = Recorder()
    run = run_cells(*LISTENER_CELLS, executor=executor, listeners=[recorder])
    assert run.status == "failed"
    every = list(run.block_runs)
    created = recorder.of("created")
    finished = [uuid for uuid, _ in recorder.of("finished")]
    assert sorted(created) == sorted(every)
    assert sorted(finished) == sorted(every)
    assert len(set(created)) == len(created) == len(every)
    assert dict(recorder.of("finished")) == statuses(run)
    assert len(recorder.of("started")) == sum(r.attempts for r in run.instances())
    assert recorder.of("retried") == ["flaky:x", "flaky:x"]
    assert recorder.of("warning") == run.warnings != []
    assert [name for name, _ in recorder.events].count("run_started") == 1
    assert recorder.events[0][0] == "run_started"
    assert recorder.events[-1] == ("run_finished", "failed")
    assert recorder.final_status == run.status
    per_instance: dict[str, list[str]] = {}
    for name, value in recorder.events:
        if name in ("created", "started", "retried"):
            per_instance.setdefault(value, []).append(name)
        elif name == "finished":
            per_instance.setdefault(value[0], []).append(name)
    assert per_instance["flaky:x"] == [
        "created",
        *["started", "retried"] * 2,
        "started",
        "finished",
    ]
    assert per_instance["below:3"] == ["created", "finished"]  # a placeholder never starts
    for kinds in per_instance.values():
        assert kinds[0] == "created"
        assert kinds[-1] == "finished"


# On threads, processes and Dask (TIMEOUT_EXECUTORS): the sync executor cannot abandon a body.
@TIMEOUT_EXECUTORS
def test_timed_out_instance_is_finished_once_even_when_its_body_returns_later(
    executor: Any,
) -> None:
    recorder = Recorder()
    run = run_cells(
        "%%block loader items --dynamic\n[0.0, 0.4]",
        "%%transformer slow --timeout 0.1\nsleep(items)\nitems",
        "%%transformer after\nsleep(0.5)\nslow",
        namespace={"sleep": time.sleep},
        executor=executor,
        listeners=[recorder],
    )
    # after:0 keeps the run going until the timed-out body of slow:1 has returned.
    assert statuses(run, "slow") == {"slow:0": "completed", "slow:1": "failed"}
    finished = [uuid for uuid, _ in recorder.of("finished")]
    assert finished.count("slow:1") == 1
    assert sorted(finished) == sorted(run.block_runs)


# -- scale -------------------------------------------------------------------------------------
def test_twenty_thousand_item_fanout_with_sum_reduce(executor: Any) -> None:
    start = time.monotonic()
    run = run_cells(
        "%%block loader items --dynamic\nlist(range(20_000))",
        "%%transformer double --reduce sum\nitems * 2",
        "%%transformer total\ndouble",
        executor=executor,
    )
    assert time.monotonic() - start < 20
    assert run.status == "completed"
    assert outputs(run, "total") == {"total": 2 * sum(range(20_000))}
    assert run.counts("double")["completed"] == 20_000
    assert run.block_runs["total"].reduced_from[:2] == ["double:0", "double:1"]
    assert len(run.block_runs["total"].reduced_from) == 20_000
