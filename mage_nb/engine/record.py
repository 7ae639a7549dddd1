"""The run record: what a run did, as objects and as JSON (SPEC §3.3, §8).

``PipelineRun.block_runs`` maps uuid -> ``BlockRun`` in topological then instance order;
``to_record()`` is the JSON-ready dict and ``to_json()`` its text. Outputs are converted only
here, when asked for, never on the per-instance path.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .instance import COMPLETED, STATUSES, BlockRun, iso

if TYPE_CHECKING:
    from .scheduler import BlockState


def jsonable(value: Any) -> Any:
    """Plain values as they are; frames as row objects; numpy scalars as numbers; else repr()."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {
            k if isinstance(k, str) else str(jsonable(k)): jsonable(v) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        # pandas' missing datetime (NaT) is a datetime too: the one unequal to itself
        return value.isoformat() if value == value else None
    module = type(value).__module__.split(".")[0]
    if module == "numpy":
        if hasattr(value, "item") and getattr(value, "shape", None) == ():
            return jsonable(value.item())
    elif module == "pandas":
        if hasattr(value, "to_dict") and hasattr(value, "columns"):
            return jsonable(value.to_dict(orient="records"))
        if type(value).__name__ in ("NaTType", "NAType"):
            return None
        if hasattr(value, "isoformat"):
            return value.isoformat()
    elif module == "pyarrow" and hasattr(value, "to_pylist") and hasattr(value, "schema"):
        return jsonable(value.to_pylist())
    elif module == "polars" and hasattr(value, "to_dicts"):
        return jsonable(value.to_dicts())
    return repr(value)


def block_run_record(run: BlockRun) -> dict[str, Any]:
    return {
        "uuid": run.uuid,
        "block": run.block,
        "status": run.status,
        "lineage": [[block, suffix] for block, suffix in run.lineage],
        "upstream": run.upstream,
        "attempts": run.attempts,
        "output": jsonable(run.output) if run.status == COMPLETED else None,
        "error": run.error.to_json() if run.error is not None else None,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
    }


class PipelineRun:
    """One run of a pipeline: its status, its instances and its warnings."""

    def __init__(self, run_id: str, states: list[BlockState], params: Mapping[str, Any]):
        self.run_id = run_id
        self.status = "pending"
        self.params = dict(params)
        self.warnings: list[str] = []
        self.started: float | None = None
        self.ended: float | None = None
        self._states = states

    # -- instances ---------------------------------------------------------------------------
    def instances(self, block: str | None = None) -> Iterator[BlockRun]:
        """Instances in topological then instance (lineage index) order."""
        for state in self._states:
            if block is None or state.block.name == block:
                yield from sorted(state.instances, key=_by_key)

    @property
    def block_runs(self) -> dict[str, BlockRun]:
        return {run.uuid: run for run in self.instances()}

    @property
    def blocks(self) -> list[str]:
        return [state.block.name for state in self._states]

    def counts(self, block: str | None = None) -> dict[str, int]:
        """Instances per status (of one block, or of the run)."""
        counts = dict.fromkeys(STATUSES, 0)
        for state in self._states:
            if block is None or state.block.name == block:
                for run in state.instances:
                    counts[run.status] += 1
        return counts

    def outputs(self, block: str) -> list[Any]:
        return [run.output for run in self.instances(block)]

    @property
    def duration(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started

    # -- record ------------------------------------------------------------------------------
    def to_record(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "started_at": iso(self.started),
            "ended_at": iso(self.ended),
            "params": jsonable(self.params),
            "block_runs": [block_run_record(run) for run in self.instances()],
            "warnings": list(self.warnings),
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_record(), indent=indent, ensure_ascii=False, allow_nan=False)

    def write_json(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(self.to_json(indent=2))
            fh.write("\n")

    def __repr__(self) -> str:
        return f"<PipelineRun {self.run_id} {self.status}>"


def _by_key(run: BlockRun) -> tuple[int, ...]:
    return run.key
