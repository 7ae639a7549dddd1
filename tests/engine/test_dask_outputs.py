"""Large outputs stay on the Dask workers (issue #5): the kernel holds a handle, dependent
instances get the data worker-to-worker, and the value comes home only when needed."""

from __future__ import annotations

import builtins
import functools
from typing import Any

import pytest
from helpers import outputs, specs_from_cells

from mage_nb.engine import DaskExecutor, Pipeline, PipelineRun, Run
from mage_nb.engine.events import RunListener

BIG = 3 << 20  # 3 MiB per output, over the 1 MiB default threshold

LOADER = "%%block loader ids --dynamic\nlist(range(4))"
MAKE_BIG = f"%%transformer big\nbytes([ids]) * {BIG}"


class OutputKinds(RunListener):
    """What the scheduler held for each finished instance of one block."""

    def __init__(self, block: str, show: bool):
        self.block = block
        self.show = show
        self.kinds: list[str] = []

    def instance_finished(self, *, run: PipelineRun, instance: Any) -> None:
        if instance.block == self.block:
            output = instance.output
            self.kinds.append(repr(output) if self.show else type(output).__name__)


def run_on(
    address: str, *cells: str, keep_outputs: str = "all", show: bool = False, **executor: Any
) -> tuple[PipelineRun, list[str]]:
    """Run on the cluster; also what the scheduler held for each ``big`` (type or repr)."""
    ns: dict[str, Any] = {"__builtins__": builtins, "__name__": "__main__"}
    exec(TOTAL_LEN, ns)  # a notebook function: shipped to the workers by value
    chosen = DaskExecutor(address, **executor)
    watch = OutputKinds("big", show)
    try:
        run = Run(
            Pipeline(specs_from_cells(cells)),
            ns,
            executor=chosen,
            listeners=[watch],
            keep_outputs=keep_outputs,
            setup=functools.partial(dict, ns),
        ).execute()
    finally:
        chosen.close()
    return run, watch.kinds


TOTAL_LEN = "def total_len(outs):\n    return sum(map(len, outs))\n"


@pytest.fixture
def address(cluster: Any) -> str:
    return str(cluster.address)


def test_large_outputs_stay_on_workers_and_reach_dependents(address: str) -> None:
    run, kinds = run_on(address, LOADER, MAKE_BIG, "%%transformer size\n(len(big), big[0])")
    assert run.status == "completed"
    assert kinds == ["RemoteOutput"] * 4
    assert outputs(run, "size") == {f"size:{i}": (BIG, i) for i in range(4)}
    # the run keeps all outputs: they were fetched before the executor closed
    assert outputs(run, "big") == {f"big:{i}": bytes([i]) * BIG for i in range(4)}


def test_small_outputs_and_a_disabled_threshold_come_back_by_value(address: str) -> None:
    run, kinds = run_on(address, LOADER, MAKE_BIG, keep_on_workers=None)
    assert run.status == "completed"
    assert kinds == ["bytes"] * 4
    run, kinds = run_on(address, LOADER, "%%transformer big\nids * 2")
    assert kinds == ["int"] * 4
    assert outputs(run, "big") == {f"big:{i}": i * 2 for i in range(4)}


def test_a_local_block_receives_the_value_not_the_handle(address: str) -> None:
    run, kinds = run_on(
        address,
        LOADER,
        MAKE_BIG,
        "%%transformer local --executor threads\n(type(big).__name__, len(big))",
    )
    assert kinds == ["RemoteOutput"] * 4
    assert set(outputs(run, "local").values()) == {("bytes", BIG)}


def test_a_list_reduce_hands_handles_on_to_a_dask_block(address: str) -> None:
    run, _ = run_on(
        address,
        LOADER,
        "%%transformer big --reduce list\nbytes([ids]) * " + str(BIG),
        "%%block custom total\n[(len(b), b[0]) for b in big]",
        keep_outputs="none",
    )
    assert run.status == "completed"
    assert [r.output for r in run.instances("total")] == [None]  # keep none: released
    run, _ = run_on(
        address,
        LOADER,
        "%%transformer big --reduce list\nbytes([ids]) * " + str(BIG),
        "%%block custom total\n[(len(b), b[0]) for b in big]",
    )
    assert outputs(run, "total") == {"total": [(BIG, i) for i in range(4)]}


@pytest.mark.parametrize(
    ("strategy", "body", "expected"),
    [
        ("count", f"bytes([ids]) * {BIG}", 4),
        ("total_len", f"bytes([ids]) * {BIG}", 4 * BIG),
        # a kept list is resolved even for `list`, which must extend with its items
        ("concat", f"list(bytes([ids]) * {BIG // 8})", 4 * BIG // 8),
        ("list", f"list(bytes([ids]) * {BIG // 8})", 4 * BIG // 8),
    ],
)
def test_reduces_that_fold_get_the_values(
    address: str, strategy: str, body: str, expected: int
) -> None:
    run, kinds = run_on(
        address,
        LOADER,
        f"%%transformer big --reduce {strategy}\n{body}",
        "%%block custom total\nbig if isinstance(big, int) else len(big)",
    )
    assert run.status == "completed", [r.error for r in run.instances()]
    assert kinds == ["RemoteOutput"] * 4
    assert outputs(run, "total") == {"total": expected}


def test_handle_repr_previews_the_value(address: str) -> None:
    _, kinds = run_on(address, LOADER, MAKE_BIG, keep_outputs="none", show=True)
    assert len(kinds) == 4
    assert all("bytes, 3,145,728 bytes, kept on a Dask worker" in r for r in kinds), kinds
