"""What the run-store tests share: ``mage-nb`` in a real subprocess, an execution log that
block bodies append to (one line per execution, wherever the body ran), and readers for the
run directory (the real SQLite file and output files, nothing mocked)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from helpers import run_cli, write_notebook

from mage_nb.store import StoredRun

ENV = {**os.environ, "PYTHONUTF8": "1", "PYTHONIOENCODING": "utf-8"}

#: A plain cell for every notebook here: ``note(uuid)`` appends one line to the file named
#: by $STORE_TEST_LOG (one O_APPEND write: lines from threads and processes do not mix);
#: ``gate(uuid)`` fails while the file named by $STORE_TEST_GATE does not exist (a block that
#: fails in the first run and completes in the resume, unchanged).
PRELUDE = """\
import os, time
LOG = os.environ.get("STORE_TEST_LOG")
GATE = os.environ.get("STORE_TEST_GATE")

def note(uuid):
    if LOG:
        with open(LOG, "a") as log:
            log.write(uuid + "\\n")

def gate(uuid):
    if GATE and not os.path.exists(GATE):
        raise RuntimeError(f"{uuid}: the gate is closed")
"""


def notebook(path: Path, *cells: str | tuple[str, list[str]]) -> Path:
    """A real .ipynb: the shared prelude, then these cells."""
    return write_notebook(path, [PRELUDE, *cells])


def env(log: Path | None = None, gate: Path | None = None) -> dict[str, str]:
    out = dict(ENV)
    if log is not None:
        out["STORE_TEST_LOG"] = str(log)
    if gate is not None:
        out["STORE_TEST_GATE"] = str(gate)
    return out


def mage_nb(
    *args: object,
    log: Path | None = None,
    gate: Path | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``python -m mage_nb ARGS`` with the test's interpreter; bodies note to ``log``, and
    ``gate(...)`` fails unless ``gate`` exists."""
    return run_cli(*args, timeout=timeout, env=env(log, gate), cwd=cwd)


def executions(log: Path) -> list[str]:
    """The uuids the bodies noted, one per execution, in order."""
    return log.read_text().splitlines() if log.exists() else []


def read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def results(record: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """uuid -> (status, output) of a ``--json`` record, in record order."""
    return {r["uuid"]: (r["status"], r["output"]) for r in record["block_runs"]}


def run_dirs(runs: Path) -> list[Path]:
    return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []


def only_run(runs: Path) -> Path:
    [directory] = run_dirs(runs)
    return directory


def completed(directory: Path) -> set[str]:
    """The instances the store has as completed (what a resume may restore)."""
    return {
        uuid for uuid, (_, _, status) in StoredRun(directory).index.items() if status == "completed"
    }


def run_row(directory: Path) -> dict[str, Any]:
    db = sqlite3.connect(f"file:{directory / 'record.sqlite'}?mode=ro", uri=True)
    try:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM run").fetchone()
        return dict(row)
    finally:
        db.close()


def chunks(directory: Path) -> list[tuple[str, list[str]]]:
    """(file name, uuids it holds) per committed chunk, in order (an instance recorded again
    in a later chunk counts in the later one)."""
    db = sqlite3.connect(f"file:{directory / 'record.sqlite'}?mode=ro", uri=True)
    try:
        names = dict(db.execute("SELECT seq, file FROM chunks ORDER BY seq").fetchall())
    finally:
        db.close()
    held: dict[int, list[str]] = {seq: [] for seq in names}
    for uuid, (seq, _, _) in StoredRun(directory).index.items():
        held[seq].append(uuid)
    return [(names[seq], uuids) for seq, uuids in held.items()]


def snapshot(directory: Path) -> dict[str, Any]:
    """What a run directory holds: the database's rows and every file's digest (a refused
    resume must leave it exactly as it was)."""
    db = sqlite3.connect(f"file:{directory / 'record.sqlite'}?mode=ro", uri=True)
    try:
        rows = {
            "run": db.execute("SELECT * FROM run").fetchall(),
            "chunks": db.execute("SELECT * FROM chunks ORDER BY seq").fetchall(),
        }
    finally:
        db.close()
    files = {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    }
    return {"rows": rows, "files": files}
