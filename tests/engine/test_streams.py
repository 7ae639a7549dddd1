"""Stream mode: a dynamic block whose body returns a generator (SPEC §2.1 item 5, §2.6, §4).

Children start while the generator is still producing; back-pressure (``--window``) bounds
what is in flight; reduces fold in item order; failures, empty streams, names, nesting,
``keep_outputs="none"``, the record, ``--max-children`` and cancellation.
"""

from __future__ import annotations

import builtins
import itertools
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
import pytest
from helpers import outputs, specs_from_cells, statuses

from mage_nb.engine import (
    Item,
    Pipeline,
    PipelineRun,
    Run,
    RunListener,
    SyncExecutor,
    ThreadExecutor,
)
from mage_nb.engine.executors import Executor
from mage_nb.engine.streams import DEFAULT_WINDOW


class Log:
    """A list shared by the generator and the children, safe across worker threads."""

    def __init__(self) -> None:
        self.entries: list[tuple[Any, ...]] = []
        self.lock = threading.Lock()

    def __call__(self, *entry: Any) -> None:
        with self.lock:
            self.entries.append(entry)

    def index(self, kind: str) -> int:
        return next(i for i, e in enumerate(self.entries) if e[0] == kind)

    def count(self, kind: str) -> int:
        return sum(1 for e in self.entries if e[0] == kind)


def make_executor(executor: str) -> Executor:
    return SyncExecutor() if executor == "sync" else ThreadExecutor(8)


def run_with(
    cells: Iterable[str],
    executor: str,
    namespace: Mapping[str, Any] | None = None,
    keep_outputs: str = "all",
    listeners: Iterable[RunListener] = (),
) -> PipelineRun:
    """``run_cells`` with ``keep_outputs``."""
    ns: dict[str, Any] = {"__builtins__": builtins, "__name__": "__main__", "time": time}
    ns.update(namespace or {})
    chosen = make_executor(executor)
    try:
        return Run(
            Pipeline(specs_from_cells(cells)),
            ns,
            executor=chosen,
            listeners=list(listeners),
            keep_outputs=keep_outputs,
        ).execute()
    finally:
        chosen.close()


def gen_cell(header: str, body: str) -> str:
    """A dynamic block cell whose body defines ``gen()`` (indented ``body``) and returns it."""
    lines = "\n".join("    " + line for line in body.strip("\n").splitlines())
    return f"%%loader {header}\ndef gen():\n{lines}\ngen()"


def ok(run: PipelineRun, uuid: str) -> Any:
    inst = run.block_runs[uuid]
    assert inst.status == "completed", inst.error
    return inst.output


# -- children start while the generator produces -------------------------------------------


def test_children_start_before_a_long_generator_finishes_on_threads() -> None:
    log = Log()
    seen: list[str] = []

    class Watch(RunListener):
        def instance_finished(self, *, run: PipelineRun, instance: Any) -> None:
            if instance.block == "part" and not seen:
                seen.append(run.block_runs["src"].status)

    gen = gen_cell(
        "src --dynamic",
        "for i in range(100):\n    note('yield', i)\n    yield i\n    time.sleep(0.001)\n"
        "note('end')",
    )
    run = run_with(
        [gen, "%%transformer part\nnote('child', src)\nsrc"],
        "threads",
        {"note": log},
        listeners=[Watch()],
    )
    assert run.status == "completed"
    assert log.index("child") < log.index("end")
    assert seen == ["running"]  # the producer stays running while its children finish
    assert list(outputs(run, "part").values()) == list(range(100))


def test_children_start_before_the_generator_finishes_on_sync_with_a_window() -> None:
    log = Log()
    gen = gen_cell(
        "src --dynamic --window 4", "for i in range(20):\n    note('yield', i)\n    yield i"
    )
    run_with([gen, "%%transformer part\nnote('child', src)\nsrc"], "sync", {"note": log})
    first_child = log.index("child")
    assert sum(1 for e in log.entries[:first_child] if e[0] == "yield") <= 4
    assert log.count("child") == 20


def test_first_child_starts_while_a_slow_generator_is_still_producing() -> None:
    log = Log()
    gen = gen_cell(
        "src --dynamic",
        "for i in range(8):\n    note('yield', i)\n    yield i\n    time.sleep(0.02)\nnote('end')",
    )
    run_with([gen, "%%transformer part\nnote('child', src)\nsrc"], "threads", {"note": log})
    assert log.index("child") < log.index("end")


# -- back-pressure -------------------------------------------------------------------------


class Gauge:
    """Children produced minus children finished, sampled by the generator before each yield."""

    def __init__(self) -> None:
        self.produced = 0
        self.finished = 0
        self.samples: list[int] = []
        self.lock = threading.Lock()

    def before_yield(self) -> None:
        with self.lock:
            self.produced += 1
            self.samples.append(self.produced - self.finished)

    def done(self) -> None:
        with self.lock:
            self.finished += 1


def test_window_bounds_what_is_in_flight(executor: str) -> None:
    gauge = Gauge()
    gen = gen_cell(
        "src --dynamic --window 4", "for i in range(24):\n    gauge.before_yield()\n    yield i"
    )
    run = run_with(
        [
            gen,
            "%%transformer part --reduce sum\ntime.sleep(0.003)\ngauge.done()\nsrc",
            "%%exporter total\npart",
        ],
        executor,
        {"gauge": gauge},
    )
    assert ok(run, "total") == sum(range(24))
    assert len(gauge.samples) == 24
    assert 2 <= max(gauge.samples) <= 4


def test_default_window_bounds_what_is_in_flight() -> None:
    gauge = Gauge()
    n = 2 * DEFAULT_WINDOW + 50
    gen = gen_cell("src --dynamic", f"for i in range({n}):\n    gauge.before_yield()\n    yield i")
    run = run_with(
        [gen, "%%transformer part\ntime.sleep(0.001)\ngauge.done()\nsrc"],
        "threads",
        {"gauge": gauge},
    )
    assert run.status == "completed"
    assert max(gauge.samples) <= DEFAULT_WINDOW


# -- incremental reduce == batch reduce -----------------------------------------------------


class Joined:
    """An initial/step/finish reducer whose result depends on the order of the outputs."""

    def initial(self) -> list[str]:
        return []

    def step(self, acc: list[str], value: Any) -> list[str]:
        acc.append(str(value))
        return acc

    def finish(self, acc: list[str]) -> str:
        return ",".join(acc)


def in_order(values: list[Any]) -> tuple[Any, ...]:
    return tuple(values)


REDUCERS = {
    "sum": ("sum", "src * 2", sum(2 * i for i in range(12))),
    "count": ("count", "src", 12),
    "merge": ("merge", "{src % 3: src}", {0: 9, 1: 10, 2: 11}),
    "concat-lists": ("concat", "[src, -src]", [x for i in range(12) for x in (i, -i)]),
    "concat-frames": ("concat", "pd.DataFrame({'v': [src], 'w': [src * 10]})", None),
    "list": ("list", "[src, src] if src % 2 else src", None),
    "callable": ("in_order", "src", tuple(range(12))),
    "class": ("Joined", "src", ",".join(str(i) for i in range(12))),
}


def _comparable(value: Any) -> Any:
    if isinstance(value, pd.DataFrame):
        return ("frame", value.to_dict(orient="list"), list(value.index))
    return value


@pytest.mark.parametrize("case", list(REDUCERS))
def test_incremental_reduce_matches_batch(case: str, executor: str) -> None:
    strategy, body, expected = REDUCERS[case]
    # Later items finish first on threads: the fold must still follow item order.
    child = f"%%transformer part --reduce {strategy}\ntime.sleep(0.001 * ((11 - src) % 4))\n{body}"
    total = "%%exporter total\n(part, context.reduced_from)"
    ns = {"pd": pd, "Joined": Joined, "in_order": in_order}
    streamed = run_with(
        ["%%loader src --dynamic\n(i for i in range(12))", child, total], executor, ns
    )
    batch = run_with(["%%loader src --dynamic\nlist(range(12))", child, total], executor, ns)
    s_value, s_from = ok(streamed, "total")
    b_value, b_from = ok(batch, "total")
    assert _comparable(s_value) == _comparable(b_value)
    assert s_from == b_from == [f"part:{i}" for i in range(12)]
    if expected is not None:
        assert s_value == expected
    if case == "concat-frames":
        assert s_value["v"].tolist() == list(range(12))
        assert list(s_value.index) == list(range(12))


# -- failures --------------------------------------------------------------------------------

RAISES_MIDWAY = gen_cell(
    "src --dynamic", "yield 1\nyield 2\nyield 3\nraise ValueError('source went away')"
)


@pytest.mark.parametrize("policy", ["all", "partial"])
def test_generator_raising_midway(executor: str, policy: str) -> None:
    run = run_with(
        [
            RAISES_MIDWAY,
            "%%transformer part\nsrc * 10",
            f"%%transformer red --reduce sum --reduce-policy {policy}\npart",
            "%%exporter total\n(red, context.reduced_from, context.failed)",
        ],
        executor,
    )
    assert run.status == "failed"
    src = run.block_runs["src"]
    assert src.status == "failed"
    assert src.error is not None
    assert src.error.type == "ValueError"
    assert src.error.message == "source went away"
    tb = src.error.traceback or ""
    assert "<block src>" in tb and "raise ValueError('source went away')" in tb
    assert "scheduler.py" not in tb  # the user's frames, not the engine's
    assert outputs(run, "part") == {"part:0": 10, "part:1": 20, "part:2": 30}
    assert statuses(run, "red") == dict.fromkeys(["red:0", "red:1", "red:2"], "completed")
    total = run.block_runs["total"]
    if policy == "all":
        assert total.status == "upstream_failed"
        assert total.error is not None and "'src'" in total.error.message
        assert "source went away" in total.error.message
    else:
        assert ok(run, "total") == (60, ["red:0", "red:1", "red:2"], ["src"])


def test_generator_raising_before_yielding_makes_placeholders_like_a_failed_instance(
    executor: str,
) -> None:
    downstream = [
        "%%transformer part\nsrc * 10",
        "%%transformer red --reduce\npart",
        "%%exporter total\nred",
    ]
    streamed = run_with(
        [gen_cell("src --dynamic", "raise ValueError('no data')\nyield 1"), *downstream], executor
    )
    batch = run_with(
        ["%%loader src --dynamic\nraise ValueError('no data')\n[1]", *downstream], executor
    )

    def shape(run: PipelineRun) -> list[tuple[str, str, str | None]]:
        return [(r.uuid, r.status, r.error.line() if r.error else None) for r in run.instances()]

    assert shape(streamed) == shape(batch)
    assert statuses(streamed) == {
        "src": "failed",
        "part": "upstream_failed",
        "red": "upstream_failed",
        "total": "upstream_failed",
    }
    assert "<block src>" in (streamed.block_runs["src"].error.traceback or "")  # type: ignore[union-attr]


def test_a_failing_child_does_not_stop_the_stream(executor: str) -> None:
    run = run_with(
        [
            "%%loader src --dynamic --window 2\n(i for i in range(10))",
            "%%transformer part --reduce sum --reduce-policy partial\n"
            "if src % 3 == 0:\n    raise RuntimeError(src)\nsrc",
            "%%exporter total\n(part, context.failed)",
        ],
        executor,
    )
    assert ok(run, "src") == list(range(10))
    assert ok(run, "total") == (
        sum(i for i in range(10) if i % 3),
        ["part:0", "part:3", "part:6", "part:9"],
    )


# -- empty -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("strategy", "empty"), [("list", []), ("sum", 0), ("count", 0)])
def test_empty_generator(executor: str, strategy: str, empty: Any) -> None:
    run = run_with(
        [
            gen_cell("src --dynamic", "return\nyield 1"),
            f"%%transformer part --reduce {strategy}\nsrc",
            "%%exporter total\npart",
        ],
        executor,
    )
    assert run.status == "completed"
    assert list(statuses(run)) == ["src", "total"]  # zero children
    assert ok(run, "total") == empty


# -- names and metadata ----------------------------------------------------------------------

ITEMS = (
    "[Item(1, uuid='a b', metadata={'region': 'eu'}), Item(2, uuid='a b'), Item(3),"
    " Item(4, metadata={'block_uuid': 'named', 'k': 1}), 5]"
)
NAMED_CHILDREN = [
    "%%transformer part\n(src, context.uuid, dict(context.metadata))",
    "%%transformer grand\n(part[0], dict(context.metadata), context.lineage)",
    "%%transformer fn\n@transformer\ndef f(grand, region=None, k=None):\n    return (region, k)",
]


def test_items_name_and_describe_streamed_children(executor: str) -> None:
    ns = {"Item": Item}
    streamed = run_with(
        [f"%%loader src --dynamic\n(x for x in {ITEMS})", *NAMED_CHILDREN], executor, ns
    )
    batch = run_with([f"%%loader src --dynamic\n{ITEMS}", *NAMED_CHILDREN], executor, ns)
    assert streamed.status == "completed"
    uuids = ["a_b", "a_b_1", "2", "named", "4"]
    assert list(outputs(streamed, "part")) == [f"part:{u}" for u in uuids]
    assert outputs(streamed, "part")["part:a_b"] == (1, "part:a_b", {"region": "eu"})
    assert outputs(streamed, "grand")["grand:named"] == (4, {"k": 1}, [("src", "named")])
    assert outputs(streamed, "grand")["grand:a_b"][1] == {"region": "eu"}
    assert outputs(streamed, "fn") == {
        "fn:a_b": ("eu", None),
        "fn:a_b_1": (None, None),
        "fn:2": (None, None),
        "fn:named": (None, 1),
        "fn:4": (None, None),
    }
    assert len(streamed.warnings) == 1
    assert "'a_b'" in streamed.warnings[0] and "'a_b_1'" in streamed.warnings[0]
    for block in ("part", "grand", "fn"):
        assert outputs(streamed, block) == outputs(batch, block)
    assert streamed.warnings == batch.warnings


# -- nesting ---------------------------------------------------------------------------------

NESTED = [
    "%%transformer t --dynamic\n(Item(s * 10 + j, uuid=f'j{j}') if s == 1 else s * 10 + j"
    " for j in range(3))",
    "%%transformer leaf --reduce sum\ntime.sleep(0.001 * (t % 3))\nt",
    "%%transformer mid --reduce list\n(leaf, context.reduced_from)",
    "%%exporter total\n(mid, context.reduced_from)",
]


def test_nested_streams_and_a_two_level_reduce(executor: str) -> None:
    run = run_with(
        ["%%loader s --dynamic\n(i for i in range(4))", *NESTED], executor, {"Item": Item}
    )
    assert run.status == "completed"
    assert list(statuses(run, "t")) == ["t:0", "t:1", "t:2", "t:3"]
    assert list(statuses(run, "leaf")) == [
        f"leaf:{i}:{j}" if i != 1 else f"leaf:1:j{j}" for i in range(4) for j in range(3)
    ]
    mids = outputs(run, "mid")
    assert mids["mid:1"] == (33, ["leaf:1:j0", "leaf:1:j1", "leaf:1:j2"])
    assert mids["mid:2"] == (63, ["leaf:2:0", "leaf:2:1", "leaf:2:2"])
    value, reduced_from = ok(run, "total")
    assert value == list(mids.values())  # tuples are appended, not extended
    assert [v[0] for v in value] == [3, 33, 63, 93]
    assert reduced_from == ["mid:0", "mid:1", "mid:2", "mid:3"]


@pytest.mark.timeout(20)
def test_nested_streams_with_more_outer_items_than_the_window(executor: str) -> None:
    run = run_with(
        ["%%loader s --dynamic --window 2\n(i for i in range(5))", *NESTED],
        executor,
        {"Item": Item},
    )
    assert run.status == "completed", statuses(run)
    assert len(statuses(run, "leaf")) == 15


# -- keep_outputs="none" -------------------------------------------------------------------


def test_keep_outputs_none_gives_the_same_reduce_results(executor: str) -> None:
    cells = [
        "%%loader s --dynamic\n(i for i in range(6))",
        "%%transformer t --dynamic\n(s * 10 + j for j in range(s % 3 + 1))",
        "%%transformer leaf --reduce sum\nt",
        "%%transformer mid --reduce list\nleaf",
        "%%exporter total\nsink.append((mid, context.reduced_from))\nmid",
    ]
    kept_sink: list[Any] = []
    none_sink: list[Any] = []
    kept = run_with(cells, executor, {"sink": kept_sink})
    dropped = run_with(cells, executor, {"sink": none_sink}, keep_outputs="none")
    assert kept.status == dropped.status == "completed"
    assert none_sink == kept_sink
    assert kept_sink[0][0] == ok(kept, "total")
    assert list(statuses(dropped)) == list(statuses(kept))
    assert all(r.output is None for r in dropped.instances())
    assert dropped.block_runs["s"].output is None  # the stream kept no item list
    dropped.to_json()


# -- the record ------------------------------------------------------------------------------


def test_record_lists_streamed_instances_like_others(executor: str) -> None:
    children = ["%%transformer part --reduce\nsrc + 1", "%%exporter total\npart"]
    streamed = run_with(["%%loader src --dynamic\n(i for i in range(5))", *children], executor)
    batch = run_with(["%%loader src --dynamic\n[0, 1, 2, 3, 4]", *children], executor)

    def entries(run: PipelineRun) -> list[dict[str, Any]]:
        record = run.to_record()
        for entry in record["block_runs"]:
            assert entry["started_at"] is not None and entry["ended_at"] is not None
            assert entry["started_at"] <= entry["ended_at"]
        return [
            {k: v for k, v in e.items() if k not in ("started_at", "ended_at")}
            for e in record["block_runs"]
        ]

    assert entries(streamed) == entries(batch)
    src = streamed.to_record()["block_runs"][0]
    assert (
        src["uuid"] == "src" and src["status"] == "completed" and src["output"] == [0, 1, 2, 3, 4]
    )
    assert streamed.to_record()["status"] == "completed"
    last_child_end = max(r.ended for r in streamed.instances("part"))  # type: ignore[type-var]
    assert streamed.block_runs["src"].ended is not None
    assert streamed.block_runs["src"].ended <= last_child_end + 1.0


# -- --max-children --------------------------------------------------------------------------


def test_max_children_truncate_on_an_endless_generator(executor: str) -> None:
    log = Log()
    gen = gen_cell(
        "src --dynamic --max-children 3 --on-overflow truncate",
        "try:\n    for i in itertools.count():\n        yield i\nfinally:\n    note('closed')",
    )
    run = run_with(
        [gen, "%%transformer part --reduce sum\nsrc", "%%exporter total\npart"],
        executor,
        {"note": log, "itertools": itertools},
    )
    assert run.status == "completed"
    assert ok(run, "src") == [0, 1, 2]
    assert list(statuses(run, "part")) == ["part:0", "part:1", "part:2"]
    assert ok(run, "total") == 3
    assert any("--max-children 3" in w for w in run.warnings)
    assert log.count("closed") == 1


def test_max_children_fail_reads_the_generator_before_any_child_starts(executor: str) -> None:
    log = Log()
    gen = gen_cell(
        "src --dynamic --max-children 3", "for i in range(10):\n    note('yield', i)\n    yield i"
    )
    run = run_with([gen, "%%transformer part\nnote('child', src)\nsrc"], executor, {"note": log})
    src = run.block_runs["src"]
    assert src.status == "failed"
    assert src.error is not None and src.error.type == "FanoutError"
    assert "--max-children 3" in src.error.message
    assert log.count("child") == 0
    assert log.count("yield") == 4  # read up to the first item over the limit
    assert statuses(run, "part") == {"part": "upstream_failed"}


@pytest.mark.timeout(30)
def test_timeout_on_a_streaming_block_ends_the_run_with_every_instance_final(
    executor: str,
) -> None:
    cells = [
        "%%loader src --dynamic --timeout 0.2 --window 2\n(i for i in range(10))",
        "%%transformer part --reduce sum\ntime.sleep(0.05)\nsrc",
        "%%exporter total\npart",
    ]
    ns: dict[str, Any] = {"__builtins__": builtins, "__name__": "__main__", "time": time}
    chosen = make_executor(executor)
    run = Run(Pipeline(specs_from_cells(cells)), ns, executor=chosen)
    result: list[PipelineRun] = []
    thread = threading.Thread(target=lambda: result.append(run.execute()), daemon=True)
    thread.start()
    thread.join(3)  # 10 children of 50 ms: well under a second when it works
    hung = thread.is_alive()
    if hung:
        run.cancel()  # wakes the blocked loop so the thread ends
        thread.join(5)
    chosen.close(wait=False)
    assert not hung, "the run never ended"
    record = result[0]
    assert not [w for w in record.warnings if w.startswith("internal")], record.warnings
    assert record.block_runs["total"].status in ("completed", "upstream_failed")
    assert record.counts()["pending"] == record.counts()["running"] == 0


# -- cancellation ----------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_cancel_mid_stream_ends_the_run_cancelled(executor: str) -> None:
    finished = threading.Event()

    class CancelSoon(RunListener):
        def __init__(self) -> None:
            self.children = 0

        def instance_finished(self, *, run: PipelineRun, instance: Any) -> None:
            if instance.block == "part":
                self.children += 1
                if self.children == 20:
                    threading.Thread(target=lambda: holder[0].cancel()).start()

    gen = gen_cell(
        "src --dynamic --window 8",
        "for i in itertools.count():\n    time.sleep(0.001)\n    yield i",
    )
    ns: dict[str, Any] = {
        "__builtins__": builtins,
        "__name__": "__main__",
        "time": time,
        "itertools": itertools,
    }
    chosen = make_executor(executor)
    holder: list[Run] = []
    run = Run(
        Pipeline(specs_from_cells([gen, "%%transformer part\ntime.sleep(0.002)\nsrc"])),
        ns,
        executor=chosen,
        listeners=[CancelSoon()],
    )
    holder.append(run)
    result: list[PipelineRun] = []

    def execute() -> None:
        result.append(run.execute())
        finished.set()

    thread = threading.Thread(target=execute, daemon=True)
    thread.start()
    try:
        assert finished.wait(15), "the run did not end after cancel()"
    finally:
        chosen.close(wait=False)
    record = result[0]
    assert record.status == "cancelled"
    assert record.block_runs["src"].status == "cancelled"
    counts = record.counts()
    assert counts["pending"] == counts["running"] == 0
    assert counts["completed"] >= 20
