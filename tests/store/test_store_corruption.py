"""A stored output that is corrupt or missing is never trusted: a resume re-runs the
instances it held (and what depends on them), names it in a warning, and ends with the
outputs of an uninterrupted run. Nothing else runs again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from store_support import (
    chunks,
    env,
    executions,
    mage_nb,
    notebook,
    only_run,
    read_json,
    results,
)

N = 60
PLAIN = (
    "%%loader items --dynamic\nlist(range(60))",
    "%%transformer work --reduce list\nnote(context.uuid)\ntime.sleep(0.002)\n[items, items ** 2]",
    "%%exporter total\nnote(context.uuid)\nwork",
)
FRAMES = (
    "import pandas as pd",
    "%%loader items --dynamic\nlist(range(12))",
    "%%transformer frame --reduce concat\n"
    "note(context.uuid)\n"
    "pd.DataFrame(\n"
    "    {'x': [items, items + 1], 'y': [items / 2, None], 's': ['a', f'b{items}']},\n"
    "    index=pd.Index([10 * items, 10 * items + 1], name='k'),\n"
    ")",
    "%%exporter total\nnote(context.uuid)\n{'rows': len(frame), 'sum': float(frame['x'].sum())}",
)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def delete(path: Path) -> None:
    path.unlink()


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated": (truncate, "corrupt (checksum mismatch)"),
    "bit-flipped": (flip, "corrupt (checksum mismatch)"),
    "deleted": (delete, "missing"),
}


def stored_run(tmp_path: Path, cells: tuple[str, ...]) -> tuple[Path, Path, dict[str, object]]:
    """A completed stored run, its directory, and the record of an uninterrupted run."""
    nb = notebook(tmp_path / "nb.ipynb", *cells)
    proc = mage_nb("run", nb, "--no-progress", "--json", tmp_path / "first.json")
    assert proc.returncode == 0, proc.stderr
    return nb, only_run(tmp_path / ".mage_nb" / "runs"), read_json(tmp_path / "first.json")


def resume(tmp_path: Path, nb: Path, directory: Path) -> tuple[dict[str, object], list[str]]:
    number = len(list(tmp_path.glob("resume-*.json"))) + 1
    log = tmp_path / f"resume-{number}.log"
    out = tmp_path / f"resume-{number}.json"
    proc = mage_nb("run", nb, "--no-progress", "--resume", directory.name, "--json", out, log=log)
    assert proc.returncode == 0, proc.stderr
    return read_json(out), executions(log)


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_chunk_reruns_its_instances_and_their_downstream(
    tmp_path: Path, damage: str
) -> None:
    nb, directory, first = stored_run(tmp_path, PLAIN)
    # A chunk that holds only instances of `work` (items and total are in others).
    candidates = [
        (name, uuids)
        for name, uuids in chunks(directory)
        if all(u.startswith("work:") for u in uuids)
    ]
    assert candidates, chunks(directory)
    name, uuids = candidates[len(candidates) // 2]
    harm, words = DAMAGE[damage]
    harm(directory / "outputs" / name)

    record, again = resume(tmp_path, nb, directory)
    assert sorted(again) == sorted([*uuids, "total"])  # those, their downstream, nothing else
    assert results(record) == results(first)  # type: ignore[arg-type]
    [warning] = record["warnings"]  # type: ignore[misc]
    assert name in warning and words in warning and "run again" in warning

    # The re-run instances were stored anew: a second resume runs nothing.
    record, again = resume(tmp_path, nb, directory)
    assert again == []
    assert record["warnings"] == []
    assert results(record) == results(first)  # type: ignore[arg-type]


def test_damaged_parquet_files_rerun_their_instance_only(tmp_path: Path) -> None:
    nb, directory, first = stored_run(tmp_path, FRAMES)
    outputs = directory / "outputs"
    parquet = sorted(outputs.glob("*.parquet"))
    assert len(parquet) == 12  # one per DataFrame output
    # Which instance each Parquet file holds: its rows say (index k = 10 * item).
    owner = {p.name: f"frame:{pd.read_parquet(p).index[0] // 10}" for p in parquet}
    assert len(set(owner.values())) == 12
    corrupt, missing, truncated = parquet[2], parquet[5], parquet[9]
    flip(corrupt)
    delete(missing)
    truncate(truncated)

    record, again = resume(tmp_path, nb, directory)
    hit = {owner[corrupt.name], owner[missing.name], owner[truncated.name]}
    assert sorted(again) == sorted([*hit, "total"])
    assert results(record) == results(first)  # type: ignore[arg-type]
    warnings = "\n".join(record["warnings"])  # type: ignore[arg-type]
    assert len(record["warnings"]) == 3, warnings  # type: ignore[arg-type]
    for path, words in ((corrupt, "corrupt"), (truncated, "corrupt"), (missing, "missing")):
        [line] = [w for w in record["warnings"] if path.name in w]  # type: ignore[attr-defined]
        assert owner[path.name] in line and words in line

    record, again = resume(tmp_path, nb, directory)
    assert again == []
    assert results(record) == results(first)  # type: ignore[arg-type]


def test_downstream_of_a_rerun_is_not_restored_from_before(tmp_path: Path) -> None:
    """A resume re-runs `seed` (its stored output was lost) and is killed while `echo`, which
    depends on it, runs again. The next resume must not restore the `echo` computed from the
    old `seed`: `seed` is not deterministic, the two would not match."""
    hang = tmp_path / "hang"
    cells = (
        "%%loader seed\nnote(context.uuid)\nos.urandom(8).hex()",
        "%%transformer echo\n"
        "note(context.uuid)\n"
        f"while os.path.exists({str(hang)!r}):\n"
        "    time.sleep(0.005)\n"
        "seed + '!'",
    )
    nb, directory, first = stored_run(tmp_path, cells)
    [(name, _)] = [(name, uuids) for name, uuids in chunks(directory) if uuids == ["seed"]]
    delete(directory / "outputs" / name)

    hang.touch()
    log = tmp_path / "killed.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mage_nb",
            "run",
            str(nb),
            "--no-progress",
            "--resume",
            directory.name,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env(log),
    )
    try:
        deadline = time.monotonic() + 30
        while executions(log) != ["seed", "echo"]:  # echo started: seed's new result is stored
            assert proc.poll() is None and time.monotonic() < deadline, executions(log)
            time.sleep(0.005)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    hang.unlink()

    record, again = resume(tmp_path, nb, directory)
    outputs = results(record)
    assert outputs["seed"] != results(first)["seed"]  # type: ignore[arg-type]
    assert outputs["echo"] == ("completed", outputs["seed"][1] + "!")
    assert again == ["echo"]  # seed's new result was kept; echo's old one was not
