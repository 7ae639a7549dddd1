"""The run store: every headless run's instances and outputs, durably, so a run that dies
can resume without losing or redoing work.

A run directory (``.mage_nb/runs/<run_id>/`` beside the notebook, or under ``--store``)
holds ``record.sqlite`` (the run: notebook, params, block versions, status; and one row per
*chunk*) and ``outputs/``. A chunk is what finished between two scheduler checkpoints:
one pickle file with each instance's status, attempts, timings, error and output (DataFrames
and Arrow tables go to their own Parquet files beside it), written to a temporary name and
renamed, then its row is committed with the file's checksum. A checkpoint comes before
anything that depends on those instances starts, so the store never holds a result whose
upstream it lacks. One chunk per checkpoint, not one row or file per instance, is what keeps
a 100,000-instance run cheap to record.

Reading trusts nothing it cannot verify: a chunk or Parquet file that is missing or whose
checksum differs makes its instances run again (with a warning), never be reused.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import pickle
import sqlite3
import sys
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle

from .engine.errors import PipelineError
from .engine.events import RunListener
from .engine.handles import RemoteOutput
from .engine.instance import COMPLETED, STATUSES, BlockRun, Restored
from .engine.record import PipelineRun, jsonable

STORE_DIR = Path(".mage_nb") / "runs"
DATABASE = "record.sqlite"
OUTPUTS = "outputs"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS run (
    run_id TEXT PRIMARY KEY, notebook TEXT, status TEXT, started REAL, ended REAL,
    params TEXT, versions TEXT, resumes INTEGER DEFAULT 0, counts TEXT
);
CREATE TABLE IF NOT EXISTS chunks (
    seq INTEGER PRIMARY KEY, file TEXT NOT NULL, checksum TEXT NOT NULL, entries BLOB NOT NULL
);
"""

# A chunk file is a ``Chunk``: columns, one item per instance (building a tuple per instance
# cost more than the run it recorded). ``special`` maps a position to how its output is
# stored when it is not the plain value in ``outputs``: ("fanout", record),
# ("parquet", file, checksum, kind, arrow schema or None) or ("unstored", reason). The uuids
# and statuses are in the SQLite row (the index), not in the file.


class Chunk:
    __slots__ = ("attempts", "ended", "errors", "outputs", "special", "started")

    def __init__(
        self,
        attempts: list[int],
        started: list[float | None],
        ended: list[float | None],
        errors: list[Any],
        outputs: list[Any],
        special: dict[int, tuple[Any, ...]],
    ):
        self.attempts = attempts
        self.started = started
        self.ended = ended
        self.errors = errors
        self.outputs = outputs
        self.special = special

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            Chunk,
            (self.attempts, self.started, self.ended, self.errors, self.outputs, self.special),
        )


_STREAM_NOT_KEPT = (
    "its items streamed and were not kept, as the run kept no outputs; "
    "what depends on it runs again too"
)
_PLAIN: dict[type, bool] = {}  # output type -> stored as a plain value (not Parquet)


def _is_plain(kind: type) -> bool:
    """Whether outputs of this type are pickled into the chunk as they are."""
    plain = _PLAIN.get(kind)
    if plain is None:
        plain = _PLAIN[kind] = kind is not RemoteOutput and _frame_kind_of(kind) is None
    return plain


def default_runs_dir(source: str | Path) -> Path:
    """Runs of a notebook are kept beside it (of an exported folder, inside it)."""
    path = Path(source)
    return (path if path.is_dir() else path.parent) / STORE_DIR


def new_run_id() -> str:
    """Sortable and unique enough: the time it started plus a random suffix."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{os.urandom(3).hex()}"


def _checksum(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _write_atomically(path: Path, data: bytes) -> None:
    """A reader sees the whole file or no file: write aside, then rename over."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    # WAL: a commit survives the process being killed, and costs no fsync per chunk.
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_SCHEMA)
    return db


def _frame_kind(value: Any) -> str | None:
    """'pandas' or 'arrow' for outputs that go to Parquet (without importing either)."""
    return _frame_kind_of(type(value))


def _frame_kind_of(kind: type) -> str | None:
    module = kind.__module__.partition(".")[0]
    if module == "pandas" and kind.__name__ == "DataFrame":
        return "pandas"
    if module == "pyarrow" and kind.__name__ == "Table":
        return "arrow"
    return None


def _exact_in_parquet(frame: Any) -> bool:
    """Whether Parquet gives this DataFrame back as it is. Not with Python objects in a
    column or an index level (lists come back as arrays, object strings as ``str``), column
    names of mixed types (made strings), nor an index frequency (dropped): those are pickled
    instead."""
    if any(str(dtype) == "object" for dtype in frame.dtypes):
        return False
    if str(frame.columns.inferred_type).startswith("mixed"):
        return False
    index = frame.index
    for level in range(index.nlevels):
        values = index.get_level_values(level) if index.nlevels > 1 else index
        if str(values.dtype) == "object" or getattr(values, "freq", None) is not None:
            return False
    return True


class RunStoreError(OSError):
    """The run store could not be written (a full disk, a folder that vanished)."""


class RunStoreWriter(RunListener):
    """Records a run as it goes (a listener: it only sees events)."""

    def __init__(
        self,
        directory: Path,
        *,
        notebook: str,
        params: Mapping[str, Any],
        versions: Mapping[str, str],
        resumed: bool = False,
    ):
        self.directory = directory
        self.outputs = directory / OUTPUTS
        self.db: sqlite3.Connection  # opened when the run starts
        self._seq = 0
        self._pending: list[tuple[BlockRun, Any]] = []
        self._notebook = notebook
        self._params = json.dumps(jsonable(dict(params)))
        self._versions = json.dumps(dict(versions))
        self._resumed = resumed
        self._broken = False

    # -- events ------------------------------------------------------------------------------
    def run_started(self, *, run: PipelineRun) -> None:
        # Nothing is written before the run starts: a notebook refused before that (its
        # prelude raised, a bad reduce strategy...) leaves no run directory behind.
        self.outputs.mkdir(parents=True, exist_ok=True)
        self.db = _connect(self.directory / DATABASE)
        row = self.db.execute("SELECT max(seq) FROM chunks").fetchone()
        self._seq = int(row[0] or 0)
        if self._resumed:
            self.db.execute(
                "UPDATE run SET status='running', ended=NULL, resumes=resumes+1, versions=? "
                "WHERE run_id=?",
                (self._versions, run.run_id),
            )
        else:
            self.db.execute(
                "INSERT INTO run (run_id, notebook, status, started, params, versions) "
                "VALUES (?, ?, 'running', ?, ?, ?)",
                (run.run_id, self._notebook, run.started, self._params, self._versions),
            )

    def instance_finished(self, *, run: PipelineRun, instance: BlockRun) -> None:
        if not instance.reused:  # a restored instance is in the store already
            self._pending.append((instance, instance.output))

    def checkpoint(self, *, run: PipelineRun) -> None:
        if self._pending:
            self._record()

    def run_finished(self, *, run: PipelineRun) -> None:
        try:
            self._record()
        finally:
            counts = {k: v for k, v in run.counts().items() if v}
            try:
                self.db.execute(
                    "UPDATE run SET status=?, ended=?, counts=? WHERE run_id=?",
                    (run.status, run.ended or time.time(), json.dumps(counts), run.run_id),
                )
            except sqlite3.Error:
                if not self._broken:  # (a store that failed already said so)
                    raise
            finally:
                self.db.close()

    def _record(self) -> None:
        """Write what finished (``flush``). A store that cannot be written stops the run:
        going on would compute results that a resume could not trust or find."""
        if self._broken:
            self._pending.clear()
            return
        try:
            self.flush()
        except (OSError, sqlite3.Error) as exc:
            self._broken = True
            raise RunStoreError(
                f"could not record the run in {self.directory}: {exc}; the run was stopped"
            ) from exc

    # -- writing -----------------------------------------------------------------------------
    def flush(self) -> None:
        """Write what finished since the last flush as one chunk."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        self._seq += 1
        seq = self._seq
        runs = [p[0] for p in pending]
        outputs = [p[1] for p in pending]
        statuses = [r.status for r in runs]
        fanouts = [r.fanout for r in runs]
        special: dict[int, tuple[Any, ...]] = {}
        kept: list[int] = []  # outputs kept on Dask workers: fetched below, in one go
        # Most chunks are all plain values: look at each instance only when some are not.
        if (
            any(s != COMPLETED for s in statuses)
            or any(f is not None for f in fanouts)
            or not all(map(_is_plain, set(map(type, outputs))))
        ):
            for position, fanout in enumerate(fanouts):
                if statuses[position] != COMPLETED:
                    outputs[position] = None
                elif fanout is not None:
                    if outputs[position] is None and fanout.size:
                        # A stream's items are not kept when the run keeps no outputs: without
                        # them its children cannot be made again, so it is not restorable.
                        special[position] = ("unstored", _STREAM_NOT_KEPT)
                    else:
                        special[position] = ("fanout", fanout)
                else:
                    kind = type(outputs[position])
                    if kind is RemoteOutput:
                        kept.append(position)
                    elif not _is_plain(kind):
                        self._frame(outputs, special, position, seq)
        if kept:
            _fetch(outputs, kept, special)
            for position in kept:
                if position not in special and _frame_kind(outputs[position]) is not None:
                    self._frame(outputs, special, position, seq)
        chunk = Chunk(
            [r.attempts for r in runs],
            [r.started for r in runs],
            [r.ended for r in runs],
            [r.error for r in runs],
            outputs,
            special,
        )
        data = _dumps(chunk)
        name = f"chunk-{seq:06d}.pkl"
        _write_atomically(self.outputs / name, data)
        index = pickle.dumps(([r.uuid for r in runs], statuses), protocol=5)
        self.db.execute(
            "INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?)", (seq, name, _checksum(data), index)
        )

    def _frame(
        self, outputs: list[Any], special: dict[int, tuple[Any, ...]], position: int, seq: int
    ) -> None:
        """A DataFrame or Arrow table goes to its own Parquet file when Parquet holds it."""
        stored = self._parquet(outputs[position], f"{seq}-{position}")
        if stored is not None:
            special[position] = stored
            outputs[position] = None

    def _parquet(self, frame: Any, stem: str) -> tuple[Any, ...] | None:
        import io

        kind = _frame_kind(frame)
        buffer = io.BytesIO()
        schema = None
        try:
            if kind == "pandas":
                if not _exact_in_parquet(frame):
                    return None
                frame.to_parquet(buffer)
            else:
                import pyarrow.parquet as pq

                # Parquet has no date64, time32[s], nor list item names: the table's own
                # schema, kept beside it, casts what is read back to exactly what was written.
                schema = frame.schema
                pq.write_table(frame, buffer, use_compliant_nested_type=False)
        except Exception:  # e.g. a column of mixed Python objects: pickle it instead
            return None
        data = buffer.getvalue()
        name = f"{stem}.parquet"
        _write_atomically(self.outputs / name, data)
        return ("parquet", name, _checksum(data), kind, schema)


class ResumedRunWriter(RunStoreWriter):
    """Records a resumed run. An instance the store has as completed that runs again (its
    output was lost, or an upstream instance runs again) is recorded as pending as soon as it
    is created, in the same chunk as the upstream result that made it run: its old result,
    computed from an upstream output that has since changed, is never restored."""

    def __init__(self, directory: Path, *, completed: Collection[str], **kwargs: Any):
        super().__init__(directory, resumed=True, **kwargs)
        self._completed = set(completed)

    def instance_created(self, *, run: PipelineRun, instance: BlockRun) -> None:
        if not instance.reused and instance.uuid in self._completed:
            self._completed.discard(instance.uuid)
            self._pending.append((instance, None))


def _fetch(outputs: list[Any], positions: list[int], special: dict[int, tuple[Any, ...]]) -> None:
    """Outputs kept on Dask workers are fetched (in one go) to be stored: a handle would
    point at a cluster that may be gone by the time a resume reads it."""
    kept = [outputs[i] for i in positions]
    try:
        values = kept[0].future.client.gather([handle.future for handle in kept])
    except Exception as exc:
        for i in positions:
            special[i] = ("unstored", f"could not fetch it from its Dask worker: {exc!r}")
            outputs[i] = None
        return
    for i, boxed in zip(positions, values):
        outputs[i] = boxed.value


def _dumps(chunk: Chunk) -> bytes:
    """Plain pickle (fast) when it can; classes defined in the notebook need cloudpickle;
    an output neither can pickle is recorded as not stored (it will run again)."""
    try:
        return pickle.dumps(chunk, protocol=5)
    except Exception:
        pass
    try:
        return bytes(cloudpickle.dumps(chunk, protocol=5))
    except Exception:
        pass
    for position, output in enumerate(chunk.outputs):
        try:
            cloudpickle.dumps(output, protocol=5)
        except Exception as exc:
            chunk.special[position] = ("unstored", f"{type(exc).__name__}: {exc}")
            chunk.outputs[position] = None
    return bytes(cloudpickle.dumps(chunk, protocol=5))


@dataclass
class RunSummary:
    run_id: str
    notebook: str
    status: str
    started: float | None
    ended: float | None
    counts: dict[str, int]
    resumes: int
    directory: Path


class StoredRun:
    """A run directory opened for reading: what a resume restores (``get``)."""

    def __init__(self, directory: Path):
        if not (directory / DATABASE).is_file():
            raise PipelineError(f"no stored run in {directory}")
        self.directory = directory
        self.warnings: list[str] = []
        db = sqlite3.connect(f"file:{directory / DATABASE}?mode=ro", uri=True)
        try:
            row = db.execute(
                "SELECT run_id, notebook, status, started, ended, params, versions, resumes, "
                "counts FROM run"
            ).fetchone()
            chunks = db.execute("SELECT seq, file, checksum, entries FROM chunks ORDER BY seq")
            self._chunks: dict[int, tuple[str, str]] = {}
            # uuid -> (chunk, position, status); a later chunk supersedes an earlier one
            self.index: dict[str, tuple[int, int, str]] = {}
            for seq, name, checksum, entries in chunks:
                self._chunks[seq] = (name, checksum)
                uuids, statuses = pickle.loads(entries)
                for position, (uuid, status) in enumerate(zip(uuids, statuses)):
                    self.index[uuid] = (seq, position, status)
        finally:
            db.close()
        if row is None:
            raise PipelineError(f"the stored run in {directory} has no run record")
        self.run_id = row[0]
        self.notebook = row[1]
        self.status = row[2]
        self.started, self.ended = row[3], row[4]
        self.params: dict[str, Any] = json.loads(row[5] or "{}")
        self.versions: dict[str, str] = json.loads(row[6] or "{}")
        self.resumes = int(row[7] or 0)
        self._loaded: dict[int, Chunk | None] = {}

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for _, _, status in self.index.values():
            counts[status] = counts.get(status, 0) + 1
        return {k: v for k, v in counts.items() if v}

    def completed(self) -> set[str]:
        """The instances recorded as completed (whether their outputs can be read or not)."""
        return {uuid for uuid, (_, _, status) in self.index.items() if status == COMPLETED}

    def completed_blocks(self) -> set[str]:
        return {
            uuid.split(":", 1)[0]
            for uuid, (_, _, status) in self.index.items()
            if status == COMPLETED
        }

    def changed_blocks(self, versions: Mapping[str, str]) -> list[str]:
        """Blocks whose stored results were computed from other code (theirs or upstream)."""
        return sorted(
            name
            for name in self.completed_blocks()
            if self.versions.get(name) != versions.get(name)
        )

    # -- restoring ---------------------------------------------------------------------------
    def get(self, uuid: str) -> Restored | None:
        found = self.index.get(uuid)
        if found is None or found[2] != COMPLETED:
            return None
        seq, position, _ = found
        chunk = self._chunk(seq)
        if chunk is None:
            return None
        attempts, started = chunk.attempts[position], chunk.started[position]
        ended = chunk.ended[position]
        special = chunk.special.get(position)
        if special is None:
            return Restored(attempts, started, ended, chunk.outputs[position])
        kind = special[0]
        if kind == "fanout":
            return Restored(attempts, started, ended, chunk.outputs[position], fanout=special[1])
        if kind == "parquet":
            value = self._read_parquet(uuid, *special[1:])
            return None if value is None else Restored(attempts, started, ended, value)
        self.warnings.append(f"the output of {uuid!r} was not stored ({special[1]}): it runs again")
        return None

    def _chunk(self, seq: int) -> Chunk | None:
        if seq in self._loaded:
            return self._loaded[seq]
        name, checksum = self._chunks[seq]
        chunk: Chunk | None = None
        try:
            data = (self.directory / OUTPUTS / name).read_bytes()
        except OSError:
            self.warnings.append(f"stored outputs {name} are missing: their instances run again")
        else:
            if _checksum(data) != checksum:
                self.warnings.append(
                    f"stored outputs {name} are corrupt (checksum mismatch): "
                    "their instances run again"
                )
            else:
                try:
                    chunk = pickle.loads(data)
                except Exception as exc:  # e.g. a class of the outputs changed since
                    self.warnings.append(
                        f"stored outputs {name} cannot be read ({type(exc).__name__}: {exc}): "
                        "their instances run again"
                    )
        self._loaded[seq] = chunk
        return chunk

    def _read_parquet(
        self, uuid: str, name: str, checksum: str, kind: str, schema: Any = None
    ) -> Any:
        import io

        path = self.directory / OUTPUTS / name
        try:
            data = path.read_bytes()
        except OSError:
            self.warnings.append(
                f"the stored output of {uuid!r} ({name}) is missing: it runs again"
            )
            return None
        if _checksum(data) != checksum:
            self.warnings.append(
                f"the stored output of {uuid!r} ({name}) is corrupt (checksum mismatch): "
                "it runs again"
            )
            return None
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(io.BytesIO(data))
            if kind == "pandas":
                return table.to_pandas()
            if schema is not None and not table.schema.equals(schema, check_metadata=True):
                table = table.cast(schema)
        except Exception as exc:
            self.warnings.append(
                f"the stored output of {uuid!r} ({name}) cannot be read "
                f"({type(exc).__name__}: {exc}): it runs again"
            )
            return None
        return table

    def summary(self) -> RunSummary:
        return RunSummary(
            self.run_id,
            self.notebook,
            self.status,
            self.started,
            self.ended,
            self.counts(),
            self.resumes,
            self.directory,
        )


def list_runs(runs_dir: Path) -> Iterator[RunSummary]:
    """Every stored run under ``runs_dir``, oldest first (unreadable ones are skipped)."""
    if not runs_dir.is_dir():
        return
    found = []
    for directory in runs_dir.iterdir():
        if (directory / DATABASE).is_file():
            try:
                found.append(StoredRun(directory).summary())
            except (PipelineError, sqlite3.Error) as exc:
                print(f"mage-nb: skipping {directory}: {exc}", file=sys.stderr)
    yield from sorted(found, key=lambda s: (s.started or 0, s.run_id))
