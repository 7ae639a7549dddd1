"""The kernel side: ``%load_ext mage_nb``, block cell magics and ``%pipeline`` in a real shell.

Every test gets a fresh InteractiveShell (conftest) and runs cells with the cell ids
JupyterLab would send.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from IPython.core.interactiveshell import ExecutionResult, InteractiveShell
from IPython.utils.capture import capture_output

from mage_nb.session import InstanceOutputs

Cell = Callable[..., ExecutionResult]
Usage = Callable[..., str]

FANOUT = [
    ("calls = []\nbroken = set()", None),
    ("%%loader items --dynamic\ncalls.append('items')\n[0, 1, 2]", "c1"),
    (
        "%%transformer t\ncalls.append(('t', items))\n"
        "if items in broken:\n    raise ValueError(f'bad item {items}')\nitems * 2",
        "c2",
    ),
    ("%%exporter e\ncalls.append(('e', t))\nt + 1", "c3"),
]


def _fanout_pipeline(cell: Cell, *, broken: tuple[int, ...] = ()) -> None:
    """items (dynamic, 0..2) -> t (x2, fails for items in `broken`) -> e (+1)."""
    for source, cell_id in FANOUT:
        cell(source, cell_id)
        if cell_id is None and broken:
            cell(f"broken.update({set(broken)!r})")


def _registry(session: Any) -> dict[str, tuple[Any, str | None]]:
    return {name: (r.spec, r.cell_id) for name, r in session.blocks.items()}


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


# -- registration ---------------------------------------------------------------------------
def test_load_ext_registers_the_block_cell_magics_and_the_pipeline_line_magic(
    shell: InteractiveShell,
) -> None:
    registered = shell.magics_manager.magics
    for name in ("block", "loader", "transformer", "exporter"):
        assert name in registered["cell"], name
    assert "pipeline" in registered["line"]
    assert "sql" not in registered["cell"]  # no %%sql alias: it would clash with jupysql


@pytest.mark.parametrize(
    ("header", "kind"),
    [
        ("%%block loader x", "loader"),
        ("%%block transformer x", "transformer"),
        ("%%block exporter x", "exporter"),
        ("%%block custom x", "custom"),
        ("%%loader x", "loader"),
        ("%%transformer x", "transformer"),
        ("%%exporter x", "exporter"),
    ],
)
def test_every_block_magic_registers_a_block_of_its_kind_and_runs_it(
    cell: Cell, session: Any, shell: InteractiveShell, header: str, kind: str
) -> None:
    result = cell(f"{header}\n6 * 7", "c1")
    assert session.blocks["x"].spec.kind == kind
    assert session.blocks["x"].cell_id == "c1"
    assert result.result == 42
    assert shell.user_ns["x"] == 42


# -- outputs and NAME binding ---------------------------------------------------------------
def test_a_block_cell_shows_its_output_as_the_cell_value(cell: Cell) -> None:
    result = cell("%%loader users\n[{'id': 1}, {'id': 2}]", "c1")
    assert result.result == [{"id": 1}, {"id": 2}]


def test_a_body_without_a_final_expression_outputs_none_and_keeps_assignments_local(
    cell: Cell, shell: InteractiveShell
) -> None:
    result = cell("%%loader quiet\nlocal_value = 5", "c1")
    assert result.result is None
    assert shell.user_ns["quiet"] is None
    assert "local_value" not in shell.user_ns


def test_a_static_block_binds_its_name_to_its_output(cell: Cell, shell: InteractiveShell) -> None:
    cell("%%loader config\n{'rate': 3}", "c1")
    cell("%%transformer scaled\n[config['rate'] * i for i in range(3)]", "c2")
    assert shell.user_ns["config"] == {"rate": 3}
    assert shell.user_ns["scaled"] == [0, 3, 6]
    assert not isinstance(shell.user_ns["scaled"], InstanceOutputs)


def test_a_fanned_out_block_binds_instance_outputs_by_index_and_by_uuid(
    cell: Cell, shell: InteractiveShell
) -> None:
    cell(
        "%%loader users --dynamic\n"
        "[[1, 2, 3], [{'block_uuid': f'for_user_{i}'} for i in (1, 2, 3)]]",
        "c1",
    )
    cell("%%transformer anonymize_user_data\nusers * 100", "c2")
    bound = shell.user_ns["anonymize_user_data"]
    assert isinstance(bound, list)
    assert list(bound) == [100, 200, 300]
    assert bound[0] == 100
    assert bound[-1] == 300
    assert bound["anonymize_user_data:for_user_2"] == 200
    assert bound.uuids() == [
        "anonymize_user_data:for_user_1",
        "anonymize_user_data:for_user_2",
        "anonymize_user_data:for_user_3",
    ]
    assert dict(bound.items())["anonymize_user_data:for_user_3"] == 300
    with pytest.raises(KeyError, match="for_user_1"):
        bound["anonymize_user_data:nobody"]
    # the dynamic block itself is outside any fan-out: its NAME holds its items
    assert shell.user_ns["users"] == [1, 2, 3]


def test_a_reduce_outside_every_fanout_binds_the_reduced_value(
    cell: Cell, shell: InteractiveShell
) -> None:
    cell("%%loader items --dynamic\n[1, 2, 3]", "c1")
    cell("%%transformer doubled\nitems * 2", "c2")
    cell("%%transformer total --reduce sum\ndoubled", "c3")
    cell("%%exporter report\ntotal", "c4")
    assert shell.user_ns["report"] == 12


# -- reuse and staleness --------------------------------------------------------------------
def test_fresh_upstream_outputs_are_reused_not_recomputed(
    cell: Cell, shell: InteractiveShell
) -> None:
    cell("calls = []")
    cell("%%loader a\ncalls.append('a')\n1", "c1")
    cell("%%transformer b\ncalls.append('b')\na + 1", "c2")
    result = cell("%%exporter c\ncalls.append('c')\nb * 10", "c3")
    assert shell.user_ns["calls"] == ["a", "b", "c"]
    assert result.result == 20


def test_missing_upstream_outputs_are_computed_first(cell: Cell, shell: InteractiveShell) -> None:
    cell("calls = []")
    cell("%%loader a --no-run\ncalls.append('a')\n1", "c1")
    cell("%%transformer b --no-run\ncalls.append('b')\na + 1", "c2")
    result = cell("%%exporter c\ncalls.append('c')\nb * 10", "c3")
    assert shell.user_ns["calls"] == ["a", "b", "c"]
    assert result.result == 20
    assert shell.user_ns["a"] == 1
    assert shell.user_ns["b"] == 2


def test_editing_an_upstream_cell_recomputes_it_and_its_stale_descendants(
    cell: Cell, shell: InteractiveShell, session: Any
) -> None:
    cell("calls = []")
    cell("%%loader a\ncalls.append('a')\n1", "c1")
    cell("%%transformer b\ncalls.append('b')\na + 1", "c2")
    cell("%%exporter c\ncalls.append('c')\nb * 10", "c3")
    cell("%%loader other\ncalls.append('other')\n0", "c4")
    assert session.stale() == []
    shell.user_ns["calls"].clear()

    cell("%%loader a\ncalls.append('a')\n5", "c1")
    assert shell.user_ns["calls"] == ["a"]
    assert session.stale() == ["b", "c"]  # an ancestor's code changed

    result = cell("%%exporter c\ncalls.append('c')\nb * 10", "c3")
    assert shell.user_ns["calls"] == ["a", "b", "c"]  # a reused, b and c recomputed
    assert result.result == 60
    assert shell.user_ns["b"] == 6
    assert session.stale() == []


def test_editing_a_header_makes_the_block_and_its_descendants_stale(
    cell: Cell, session: Any
) -> None:
    cell("%%loader a\n1", "c1")
    cell("%%transformer b\na + 1", "c2")
    cell("%%loader a --retries 2 --no-run\n1", "c1")
    assert session.stale() == ["a", "b"]


def test_rerunning_an_unchanged_block_cell_runs_its_body_again(
    cell: Cell, shell: InteractiveShell
) -> None:
    cell("calls = []")
    cell("%%loader a\ncalls.append('a')\n1", "c1")
    cell("%%loader a\ncalls.append('a')\n1", "c1")
    assert shell.user_ns["calls"] == ["a", "a"]


def test_no_run_registers_the_block_without_running_it(
    cell: Cell, shell: InteractiveShell, session: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    cell("calls = []")
    result = cell("%%loader a --no-run\ncalls.append('a')\n1", "c1")
    assert result.result is None
    assert "a" in session.blocks
    assert shell.user_ns["calls"] == []
    assert "a" not in shell.user_ns
    assert "not run" in capsys.readouterr().out
    assert session.stale() == ["a"]


# -- names: duplicates and renames ----------------------------------------------------------
def test_a_second_cell_claiming_an_existing_name_is_refused_and_nothing_changes(
    cell: Cell, usage_error: Usage, shell: InteractiveShell, session: Any
) -> None:
    cell("calls = []")
    cell("%%loader users\ncalls.append('first')\n1", "c1")
    before = _registry(session)
    message = usage_error("%%loader users\ncalls.append('second')\n2", "c2")
    assert "users" in message
    assert _registry(session) == before
    assert session.blocks["users"].cell_id == "c1"
    assert shell.user_ns["users"] == 1
    assert shell.user_ns["calls"] == ["first"]
    # the owning cell can still update it
    cell("%%loader users\n3", "c1")
    assert shell.user_ns["users"] == 3


def test_the_duplicate_name_error_names_both_cells(cell: Cell, usage_error: Usage) -> None:
    cell("%%loader users\n1", "cell-aaa")
    message = usage_error("%%loader users\n2", "cell-bbb")
    assert "cell-aaa" in message
    assert "cell-bbb" in message


def test_renaming_a_cells_block_drops_the_old_name(
    cell: Cell, shell: InteractiveShell, session: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    cell("%%loader old_name\n1", "c1")
    assert shell.user_ns["old_name"] == 1
    cell("%%loader new_name\n2", "c1")
    assert "old_name" not in shell.user_ns
    assert "old_name" not in session.blocks
    assert shell.user_ns["new_name"] == 2
    assert session.cells == {"c1": "new_name"}
    assert "old_name" in capsys.readouterr().err
    # the old NAME is free for another cell now
    cell("%%loader old_name\n3", "c2")
    assert shell.user_ns["old_name"] == 3


# -- usage errors ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "cell_id", "words"),
    [
        ("%%block widget x\n1", "c3", ["widget", "kind"]),
        ("%%loader 1x\n1", "c3", ["1x"]),
        ("%%loader context\n1", "c3", ["context", "reserved"]),
        ("%%loader\n1", "c3", ["NAME"]),
        ("%%loader x --bogus\n1", "c3", ["--bogus"]),
        ("%%loader x --retries many\n1", "c3", ["--retries"]),
        ("%%loader a --bogus\n100", "c1", ["--bogus"]),
        ("%%loader a\nb + 1", "c1", ["cycle", "a", "b"]),
        ("%%transformer t --upstream nope\n1", "c3", ["nope"]),
        ("%%transformer r --reduce\na", "c3", ["r", "reduce"]),
        ("%%transformer s\ns + 1", "c3", ["s"]),
        ("%%transformer bad\n1 +", "c3", ["bad"]),
    ],
    ids=[
        "unknown-kind",
        "bad-name",
        "reserved-name",
        "missing-name",
        "unknown-option",
        "bad-option-value",
        "bad-header-on-existing-block",
        "cycle",
        "unknown-upstream",
        "reduce-outside-fanout",
        "self-reference",
        "syntax-error",
    ],
)
def test_a_bad_block_cell_is_a_one_line_usage_error_and_leaves_the_registry_intact(
    cell: Cell,
    usage_error: Usage,
    shell: InteractiveShell,
    session: Any,
    source: str,
    cell_id: str,
    words: list[str],
) -> None:
    cell("calls = []")
    cell("%%loader a\ncalls.append('a')\n1", "c1")
    cell("%%transformer b\ncalls.append('b')\na + 1", "c2")
    before = (_registry(session), dict(session.cells), dict(session.results))
    message = usage_error(source, cell_id)
    for word in words:
        assert word in message, (word, message)
    assert (_registry(session), dict(session.cells), dict(session.results)) == before
    assert (shell.user_ns["a"], shell.user_ns["b"]) == (1, 2)
    assert shell.user_ns["calls"] == ["a", "b"]  # nothing ran
    # the kernel and the pipeline still work
    assert cell("%%exporter c\nb * 10", "c4").result == 20


# -- errors in user code --------------------------------------------------------------------
def test_an_exception_in_a_block_body_fails_that_instance_and_shows_its_traceback(
    cell: Cell, shell: InteractiveShell, session: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    result = cell("%%loader boom\nraise ValueError('no data today')", "c1")
    assert result.error_in_exec is None  # the cell itself is not an error: the instance is
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert "ValueError: no data today" in err
    assert "boom" in err
    assert session.last_run.status == "failed"
    assert [r.status for r in session.last_run.instances("boom")] == ["failed"]
    assert cell("1 + 1").result == 2
    assert cell("%%loader fine\n'ok'", "c2").result == "ok"


def test_a_failed_instance_fails_only_itself_and_its_descendants(
    cell: Cell, shell: InteractiveShell, session: Any
) -> None:
    _fanout_pipeline(cell, broken=(1,))
    statuses = {r.uuid: r.status for r in session.last_run.instances()}
    assert statuses == {
        "items": "completed",
        "t:0": "completed",
        "t:1": "failed",
        "t:2": "completed",
        "e:0": "completed",
        "e:1": "upstream_failed",
        "e:2": "completed",
    }
    assert list(shell.user_ns["e"]) == [1, None, 5]
    assert shell.user_ns["e"].statuses["e:1"] == "upstream_failed"


def test_ordinary_cells_keep_working_and_their_definitions_are_visible_to_blocks(
    cell: Cell, shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    cell("import math\nRATE = 3\ndef helper(x):\n    return x * RATE")
    result = cell("print('plain cell prints')\nmath.floor(2.5)")
    assert result.result == 2
    assert "plain cell prints" in capsys.readouterr().out
    cell("%%loader items --dynamic\n[1, 2]", "c1")
    cell("%%transformer scaled\nhelper(items) + math.floor(0.5)", "c2")
    assert list(shell.user_ns["scaled"]) == [3, 6]
    cell("RATE = 10")
    assert cell("helper(1)").result == 10


# -- per-instance capture -------------------------------------------------------------------
def test_sibling_instances_capture_exactly_their_own_output_and_nothing_leaks(
    cell: Cell, session: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    cell("import sys, threading, time\nthreads = set()")
    cell("%%loader items --dynamic\nlist(range(200))", "c1")
    capfd.readouterr()
    cell(
        "%%transformer noisy\n"
        "threads.add(threading.get_ident())\n"
        "for line in range(3):\n"
        "    print(f'item {items} line {line}')\n"
        "    time.sleep(0.001)\n"
        "print(f'item {items} warning', file=sys.stderr)\n"
        "items",
        "c2",
    )
    runs = list(session.last_run.instances("noisy"))
    assert len(runs) == 200
    assert len(cell("threads").result) > 1  # siblings really ran at once
    for i, run in enumerate(runs):
        assert run.status == "completed"
        assert run.captured.stdout == "".join(f"item {i} line {n}\n" for n in range(3))
        assert run.captured.stderr == f"item {i} warning\n"
    out, err = capfd.readouterr()
    assert "item " not in out
    assert "item " not in err


def test_display_in_an_instance_is_captured_as_a_mime_bundle_with_that_instance(
    cell: Cell, shell: InteractiveShell, session: Any
) -> None:
    cell(
        "from IPython.display import display\n"
        "class Badge:\n"
        "    def __init__(self, n):\n"
        "        self.n = n\n"
        "    def _repr_html_(self):\n"
        "        return f'<b>{self.n}</b>'\n"
        "    def __repr__(self):\n"
        "        return f'Badge({self.n})'"
    )
    cell("%%loader items --dynamic\n[1, 2, 3]", "c1")
    with capture_output(stdout=False, stderr=False, display=True) as shown:
        cell("%%transformer badges\ndisplay(Badge(items))\nitems", "c2")
    assert shown.outputs == []  # nothing published to the running cell
    for run in session.last_run.instances("badges"):
        n = run.output
        assert run.captured.displays == [
            ({"text/plain": f"Badge({n})", "text/html": f"<b>{n}</b>"}, {})
        ]


def test_a_background_run_does_not_print_into_the_cell_that_is_running(
    cell: Cell, magics: Any, session: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    cell("import threading\ngate = threading.Event()\nstarted = []")
    cell("%%loader items --dynamic --no-run\nlist(range(8))", "c1")
    cell(
        "%%transformer chatty --no-run\nstarted.append(items)\n"
        "print('from instance', items)\ngate.wait(10)\nprint('done', items)\nitems",
        "c2",
    )
    cell("%pipeline run --background")
    _wait_for(lambda: len(cell("started").result) > 0)
    cell("print('from the cell')")
    cell("gate.set()")
    magics._background.join(10)
    assert session.last_run.status == "completed"
    out = capsys.readouterr().out
    assert "from the cell" in out
    assert "from instance" not in out
    assert "done" not in out
    for run in session.last_run.instances("chatty"):
        assert run.captured.stdout == f"from instance {run.output}\ndone {run.output}\n"


# -- %pipeline ------------------------------------------------------------------------------
def test_pipeline_run_runs_every_block_fresh(cell: Cell, shell: InteractiveShell) -> None:
    _fanout_pipeline(cell)
    shell.user_ns["calls"].clear()
    cell("%pipeline run")
    calls = shell.user_ns["calls"]
    assert sorted(map(str, calls)) == sorted(
        map(str, ["items", ("t", 0), ("t", 1), ("t", 2), ("e", 0), ("e", 2), ("e", 4)])
    )
    assert list(shell.user_ns["e"]) == [1, 3, 5]


def test_pipeline_run_param_reaches_context_params(cell: Cell, shell: InteractiveShell) -> None:
    cell("%%loader setting --no-run\ncontext.params.get('region', 'none')", "c1")
    cell("%pipeline run --param region=eu --param day=mon")
    assert shell.user_ns["setting"] == "eu"


def test_pipeline_run_rejects_a_param_without_a_value(
    cell: Cell, usage_error: Usage, magics: Any
) -> None:
    cell("%%loader a --no-run\n1", "c1")
    assert "KEY=VALUE" in usage_error("%pipeline run --param region")


def test_pipeline_status_shows_the_last_run_and_what_is_stale(
    cell: Cell, usage_error: Usage, capsys: pytest.CaptureFixture[str], session: Any
) -> None:
    cell("%pipeline status")
    assert "no run yet" in capsys.readouterr().out
    _fanout_pipeline(cell, broken=(1,))
    capsys.readouterr()
    cell("%pipeline status")
    out = capsys.readouterr().out
    assert session.last_run.run_id in out
    assert "failed" in out
    assert "t:1" in out
    assert "ValueError: bad item 1" in out
    for block in ("items", "t", "e"):
        assert block in out
    cell("%%exporter e --no-run\nt + 2", "c3")
    capsys.readouterr()
    cell("%pipeline status")
    assert "stale or not yet run: e" in capsys.readouterr().out
    usage_error("%pipeline status --verbose")


def test_pipeline_retry_reruns_only_the_failed_and_unfinished_instances(
    cell: Cell, shell: InteractiveShell, session: Any
) -> None:
    _fanout_pipeline(cell, broken=(1,))
    assert session.last_run.status == "failed"
    cell("broken.clear()\ncalls.clear()")  # fix the cause
    cell("%pipeline retry")
    assert shell.user_ns["calls"] == [("t", 1), ("e", 2)]
    assert session.last_run.status == "completed"
    assert list(shell.user_ns["t"]) == [0, 2, 4]
    assert list(shell.user_ns["e"]) == [1, 3, 5]


def test_pipeline_retry_before_any_run_is_a_usage_error(usage_error: Usage) -> None:
    assert "no pipeline run yet" in usage_error("%pipeline retry")


def test_pipeline_rerun_reruns_one_edited_instance_and_its_descendants_only(
    cell: Cell, shell: InteractiveShell, session: Any
) -> None:
    _fanout_pipeline(cell)
    cell("%pipeline run")
    cell("calls.clear()")
    cell("%%transformer t --no-run\ncalls.append(('t', items))\nitems * 1000", "c2")
    assert shell.user_ns["calls"] == []
    cell("%pipeline rerun t:1")
    assert shell.user_ns["calls"] == [("t", 1), ("e", 1000)]
    assert list(shell.user_ns["t"]) == [0, 1000, 4]  # siblings keep their outputs
    assert list(shell.user_ns["e"]) == [1, 1001, 5]
    assert session.last_run.status == "completed"


def test_pipeline_rerun_reruns_descendants_even_after_the_block_cell_ran_alone(
    cell: Cell, shell: InteractiveShell
) -> None:
    _fanout_pipeline(cell)
    cell("%%transformer t\ncalls.append(('t', items))\nitems * 1000", "c2")
    cell("calls.clear()")
    cell("%pipeline rerun t:1")
    assert ("e", 1000) in shell.user_ns["calls"]
    assert list(shell.user_ns["e"]) == [1, 1001, 2001]


def test_pipeline_rerun_of_an_unknown_instance_is_a_usage_error(
    cell: Cell, usage_error: Usage
) -> None:
    _fanout_pipeline(cell)
    message = usage_error("%pipeline rerun t:7")
    assert "t:7" in message
    assert "t:0" in message  # the instances it does have


def test_pipeline_inputs_binds_one_instances_inputs_and_context(
    cell: Cell, shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    cell("%%loader config\n{'factor': 10}", "c1")
    cell("%%loader users --dynamic\n[[5, 6], [{'block_uuid': 'ann'}, {'block_uuid': 'bob'}]]", "c2")
    cell("%%transformer scored\nusers * config['factor'] + len(context.uuid)", "c3")
    cell("del config, users")
    capsys.readouterr()
    cell("%pipeline inputs scored:bob")
    assert "scored:bob" in capsys.readouterr().out
    ns = shell.user_ns
    assert ns["config"] == {"factor": 10}
    assert ns["users"] == 6
    assert ns["context"].uuid == "scored:bob"
    assert ns["context"].block == "scored"
    assert ns["context"].index == (1,)
    # the body can now be run by hand, as the instance ran it
    by_hand = cell("users * config['factor'] + len(context.uuid)").result
    assert by_hand == ns["scored"]["scored:bob"]


def test_pipeline_inputs_of_an_unknown_instance_is_a_usage_error(
    cell: Cell, usage_error: Usage
) -> None:
    cell("%%loader a\n1", "c1")
    assert "nope" in usage_error("%pipeline inputs nope")


def test_pipeline_reset_forgets_outputs_but_keeps_blocks(
    cell: Cell, shell: InteractiveShell, session: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    _fanout_pipeline(cell)
    cell("%pipeline reset")
    for name in ("items", "t", "e"):
        assert name not in shell.user_ns
    assert set(session.blocks) == {"items", "t", "e"}
    assert session.stale() == ["items", "t", "e"]
    capsys.readouterr()
    cell("%pipeline status")
    assert "no run yet" in capsys.readouterr().out
    cell("calls.clear()")
    cell("%%exporter e\ncalls.append(('e', t))\nt + 1", "c3")
    assert shell.user_ns["calls"][0] == "items"  # everything was recomputed
    assert list(shell.user_ns["e"]) == [1, 3, 5]


def test_pipeline_forget_drops_a_block(
    cell: Cell, usage_error: Usage, shell: InteractiveShell, session: Any
) -> None:
    cell("%%loader a\n1", "c1")
    cell("%pipeline forget a")
    assert "a" not in session.blocks
    assert "a" not in shell.user_ns
    assert "a" in usage_error("%pipeline forget a")


def test_pipeline_export_without_to_is_a_usage_error(usage_error: Usage) -> None:
    # %pipeline export itself is tested in test_export_magic.py
    message = usage_error("%pipeline export script out.py")
    assert message.startswith("%pipeline export:")
    assert "--to" in message


@pytest.mark.parametrize("line", ["%pipeline frobnicate", "%pipeline"])
def test_an_unknown_or_missing_pipeline_subcommand_is_a_usage_error(
    usage_error: Usage, line: str
) -> None:
    message = usage_error(line)
    for sub in ("run", "graph", "status", "retry", "rerun", "inputs", "reset", "stop"):
        assert sub in message


def test_pipeline_graph_draws_the_blocks_and_expanded_draws_the_instances(
    cell: Cell, usage_error: Usage, capsys: pytest.CaptureFixture[str]
) -> None:
    _fanout_pipeline(cell)
    drawn = cell("%pipeline graph").result
    text = getattr(drawn, "data", None) or capsys.readouterr().out
    for block in ("items", "t", "e"):
        assert block in text
    expanded = cell("%pipeline graph --expanded").result
    text = getattr(expanded, "data", None) or capsys.readouterr().out
    assert "t:1" in text
    usage_error("%pipeline graph --sideways")


def test_pipeline_graph_expanded_before_any_run_is_a_usage_error(
    cell: Cell, usage_error: Usage
) -> None:
    cell("%%loader a --no-run\n1", "c1")
    assert "no pipeline run yet" in usage_error("%pipeline graph --expanded")


# -- cancelling -----------------------------------------------------------------------------
LONG_RUN = [
    ("import threading\ngate = threading.Event()\nstarted = []", None),
    ("%%loader items --dynamic --no-run\nlist(range(40))", "c1"),
    ("%%transformer slow --no-run\nstarted.append(items)\ngate.wait(20)\nitems", "c2"),
]


def test_background_run_returns_at_once_and_pipeline_stop_cancels_it(
    cell: Cell, shell: InteractiveShell, magics: Any, session: Any
) -> None:
    for source, cell_id in LONG_RUN:
        cell(source, cell_id)
    began = time.monotonic()
    cell("%pipeline run --background --max-workers 2")
    assert time.monotonic() - began < 2
    assert magics._background.is_alive()
    _wait_for(lambda: len(shell.user_ns["started"]) > 0)
    assert cell("21 * 2").result == 42  # the kernel is usable meanwhile
    cell("%pipeline stop")
    magics._background.join(10)
    assert not magics._background.is_alive()  # stopped although bodies still wait
    assert session.last_run.status == "cancelled"
    counts = session.last_run.counts()
    assert counts["cancelled"] > 0
    assert counts["completed"] + counts["cancelled"] == 41
    assert len(shell.user_ns["started"]) < 40
    cell("gate.set()")
    assert cell("%%exporter after\n'still works'", "c3").result == "still works"


def test_a_block_cell_during_a_background_run_is_refused_not_blocked(
    cell: Cell, usage_error: Usage, shell: InteractiveShell, magics: Any
) -> None:
    for source, cell_id in LONG_RUN:
        cell(source, cell_id)
    cell("%pipeline run --background --max-workers 2")
    _wait_for(lambda: len(shell.user_ns["started"]) > 0)
    assert "already" in usage_error("%%exporter other\n1", "c3")
    assert "already" in usage_error("%pipeline run --background")
    cell("%pipeline stop")
    magics._background.join(10)
    assert not magics._background.is_alive()


def test_keyboard_interrupt_in_a_body_cancels_the_run_and_the_kernel_stays_usable(
    cell: Cell, shell: InteractiveShell, session: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    cell("import threading\ngate = threading.Event()")
    cell("%%loader items --dynamic\nlist(range(30))", "c1")
    result = cell(
        "%%transformer halted\nif items == 3:\n    raise KeyboardInterrupt\ngate.wait(0.05)\nitems",
        "c2",
    )
    assert result.error_in_exec is None
    assert session.last_run.status == "cancelled"
    assert session.last_run.counts("halted")["cancelled"] > 0
    assert "cancelled" in capsys.readouterr().err
    assert cell("1 + 1").result == 2
    assert cell("%%transformer calm\nitems + 1", "c3").result is None
    assert list(shell.user_ns["calm"]) == list(range(1, 31))


def test_kernel_interrupt_during_a_run_cancels_it(
    cell: Cell, shell: InteractiveShell, session: Any
) -> None:
    cell("import os, signal, threading\ngate = threading.Event()")
    cell("%%loader items --dynamic\nlist(range(20))", "c1")
    began = time.monotonic()
    result = shell.run_cell(
        "%%transformer waiting\n"
        "if items == 0:\n    os.kill(os.getpid(), signal.SIGINT)\n"
        "gate.wait(20)\nitems",
        cell_id="c2",
    )
    assert time.monotonic() - began < 10
    assert result.error_in_exec is None
    assert session.last_run.status == "cancelled"
    cell("gate.set()")
    assert cell("'usable'").result == "usable"


# -- the live widget ------------------------------------------------------------------------
def test_a_run_with_the_widget_on_works_and_displays_a_widget(shell: InteractiveShell) -> None:
    widget = pytest.importorskip("mage_nb.widget")
    if getattr(widget, "__file__", None) is None:  # a bare directory: still being written
        pytest.skip("mage_nb.widget has no __init__ yet")
    magics = shell.magics_manager.registry["PipelineMagics"]
    assert magics.show_widget is True  # the default
    with capture_output(stdout=False, stderr=False, display=True) as shown:
        result = shell.run_cell("%%loader items --dynamic\n[1, 2, 3]", cell_id="c1")
        result.raise_error()
        result = shell.run_cell("%%transformer doubled\nitems * 2", cell_id="c2")
        result.raise_error()
    assert list(shell.user_ns["doubled"]) == [2, 4, 6]
    widget_views = [
        o for o in shown.outputs if "application/vnd.jupyter.widget-view+json" in o.data
    ]
    assert len(widget_views) >= 2


def test_pipeline_run_on_processes_rebuilds_the_prelude_in_the_workers(
    cell: Cell, shell: InteractiveShell
) -> None:
    cell("import os\nMAIN = os.getpid()\ndef triple(x):\n    return 3 * x")
    cell("%%loader items --dynamic --no-run\n[1, 2, 3]", "c1")
    cell("%%transformer tripled --no-run\n(triple(items), os.getpid())", "c2")
    cell("%pipeline run --executor processes --max-workers 2")
    outputs = list(shell.user_ns["tripled"])
    assert [o[0] for o in outputs] == [3, 6, 9]
    assert shell.user_ns["MAIN"] not in {o[1] for o in outputs}


def test_pipeline_run_on_an_unreachable_dask_scheduler_is_a_usage_error(
    cell: Cell, usage_error: Usage
) -> None:
    cell("%%loader a --no-run\n1", "c1")
    message = usage_error("%pipeline run --executor dask --address tcp://127.0.0.1:1")
    assert "cannot reach the Dask scheduler" in message
