"""Reduce strategies below a dynamic block (SPEC §2.5, §2.6, §8).

Every test runs on the synchronous, thread and process executors and on a real Dask cluster
(the same answers wherever the instances run), unless it says why not. Reducers and bodies
note their calls in a file (``note``): they may run in another process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from helpers import note_to, notebook_code, notes, on_executors, outputs, run_cells, statuses

import mage_nb
from mage_nb.engine import GraphError, PipelineError


@pytest.fixture
def executor(any_executor: Any) -> Any:
    """Reduce results are the same on every executor."""
    return any_executor


def reduce_run(
    items: str,
    body: str,
    strategy: str,
    executor: Any = "sync",
    namespace: dict[str, Any] | None = None,
) -> mage_nb.PipelineRun:
    """``src`` fans ``items`` out, ``part`` computes ``body`` per item and reduces, ``total``
    receives the reduced value."""
    return run_cells(
        f"%%loader src --dynamic\n{items}",
        f"%%transformer part --reduce {strategy}\n{body}".rstrip(),
        "%%exporter total\npart",
        executor=executor,
        namespace=namespace,
    )


def reduced(run: mage_nb.PipelineRun) -> Any:
    total = run.block_runs["total"]
    assert total.status == "completed", total.error
    return total.output


# -- list --------------------------------------------------------------------------------------


def test_list_is_the_default_strategy(executor: Any) -> None:
    run = run_cells(
        "%%loader src --dynamic\n[1, 2, 3]",
        "%%transformer part --reduce\nsrc * 10",
        "%%exporter total\npart",
        executor=executor,
    )
    assert reduced(run) == [10, 20, 30]
    assert statuses(run, "total") == {"total": "completed"}


def test_list_extends_list_outputs_one_level_and_appends_others(executor: Any) -> None:
    body = "[src, [src]] if src != 2 else {'two': src}"
    run = reduce_run("[1, 2, 3]", body, "list", executor)
    assert reduced(run) == [1, [1], {"two": 2}, 3, [3]]


def test_list_appends_tuples_instead_of_extending(executor: Any) -> None:
    run = reduce_run("[1, 2]", "(src, src)", "list", executor)
    assert reduced(run) == [(1, 1), (2, 2)]


# Not on the sync executor: it completes instances in instance order.
@on_executors("threads", "processes", "dask")
def test_list_is_in_instance_order_whatever_the_completion_order(executor: Any) -> None:
    body = "import time\ntime.sleep(0.02 * (4 - src))\nsrc"
    run = reduce_run("[1, 2, 3]", body, "list", executor)
    assert reduced(run) == [1, 2, 3]


# -- concat ------------------------------------------------------------------------------------


def test_concat_joins_dataframes_and_resets_the_index(executor: Any) -> None:
    body = "import pandas as pd\npd.DataFrame({'id': [src, src], 'n': [0, 1]})"
    run = reduce_run("[1, 2]", body, "concat", executor)
    frame = reduced(run)
    assert isinstance(frame, pd.DataFrame)
    assert frame["id"].tolist() == [1, 1, 2, 2]
    assert frame["n"].tolist() == [0, 1, 0, 1]
    assert frame.index.tolist() == [0, 1, 2, 3]


def test_concat_joins_arrow_tables(executor: Any) -> None:
    body = "import pyarrow as pa\npa.table({'id': [src]})"
    table = reduced(reduce_run("[1, 2, 3]", body, "concat", executor))
    assert isinstance(table, pa.Table)
    assert table.to_pylist() == [{"id": 1}, {"id": 2}, {"id": 3}]


def test_concat_joins_lists(executor: Any) -> None:
    assert reduced(reduce_run("[1, 2]", "[src, src * 10]", "concat", executor)) == [1, 10, 2, 20]


def test_concat_of_something_else_fails_the_consumer_naming_the_reduce(executor: Any) -> None:
    run = reduce_run("[1, 2]", "src", "concat", executor)
    total = run.block_runs["total"]
    assert total.status == "failed"
    assert "'part'" in total.error.message
    assert "'concat'" in total.error.message


# -- sum, count, merge -------------------------------------------------------------------------


def test_sum_adds_the_outputs(executor: Any) -> None:
    assert reduced(reduce_run("[1, 2, 3, 4]", "src * src", "sum", executor)) == 30


def test_count_counts_the_instances_not_the_values(executor: Any) -> None:
    run = reduce_run("['a', 'b', 'c']", "[None, None] if src == 'a' else None", "count", executor)
    assert reduced(run) == 3


def test_merge_merges_dicts_in_instance_order_later_wins(executor: Any) -> None:
    body = (
        "import time\ntime.sleep(0.02 * (4 - src))\n{'last': src, f'k{src}': src}"
        if executor != "sync"  # completion order differs from instance order
        else "{'last': src, f'k{src}': src}"
    )
    run = reduce_run("[1, 2, 3]", body, "merge", executor)
    assert reduced(run) == {"last": 3, "k1": 1, "k2": 2, "k3": 3}


def test_merge_of_something_else_fails_the_consumer_naming_the_reduce(executor: Any) -> None:
    run = reduce_run("[1, 2]", "[src]", "merge", executor)
    total = run.block_runs["total"]
    assert total.status == "failed"
    assert "'merge'" in total.error.message
    assert "dict" in total.error.message


# -- empty fan-out -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "empty"),
    [("list", []), ("concat", []), ("sum", 0), ("count", 0), ("merge", {})],
)
def test_zero_items_reduce_to_the_strategy_empty_value(
    strategy: str, empty: Any, executor: Any
) -> None:
    run = reduce_run("[]", "src", strategy, executor)
    assert run.status == "completed"
    assert list(run.instances("part")) == []
    value = reduced(run)
    assert value == empty
    assert type(value) is type(empty)


def test_zero_items_call_a_named_callable_with_an_empty_list(executor: Any) -> None:
    run = reduce_run("[]", "src", "gather", executor, namespace={"gather": lambda xs: ("got", xs)})
    assert reduced(run) == ("got", [])


# -- named reducers ----------------------------------------------------------------------------


# A named callable, defined the way a notebook defines one; it notes each call.
GATHER = """
def gather(values):
    note(list(values))
    return "-".join(values)
"""


def test_named_callable_gets_the_ordered_list_of_outputs(executor: Any, tmp_path: Path) -> None:
    log = tmp_path / "calls"
    body = "import time\ntime.sleep(0.01 * len(src))\nsrc.upper()"
    namespace = notebook_code(GATHER, **note_to(log))
    run = reduce_run("['ccc', 'bb', 'a']", body, "gather", executor, namespace=namespace)
    assert reduced(run) == "CCC-BB-A"
    assert notes(log) == [(["CCC", "BB", "A"],)]


# A step/finish reducer class; it notes each time it is instantiated.
COLLECT = """
class Collect:
    def __init__(self):
        note("made")

    def initial(self):
        return []

    def step(self, acc, value):
        return [*acc, value]

    def finish(self, acc):
        return tuple(acc)
"""


def test_reducer_class_is_instantiated_once_per_group(executor: Any, tmp_path: Path) -> None:
    log = tmp_path / "made"
    run = run_cells(
        "%%loader groups --dynamic\n['g1', 'g2']",
        "%%transformer members --dynamic\n[groups + 'a', groups + 'b', groups + 'c']",
        "%%transformer part --reduce Collect\nmembers.upper()",
        "%%exporter total\npart",
        executor=executor,
        namespace=notebook_code(COLLECT, **note_to(log)),
    )
    assert outputs(run, "total") == {
        "total:0": ("G1A", "G1B", "G1C"),
        "total:1": ("G2A", "G2B", "G2C"),
    }
    assert notes(log) == [("made",), ("made",)]


# A reducer object with initial/step/finish; it notes each finish.
SUMMER = """
class Summer:
    def initial(self):
        return 100

    def step(self, acc, value):
        return acc + value

    def finish(self, acc):
        note("finished", acc)
        return {"total": acc}

summer = Summer()
"""


def test_reducer_object_with_initial_step_finish_is_used(executor: Any, tmp_path: Path) -> None:
    log = tmp_path / "finished"
    namespace = notebook_code(SUMMER, **note_to(log))
    run = reduce_run("[1, 2, 3]", "src", "summer", executor, namespace=namespace)
    assert reduced(run) == {"total": 106}
    assert notes(log) == [("finished", 106)]


def test_reduce_two_levels_down_closes_the_outer_fan_out_too(executor: Any) -> None:
    run = run_cells(
        "%%loader groups --dynamic\n[[1, 2], [3]]",
        "%%transformer members --dynamic\ngroups",
        "%%transformer inner --reduce sum\nmembers",
        "%%transformer outer --reduce list\ninner",
        "%%exporter total\nouter",
        executor=executor,
    )
    assert outputs(run, "total") == {"total": [3, 3]}


# -- refusals and failures ---------------------------------------------------------------------


def test_unknown_strategy_is_refused_before_anything_runs(executor: Any, tmp_path: Path) -> None:
    log = tmp_path / "ran"
    with pytest.raises(GraphError) as info:
        run_cells(
            "%%loader src --dynamic\nnote('src') or [1, 2]",
            "%%transformer part --reduce nosuch\nnote('part') or src",
            "%%loader other\nnote('other')",
            namespace=note_to(log),
            executor=executor,
        )
    assert isinstance(info.value, PipelineError)
    message = str(info.value)
    assert "'part'" in message
    assert "unknown reduce strategy 'nosuch'" in message
    assert "list, concat, sum, count, merge" in message
    assert notes(log) == []


def test_strategy_naming_a_non_callable_is_refused_before_anything_runs(
    executor: Any, tmp_path: Path
) -> None:
    log = tmp_path / "ran"
    with pytest.raises(GraphError) as info:
        run_cells(
            "%%loader src --dynamic\nnote('src') or [1]",
            "%%transformer part --reduce limit\nsrc",
            namespace={**note_to(log), "limit": 5},
            executor=executor,
        )
    assert "'limit'" in str(info.value)
    assert notes(log) == []


def test_reduce_outside_every_fan_out_is_refused_before_anything_runs(
    executor: Any, tmp_path: Path
) -> None:
    log = tmp_path / "ran"
    with pytest.raises(GraphError) as info:
        run_cells(
            "%%loader src\nnote('src') or [1, 2]",
            "%%transformer part --reduce\nsrc",
            namespace=note_to(log),
            executor=executor,
        )
    assert "'part'" in str(info.value)
    assert "outside every fan-out" in str(info.value)
    assert notes(log) == []


def test_reducer_that_raises_fails_the_consumer_naming_the_reduce(executor: Any) -> None:
    def explode(values: list[Any]) -> Any:
        raise ValueError(f"cannot combine {len(values)} values")

    run = run_cells(
        "%%loader src --dynamic\n[1, 2]",
        "%%transformer part --reduce explode\nsrc",
        "%%exporter total\npart",
        "%%exporter after\ntotal",
        "%%loader other\n'fine'",
        executor=executor,
        namespace={"explode": explode},
    )
    assert statuses(run, "part") == {"part:0": "completed", "part:1": "completed"}
    total = run.block_runs["total"]
    assert total.status == "failed"
    assert total.error.type == "ValueError"
    assert "reducing 'part'" in total.error.message
    assert "'explode'" in total.error.message
    assert "cannot combine 2 values" in total.error.message
    assert statuses(run, "after") == {"after": "upstream_failed"}
    assert run.block_runs["other"].status == "completed"
    assert run.status == "failed"
