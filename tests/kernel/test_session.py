"""``Session`` on its own (no IPython): registration, versions, staleness, reuse and binding."""

from __future__ import annotations

import builtins
import threading
from typing import Any

import pytest

from mage_nb.engine import PipelineError, SyncExecutor, ThreadExecutor, parse_header
from mage_nb.engine.spec import BlockSpec
from mage_nb.session import InstanceOutputs, Session


def spec(header: str, body: str) -> BlockSpec:
    return parse_header(header, source=body)


def new_session(**names: Any) -> Session:
    namespace: dict[str, Any] = {"__builtins__": builtins, "__name__": "__main__", "calls": []}
    namespace.update(names)
    return Session(namespace)


def run(session: Session, targets: list[str] | None = None, **options: Any) -> Any:
    return session.run(targets, executor=SyncExecutor(), **options)


def chain(session: Session) -> None:
    """a -> b -> c, and an unrelated d."""
    session.register(spec("%%loader a", "calls.append('a')\n1"), "c1")
    session.register(spec("%%transformer b", "calls.append('b')\na + 1"), "c2")
    session.register(spec("%%exporter c", "calls.append('c')\nb * 10"), "c3")
    session.register(spec("%%loader d", "calls.append('d')\n0"), "c4")


def calls(session: Session) -> list[Any]:
    return session.namespace["calls"]


@pytest.fixture
def session_chain() -> Session:
    """A Session with a -> b -> c and an unrelated d, registered from cells c1..c4."""
    session = new_session()
    chain(session)
    return session


# -- versions and staleness -----------------------------------------------------------------
def test_a_blocks_version_changes_with_its_body(session_chain: Session) -> None:
    before = Session.versions(session_chain.pipeline())
    session_chain.register(spec("%%loader a", "calls.append('a')\n2"), "c1")
    after = Session.versions(session_chain.pipeline())
    assert {n for n in before if before[n] != after[n]} == {"a", "b", "c"}


def test_a_blocks_version_changes_with_its_header(session_chain: Session) -> None:
    before = Session.versions(session_chain.pipeline())
    session_chain.register(spec("%%transformer b --retries 1", "calls.append('b')\na + 1"), "c2")
    after = Session.versions(session_chain.pipeline())
    assert {n for n in before if before[n] != after[n]} == {"b", "c"}


def test_a_blocks_version_does_not_change_when_nothing_it_depends_on_changes(
    session_chain: Session,
) -> None:
    before = Session.versions(session_chain.pipeline())
    session_chain.register(spec("%%loader d", "calls.append('d')\n99"), "c4")
    session_chain.register(spec("%%loader a", "calls.append('a')\n1"), "c1")  # same code again
    after = Session.versions(session_chain.pipeline())
    assert {n for n in before if before[n] != after[n]} == {"d"}


def test_every_block_is_stale_before_it_has_a_result(session_chain: Session) -> None:
    assert session_chain.stale() == ["a", "b", "c", "d"]
    run(session_chain, ["b"])
    assert session_chain.stale() == ["c", "d"]
    run(session_chain)
    assert session_chain.stale() == []


def test_changing_a_block_makes_it_and_its_descendants_stale(session_chain: Session) -> None:
    run(session_chain)
    session_chain.register(spec("%%transformer b", "calls.append('b')\na + 2"), "c2")
    assert session_chain.stale() == ["b", "c"]


# -- runs: reuse ----------------------------------------------------------------------------
def test_a_run_reuses_fresh_results_and_recomputes_stale_ones(session_chain: Session) -> None:
    run(session_chain)
    assert sorted(calls(session_chain)) == ["a", "b", "c", "d"]
    calls(session_chain).clear()
    session_chain.register(spec("%%transformer b", "calls.append('b')\na + 2"), "c2")
    record = run(session_chain, ["c"])
    assert calls(session_chain) == ["b", "c"]
    assert {r.uuid: r.reused for r in record.instances()} == {"a": True, "b": False, "c": False}
    assert session_chain.namespace["c"] == 30
    assert record.blocks == ["a", "b", "c"]  # only c and what it needs


def test_a_fresh_run_recomputes_everything(session_chain: Session) -> None:
    run(session_chain)
    calls(session_chain).clear()
    run(session_chain, fresh=True)
    assert sorted(calls(session_chain)) == ["a", "b", "c", "d"]


def test_a_failed_instance_is_recomputed_on_the_next_run(session_chain: Session) -> None:
    session_chain.namespace["ok"] = set()
    session_chain.register(
        spec("%%transformer flaky --dynamic", "calls.append('flaky')\n[1, 2]"), "c5"
    )
    session_chain.register(
        spec(
            "%%transformer each",
            "calls.append(('each', flaky))\nif flaky not in ok:\n    raise RuntimeError('no')\nflaky",
        ),
        "c6",
    )
    session_chain.register(spec("%%transformer after", "each"), "c7")
    session_chain.namespace["ok"].add(1)
    record = run(session_chain, ["after"])
    assert [r.status for r in record.instances("each")] == ["completed", "failed"]
    session_chain.namespace["ok"].add(2)
    calls(session_chain).clear()
    record = run(session_chain, ["after"])
    # each:0 completed before and is reused; the failed each:1 is computed again
    assert calls(session_chain) == [("each", 2)]
    assert list(session_chain.namespace["each"]) == [1, 2]


def test_memo_of_last_results_can_leave_out_one_instance(session_chain: Session) -> None:
    session_chain.register(spec("%%transformer fan --dynamic", "[1, 2, 3]"), "c5")
    session_chain.register(spec("%%transformer each", "fan * 2"), "c6")
    run(session_chain, ["each"])
    memo = session_chain.memo_of_last_results(without="each:1")
    assert sorted(memo["each"]) == [(0,), (2,)]
    assert memo["fan"][()].uuid == "fan"


def test_params_reach_context(session_chain: Session) -> None:
    session_chain.register(spec("%%loader p", "context.params['k']"), "c5")
    session_chain.params["k"] = "v"
    run(session_chain, ["p"])
    assert session_chain.namespace["p"] == "v"


# -- binding --------------------------------------------------------------------------------
def test_bind_gives_a_static_block_its_output_and_a_fanout_its_instance_outputs() -> None:
    session = new_session()
    session.register(spec("%%loader users --dynamic", "[[7, 8], [{'block_uuid': 'x'}, {}]]"))
    session.register(spec("%%transformer each", "users + 1"))
    session.register(spec("%%transformer total --reduce sum", "each"))
    session.register(spec("%%exporter report", "total"))
    run(session)
    ns = session.namespace
    assert ns["users"] == [7, 8]
    assert isinstance(ns["each"], InstanceOutputs)
    assert list(ns["each"]) == [8, 9]
    assert ns["each"]["each:x"] == 8
    assert ns["each"]["each:1"] == 9
    assert ns["each"].uuids() == ["each:x", "each:1"]
    assert ns["each"].statuses == {"each:x": "completed", "each:1": "completed"}
    assert list(ns["total"]) == [8, 9]  # a reducing block's own instances are in the fan-out
    assert ns["report"] == 17  # its consumer, outside the fan-out, gets the reduced value


def test_instance_outputs_names_the_instances_it_has_when_a_uuid_is_unknown() -> None:
    session = new_session()
    session.register(spec("%%loader users --dynamic", "[1, 2]"))
    session.register(spec("%%transformer each", "users"))
    run(session)
    with pytest.raises(KeyError, match=r"each:0, each:1"):
        session.namespace["each"]["each:9"]


def test_a_failed_static_block_binds_none() -> None:
    session = new_session()
    session.register(spec("%%loader broken", "1 / 0"))
    record = run(session)
    assert record.status == "failed"
    assert session.namespace["broken"] is None


# -- registration ---------------------------------------------------------------------------
def test_registering_from_the_same_cell_updates_the_block_in_place(session_chain: Session) -> None:
    order = session_chain.blocks["b"].order
    notes = session_chain.register(spec("%%transformer b", "a + 5"), "c2")
    assert notes == []
    assert session_chain.blocks["b"].spec.source == "a + 5"
    assert session_chain.blocks["b"].order == order
    assert session_chain.blocks["b"].spec.origin == "cell c2"


def test_another_cell_claiming_a_name_is_refused_and_the_registry_is_unchanged(
    session_chain: Session,
) -> None:
    run(session_chain)
    before = (dict(session_chain.blocks), dict(session_chain.cells), dict(session_chain.results))
    with pytest.raises(PipelineError, match="'b'"):
        session_chain.register(spec("%%transformer b", "a + 5"), "c9")
    assert (session_chain.blocks, session_chain.cells, session_chain.results) == before
    assert session_chain.namespace["b"] == 2


def test_without_cell_ids_a_name_is_simply_updated() -> None:
    session = new_session()
    session.register(spec("%%loader a", "1"))
    session.register(spec("%%loader a", "2"))
    run(session)
    assert session.namespace["a"] == 2


def test_renaming_a_cells_block_forgets_the_old_name(session_chain: Session) -> None:
    run(session_chain)
    notes = session_chain.register(spec("%%loader d2", "0"), "c4")
    assert len(notes) == 1
    assert "'d'" in notes[0]
    assert "'d2'" in notes[0]
    assert "d" not in session_chain.blocks
    assert "d" not in session_chain.results
    assert "d" not in session_chain.namespace
    assert session_chain.cells["c4"] == "d2"


@pytest.mark.parametrize(
    ("header", "body", "cell_id", "match"),
    [
        ("%%loader a", "c + 1", "c1", "cycle"),
        ("%%transformer x --upstream ghost", "1", "c9", "ghost"),
        ("%%transformer x --reduce", "a", "c9", "outside every fan-out"),
        ("%%transformer x", "x + 1", "c9", "its own name"),
        ("%%transformer x", "1 +", "c9", "x"),
    ],
    ids=["cycle", "unknown-upstream", "reduce-outside-fanout", "self-reference", "syntax"],
)
def test_an_invalid_pipeline_is_refused_and_the_registry_rolled_back(
    session_chain: Session, header: str, body: str, cell_id: str, match: str
) -> None:
    run(session_chain)
    before = (dict(session_chain.blocks), dict(session_chain.cells), dict(session_chain.results))
    with pytest.raises(PipelineError, match=match):
        session_chain.register(spec(header, body), cell_id)
    assert (session_chain.blocks, session_chain.cells, session_chain.results) == before
    assert session_chain.stale() == []


def test_a_refused_rename_keeps_the_old_name(session_chain: Session) -> None:
    run(session_chain)
    with pytest.raises(PipelineError):
        session_chain.register(spec("%%loader d2 --upstream ghost", "0"), "c4")
    assert "d" in session_chain.blocks
    assert session_chain.cells["c4"] == "d"
    assert "d" in session_chain.results
    # the binding is a notebook global; the rollback restores the registry, not the binding
    assert session_chain.stale() == []


# -- forget and reset -----------------------------------------------------------------------
def test_forget_drops_the_block_its_result_its_cell_and_its_binding(
    session_chain: Session,
) -> None:
    run(session_chain)
    session_chain.forget("d")
    assert "d" not in session_chain.blocks
    assert "d" not in session_chain.results
    assert "d" not in session_chain.namespace
    assert "c4" not in session_chain.cells
    session_chain.register(spec("%%loader d", "5"), "c7")  # the name is free again
    with pytest.raises(PipelineError, match="no block 'nope'"):
        session_chain.forget("nope")


def test_forgetting_an_upstream_leaves_its_reader_reading_a_plain_name(
    session_chain: Session,
) -> None:
    run(session_chain)
    session_chain.forget("c")
    session_chain.forget("b")
    assert session_chain.stale() == []
    assert [b.name for b in session_chain.pipeline()] == ["a", "d"]


def test_reset_forgets_every_result_but_keeps_the_blocks(session_chain: Session) -> None:
    run(session_chain)
    session_chain.reset()
    assert session_chain.results == {}
    assert session_chain.last_run is None
    for name in "abcd":
        assert name not in session_chain.namespace
        assert name in session_chain.blocks
    assert session_chain.stale() == ["a", "b", "c", "d"]


# -- one instance ---------------------------------------------------------------------------
def test_find_returns_an_instance_of_the_last_results_or_says_what_exists() -> None:
    session = new_session()
    session.register(spec("%%loader users --dynamic", "[1, 2]"))
    session.register(spec("%%transformer each", "users"))
    run(session)
    assert session.find("each:1").output == 2
    with pytest.raises(PipelineError, match=r"each:0, each:1"):
        session.find("each:5")
    with pytest.raises(PipelineError, match="nothing"):
        session.find("nothing")


def test_bind_inputs_binds_the_upstream_outputs_and_context_of_one_instance() -> None:
    session = new_session()
    session.register(spec("%%loader config", "{'factor': 3}"))
    session.register(spec("%%loader users --dynamic", "[[10, 20], [{'block_uuid': 'ann'}, {}]]"))
    session.register(spec("%%transformer scored", "users * config['factor']"))
    run(session)
    bound = session.bind_inputs("scored:1")
    assert list(bound) == ["users", "config", "context"]  # upstream order, then context
    assert session.namespace["users"] == 20
    assert session.namespace["config"] == {"factor": 3}
    context = session.namespace["context"]
    assert context.uuid == "scored:1"
    assert context.index == (1,)
    assert context.lineage == [("users", "1")]


def test_bind_inputs_of_a_reduce_consumer_binds_the_combined_value() -> None:
    session = new_session()
    session.register(spec("%%loader items --dynamic", "[1, 2, 3]"))
    session.register(spec("%%transformer doubled --reduce", "items * 2"))
    session.register(spec("%%exporter report", "sum(doubled)"))
    run(session)
    assert session.namespace["report"] == 12
    session.bind_inputs("report")
    assert session.namespace["doubled"] == [2, 4, 6]
    assert session.namespace["context"].reduced_from == ["doubled:0", "doubled:1", "doubled:2"]


# -- concurrency ----------------------------------------------------------------------------
def test_a_second_run_while_one_is_going_is_refused_and_cancel_stops_the_first() -> None:
    gate = threading.Event()
    started = threading.Event()
    session = new_session(gate=gate, started=started)
    session.register(spec("%%loader items --dynamic", "list(range(20))"))
    session.register(spec("%%transformer waiting", "started.set()\ngate.wait(20)\nitems"))
    records: list[Any] = []
    runner = threading.Thread(
        target=lambda: records.append(session.run(executor=ThreadExecutor(2))), daemon=True
    )
    runner.start()
    try:
        assert started.wait(10)
        with pytest.raises(PipelineError, match="already going on"):
            session.run(executor=SyncExecutor())
        session.cancel()
        runner.join(10)
        assert not runner.is_alive()
    finally:
        gate.set()
        runner.join(10)
    assert records[0].status == "cancelled"
    assert session.current is None
    assert run(session).status == "completed"  # the lock was released


def test_cancel_without_a_run_does_nothing() -> None:
    session = new_session()
    session.cancel()
    assert session.current is None
