"""Reduce strategies below a dynamic block (SPEC §2.5, §2.6, §8)."""

from __future__ import annotations

import threading
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from helpers import outputs, run_cells, statuses

import mage_nb
from mage_nb.engine import GraphError, PipelineError


@pytest.fixture(params=["sync", "threads", "processes"])
def executor(request: pytest.FixtureRequest) -> str:
    """The same answers on every executor, worker processes included."""
    return str(request.param)


def reduce_run(
    items: str,
    body: str,
    strategy: str,
    executor: str = "sync",
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


def test_list_is_the_default_strategy(executor: str) -> None:
    run = run_cells(
        "%%loader src --dynamic\n[1, 2, 3]",
        "%%transformer part --reduce\nsrc * 10",
        "%%exporter total\npart",
        executor=executor,
    )
    assert reduced(run) == [10, 20, 30]
    assert statuses(run, "total") == {"total": "completed"}


def test_list_extends_list_outputs_one_level_and_appends_others(executor: str) -> None:
    body = "[src, [src]] if src != 2 else {'two': src}"
    run = reduce_run("[1, 2, 3]", body, "list", executor)
    assert reduced(run) == [1, [1], {"two": 2}, 3, [3]]


def test_list_appends_tuples_instead_of_extending() -> None:
    run = reduce_run("[1, 2]", "(src, src)", "list")
    assert reduced(run) == [(1, 1), (2, 2)]


def test_list_is_in_instance_order_whatever_the_completion_order() -> None:
    body = "import time\ntime.sleep(0.02 * (4 - src))\nsrc"
    run = reduce_run("[1, 2, 3]", body, "list", "threads")
    assert reduced(run) == [1, 2, 3]


# -- concat ------------------------------------------------------------------------------------


def test_concat_joins_dataframes_and_resets_the_index(executor: str) -> None:
    body = "import pandas as pd\npd.DataFrame({'id': [src, src], 'n': [0, 1]})"
    run = reduce_run("[1, 2]", body, "concat", executor)
    frame = reduced(run)
    assert isinstance(frame, pd.DataFrame)
    assert frame["id"].tolist() == [1, 1, 2, 2]
    assert frame["n"].tolist() == [0, 1, 0, 1]
    assert frame.index.tolist() == [0, 1, 2, 3]


def test_concat_joins_arrow_tables() -> None:
    body = "import pyarrow as pa\npa.table({'id': [src]})"
    table = reduced(reduce_run("[1, 2, 3]", body, "concat"))
    assert isinstance(table, pa.Table)
    assert table.to_pylist() == [{"id": 1}, {"id": 2}, {"id": 3}]


def test_concat_joins_lists() -> None:
    assert reduced(reduce_run("[1, 2]", "[src, src * 10]", "concat")) == [1, 10, 2, 20]


def test_concat_of_something_else_fails_the_consumer_naming_the_reduce() -> None:
    run = reduce_run("[1, 2]", "src", "concat")
    total = run.block_runs["total"]
    assert total.status == "failed"
    assert "'part'" in total.error.message
    assert "'concat'" in total.error.message


# -- sum, count, merge -------------------------------------------------------------------------


def test_sum_adds_the_outputs(executor: str) -> None:
    assert reduced(reduce_run("[1, 2, 3, 4]", "src * src", "sum", executor)) == 30


def test_count_counts_the_instances_not_the_values(executor: str) -> None:
    run = reduce_run("['a', 'b', 'c']", "[None, None] if src == 'a' else None", "count", executor)
    assert reduced(run) == 3


def test_merge_merges_dicts_in_instance_order_later_wins(executor: str) -> None:
    body = (
        "import time\ntime.sleep(0.02 * (4 - src))\n{'last': src, f'k{src}': src}"
        if executor == "threads"
        else "{'last': src, f'k{src}': src}"
    )
    run = reduce_run("[1, 2, 3]", body, "merge", executor)
    assert reduced(run) == {"last": 3, "k1": 1, "k2": 2, "k3": 3}


def test_merge_of_something_else_fails_the_consumer_naming_the_reduce() -> None:
    run = reduce_run("[1, 2]", "[src]", "merge")
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
    strategy: str, empty: Any, executor: str
) -> None:
    run = reduce_run("[]", "src", strategy, executor)
    assert run.status == "completed"
    assert list(run.instances("part")) == []
    value = reduced(run)
    assert value == empty
    assert type(value) is type(empty)


def test_zero_items_call_a_named_callable_with_an_empty_list() -> None:
    run = reduce_run("[]", "src", "gather", namespace={"gather": lambda xs: ("got", xs)})
    assert reduced(run) == ("got", [])


# -- named reducers ----------------------------------------------------------------------------


def test_named_callable_gets_the_ordered_list_of_outputs(executor: str) -> None:
    calls: list[list[Any]] = []

    def gather(values: list[Any]) -> str:
        calls.append(list(values))
        return "-".join(values)

    body = "import time\ntime.sleep(0.01 * len(src))\nsrc.upper()"
    run = reduce_run("['ccc', 'bb', 'a']", body, "gather", executor, namespace={"gather": gather})
    assert reduced(run) == "CCC-BB-A"
    assert calls == [["CCC", "BB", "A"]]


class Collect:
    """A step/finish reducer class; counts how often it is instantiated."""

    made = 0
    lock = threading.Lock()

    def __init__(self) -> None:
        with Collect.lock:
            Collect.made += 1

    def initial(self) -> list[Any]:
        return []

    def step(self, acc: list[Any], value: Any) -> list[Any]:
        return [*acc, value]

    def finish(self, acc: list[Any]) -> tuple[Any, ...]:
        return tuple(acc)


def test_reducer_class_is_instantiated_once_per_group(executor: str) -> None:
    Collect.made = 0
    run = run_cells(
        "%%loader groups --dynamic\n['g1', 'g2']",
        "%%transformer members --dynamic\n[groups + 'a', groups + 'b', groups + 'c']",
        "%%transformer part --reduce Collect\nmembers.upper()",
        "%%exporter total\npart",
        executor=executor,
        namespace={"Collect": Collect},
    )
    assert outputs(run, "total") == {
        "total:0": ("G1A", "G1B", "G1C"),
        "total:1": ("G2A", "G2B", "G2C"),
    }
    assert Collect.made == 2


class Summer:
    def __init__(self) -> None:
        self.finished = 0

    def initial(self) -> int:
        return 100

    def step(self, acc: int, value: int) -> int:
        return acc + value

    def finish(self, acc: int) -> dict[str, int]:
        self.finished += 1
        return {"total": acc}


def test_reducer_object_with_initial_step_finish_is_used() -> None:
    summer = Summer()
    run = reduce_run("[1, 2, 3]", "src", "summer", namespace={"summer": summer})
    assert reduced(run) == {"total": 106}
    assert summer.finished == 1


def test_reduce_two_levels_down_closes_the_outer_fan_out_too(executor: str) -> None:
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


def test_unknown_strategy_is_refused_before_anything_runs() -> None:
    ran: list[str] = []
    with pytest.raises(GraphError) as info:
        run_cells(
            "%%loader src --dynamic\nran.append('src') or [1, 2]",
            "%%transformer part --reduce nosuch\nran.append('part') or src",
            "%%loader other\nran.append('other')",
            namespace={"ran": ran},
        )
    assert isinstance(info.value, PipelineError)
    message = str(info.value)
    assert "'part'" in message
    assert "unknown reduce strategy 'nosuch'" in message
    assert "list, concat, sum, count, merge" in message
    assert ran == []


def test_strategy_naming_a_non_callable_is_refused_before_anything_runs() -> None:
    ran: list[str] = []
    with pytest.raises(GraphError) as info:
        run_cells(
            "%%loader src --dynamic\nran.append('src') or [1]",
            "%%transformer part --reduce limit\nsrc",
            namespace={"ran": ran, "limit": 5},
        )
    assert "'limit'" in str(info.value)
    assert ran == []


def test_reduce_outside_every_fan_out_is_refused_before_anything_runs() -> None:
    ran: list[str] = []
    with pytest.raises(GraphError) as info:
        run_cells(
            "%%loader src\nran.append('src') or [1, 2]",
            "%%transformer part --reduce\nsrc",
            namespace={"ran": ran},
        )
    assert "'part'" in str(info.value)
    assert "outside every fan-out" in str(info.value)
    assert ran == []


def test_reducer_that_raises_fails_the_consumer_naming_the_reduce(executor: str) -> None:
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
