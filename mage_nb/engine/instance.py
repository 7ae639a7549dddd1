"""Block runs (instances), their statuses, errors and the ``context`` a body sees.

An instance is created once per lineage and lives for the whole run, so it is kept small:
``__slots__``, a key of item indices, references to the fan-outs it descends from (names
and metadata are looked up there, not copied), and times as floats until they are shown.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import traceback as _tb
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .fanout import FanoutRecord
    from .scheduler import BlockState

PENDING = "pending"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
UPSTREAM_FAILED = "upstream_failed"
CANCELLED = "cancelled"
STATUSES = (PENDING, RUNNING, COMPLETED, FAILED, UPSTREAM_FAILED, CANCELLED)
DONE = frozenset({COMPLETED, FAILED, UPSTREAM_FAILED, CANCELLED})
_EMPTY: Mapping[str, Any] = {}


@dataclass(frozen=True)
class ErrorInfo:
    """Why an instance did not complete."""

    type: str
    message: str
    traceback: str | None = None

    @classmethod
    def from_exception(
        cls, exc: BaseException, *, block_file: str | None = None, names: Iterable[str] = ()
    ) -> ErrorInfo:
        """``names``: what a misspelt name may have meant (blocks, notebook globals)."""
        tbe = _tb.TracebackException.from_exception(exc)
        if block_file is not None:
            # Keep the frames from the block's own code on; the engine's are noise.
            frames = tbe.stack
            for i, frame in enumerate(frames):
                if frame.filename == block_file:
                    del frames[:i]
                    break
        message = str(exc)
        missing = getattr(exc, "name", None) if isinstance(exc, NameError) else None
        if missing:
            close = difflib.get_close_matches(missing, [n for n in names if n != missing], n=1)
            if close:
                message = f"{message}. Did you mean: {close[0]!r}?"
        return cls(type(exc).__name__, message, "".join(tbe.format()))

    @classmethod
    def timed_out(cls, uuid: str, seconds: float) -> ErrorInfo:
        return cls("TimeoutError", f"instance {uuid!r} ran longer than --timeout {seconds:g}s")

    def line(self) -> str:
        message = self.message.strip().splitlines()[0] if self.message.strip() else ""
        return f"{self.type}: {message}" if message else self.type

    def to_json(self) -> dict[str, str | None]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback}


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Restored:
    """A result taken from a run store (``Run(restore=...)``): what an instance that is not
    run again needs to look completed."""

    attempts: int
    started: float | None
    ended: float | None
    output: Any
    fanout: FanoutRecord | None = None
    captured: Any = None
    source: None = None


class BlockRun:
    """One instance of a block: one execution of its code for one lineage."""

    __slots__ = (
        "attempts",
        "captured",
        "cause",
        "ended",
        "error",
        "fanout",
        "fanouts",
        "inputs",
        "key",
        "origins",
        "output",
        "reused",
        "source",
        "started",
        "state",
        "status",
        "uuid",
    )

    def __init__(
        self,
        state: BlockState,
        key: tuple[int, ...],
        fanouts: tuple[FanoutRecord, ...],
        uuid: str,
        inputs: tuple[Any, ...] | None,
        origins: tuple[Any, ...] | None,
        status: str = PENDING,
    ):
        self.state = state
        self.key = key
        self.fanouts = fanouts
        self.uuid = uuid
        self.inputs = inputs
        self.origins = origins
        self.status = status
        self.attempts = 0
        self.output: Any = None
        self.error: ErrorInfo | None = None
        self.cause: BlockRun | None = None
        self.fanout: FanoutRecord | None = None  # the fan-out a dynamic instance made
        self.reused = False  # its result was taken from an earlier run
        self.source: BlockRun | Restored | None = None  # if reused: what computed it
        self.captured: Any = None  # stdout/stderr/displays, when the run captures them
        self.started: float | None = None
        self.ended: float | None = None

    # -- what the record and listeners read ---------------------------------------------------
    @property
    def block(self) -> str:
        return self.state.block.name

    @property
    def upstream(self) -> list[str]:
        return list(self.state.block.upstream)

    @property
    def lineage(self) -> list[tuple[str, str]]:
        return [(f.block, f.suffix(k)) for f, k in zip(self.fanouts, self.key) if k >= 0]

    @property
    def index(self) -> tuple[int, ...]:
        return self.key

    @property
    def metadata(self) -> Mapping[str, Any]:
        merged: dict[str, Any] | None = None
        for f, k in zip(self.fanouts, self.key):
            meta = f.item_metadata(k)
            if meta:
                merged = {**merged, **meta} if merged else dict(meta)
        return merged if merged is not None else _EMPTY

    @property
    def reduced_from(self) -> list[str]:
        return [u for o in self.origins or () if hasattr(o, "reduced_from") for u in o.reduced_from]

    @property
    def failed(self) -> list[str]:
        return [u for o in self.origins or () if hasattr(o, "failed_uuids") for u in o.failed_uuids]

    @property
    def started_at(self) -> str | None:
        return iso(self.started)

    @property
    def ended_at(self) -> str | None:
        return iso(self.ended)

    @property
    def duration(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started

    def __repr__(self) -> str:
        return f"<BlockRun {self.uuid} {self.status}>"


class Context:
    """What a block body sees as ``context`` (SPEC §2.8)."""

    __slots__ = ("_run", "attempt", "params")

    def __init__(self, run: BlockRun, params: Mapping[str, Any], attempt: int):
        self._run = run
        self.params = params
        self.attempt = attempt

    @property
    def uuid(self) -> str:
        return self._run.uuid

    @property
    def block(self) -> str:
        return self._run.block

    @property
    def index(self) -> tuple[int, ...]:
        return tuple(k for k in self._run.key if k >= 0)

    @property
    def lineage(self) -> list[tuple[str, str]]:
        return self._run.lineage

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self._run.metadata

    @property
    def reduced_from(self) -> list[str]:
        return self._run.reduced_from

    @property
    def failed(self) -> list[str]:
        return self._run.failed

    def __repr__(self) -> str:
        return f"<context {self.uuid} attempt={self.attempt}>"
