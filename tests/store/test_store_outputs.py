"""What the store keeps and gives back on ``--resume``: parameters, outputs of every kind
(plain, notebook-defined classes, DataFrames and Arrow tables through Parquet, exactly),
fan-out names; and outputs it cannot keep are run again, not lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from store_support import (
    completed,
    executions,
    mage_nb,
    notebook,
    only_run,
    read_json,
    results,
    run_row,
)

from mage_nb.store import StoredRun


def first_then_resume(
    tmp_path: Path, nb: Path, *args: object, first_exit: int = 1
) -> tuple[Path, dict[str, object], list[str]]:
    """Run with the gate closed (gated blocks fail), then resume with it open: the run
    directory, the resume's record and what the resume executed."""
    gate = tmp_path / "gate"
    proc = mage_nb("run", nb, "--no-progress", *args, gate=gate)
    assert proc.returncode == first_exit, proc.stderr
    directory = only_run(tmp_path / ".mage_nb" / "runs")
    gate.touch()
    log = tmp_path / "resume.log"
    out = tmp_path / "resume.json"
    proc = mage_nb(
        "run", nb, "--no-progress", "--resume", directory.name, "--json", out, log=log, gate=gate
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return directory, read_json(out), executions(log)


def test_params_are_stored_and_reach_the_blocks_of_a_resume(tmp_path: Path) -> None:
    nb = notebook(
        tmp_path / "nb.ipynb",
        "%%loader day_of\nnote(context.uuid)\ncontext.params['day']",
        "%%loader items --dynamic\nnote(context.uuid)\n[1, 2]",
        "%%transformer tagged\n"
        "@transformer\n"
        "def tag(items, *args, day=None, context=None, **kwargs):\n"
        "    note(context.uuid)\n"
        "    gate(context.uuid)\n"
        "    return {'item': items, 'day': day, 'params': dict(context.params)}",
    )
    params = ("--param", "day=2026-11-25", "--param", "n=3")
    gate = tmp_path / "gate"
    proc = mage_nb("run", nb, "--no-progress", *params, gate=gate)
    assert proc.returncode == 1, proc.stderr
    directory = only_run(tmp_path / ".mage_nb" / "runs")
    assert json.loads(run_row(directory)["params"]) == {"day": "2026-11-25", "n": "3"}
    assert StoredRun(directory).params == {"day": "2026-11-25", "n": "3"}

    gate.touch()
    log, out = tmp_path / "resume.log", tmp_path / "resume.json"
    proc = mage_nb(
        "run", nb, "--no-progress", "--resume", directory.name, "--json", out, log=log, gate=gate
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(executions(log)) == ["tagged:0", "tagged:1"]
    record = read_json(out)
    assert record["params"] == {"day": "2026-11-25", "n": "3"}
    outputs = results(record)
    assert outputs["day_of"] == ("completed", "2026-11-25")  # restored
    for i in (0, 1):
        assert outputs[f"tagged:{i}"] == (
            "completed",
            {"item": i + 1, "day": "2026-11-25", "params": {"day": "2026-11-25", "n": "3"}},
        )
    assert json.loads(run_row(directory)["params"]) == {"day": "2026-11-25", "n": "3"}


UNPICKLABLE = (
    "import threading\nclass Point:\n    def __init__(self, x, y):\n        self.x, self.y = x, y",
    "%%loader point\nnote(context.uuid)\nPoint(1, 2)",
    "%%loader lock\nnote(context.uuid)\nthreading.Lock()",
    "%%loader numbers\nnote(context.uuid)\n(i * i for i in range(4))",
    "%%transformer use\n"
    "note(context.uuid)\n"
    "gate(context.uuid)\n"
    "{'sum': sum(numbers), 'locked': lock.locked(), 'point': [point.x, point.y],\n"
    " 'class': type(point).__name__, 'same_class': type(point) is Point}",
)


def test_unpicklable_outputs_are_unstored_and_run_again(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "nb.ipynb", *UNPICKLABLE)
    directory, record, again = first_then_resume(tmp_path, nb)
    # point (a class defined in the notebook) came back from the store; a lock and a
    # generator cannot be stored: they ran again, and so did what reads them.
    assert sorted(again) == ["lock", "numbers", "use"]
    assert results(record)["use"] == (
        "completed",
        {"sum": 14, "locked": False, "point": [1, 2], "class": "Point", "same_class": False},
    )
    warnings = record["warnings"]
    assert isinstance(warnings, list) and len(warnings) == 2, warnings
    for name in ("lock", "numbers"):
        [line] = [w for w in warnings if f"'{name}'" in w]
        assert "was not stored" in line and "runs again" in line
    # The run is complete in the store; the unstored outputs stay unstored (next resume
    # runs them again, with the same warning).
    stored = StoredRun(directory)
    assert stored.status == "completed" and "lock" in completed(directory)
    assert stored.get("lock") is None and "'lock'" in stored.warnings[0]
    point = stored.get("point")
    assert point is not None and (point.output.x, point.output.y) == (1, 2)


FRAMES = (
    "import decimal\n"
    "import numpy as np\n"
    "import pandas as pd\n"
    "import pyarrow as pa\n"
    "\n"
    "def make(name):\n"
    "    if name == 'typed':\n"
    "        return pd.DataFrame(\n"
    "            {\n"
    "                'i8': np.array([1, -2, 3], dtype='int8'),\n"
    "                'u16': np.array([1, 2, 3], dtype='uint16'),\n"
    "                'f32': np.array([0.5, np.nan, 2.0], dtype='float32'),\n"
    "                'b': [True, False, True],\n"
    "                'Int64': pd.array([1, None, 3], dtype='Int64'),\n"
    "                'boolean': pd.array([True, None, False], dtype='boolean'),\n"
    "                's': ['a', None, 'c'],\n"
    "                'cat': pd.Categorical(['x', 'y', 'x']),\n"
    "                'ts': pd.date_range('2026-01-01', periods=3, tz='Europe/Paris'),\n"
    "                'td': pd.to_timedelta([1, 2, 3], unit='s'),\n"
    "            },\n"
    "            index=pd.Index([10, 20, 30], name='key', dtype='int32'),\n"
    "        )\n"
    "    if name == 'multi':\n"
    "        frame = pd.DataFrame(\n"
    "            {'v': [1.5, 2.5]},\n"
    "            index=pd.MultiIndex.from_tuples([('a', 1), ('b', 2)], names=['k', 'n']),\n"
    "        )\n"
    "        frame.attrs['source'] = 'test'\n"
    "        return frame\n"
    "    if name == 'daily':\n"
    "        return pd.DataFrame({'v': [1, 2]}, index=pd.date_range('2026-01-01', periods=2))\n"
    "    if name == 'objects':\n"
    "        return pd.DataFrame(\n"
    "            {'lists': [[1, 2], [3]], 'strs': pd.Series(['a', 'b'], dtype=object),\n"
    "             'mixed': [1, 'one']}\n"
    "        )\n"
    "    if name == 'table':\n"
    "        return pa.table(\n"
    "            {\n"
    "                'i': pa.array([1, 2], pa.uint32()),\n"
    "                'd': pa.array(['a', 'b']).dictionary_encode(),\n"
    "                'dec': pa.array([decimal.Decimal('1.10'), None]),\n"
    "                'ts': pa.array([1, 2], pa.timestamp('ns', tz='UTC')),\n"
    "                'struct': pa.array([{'x': 1, 'y': 'a'}, {'x': 2, 'y': 'b'}]),\n"
    "            }\n"
    "        ).replace_schema_metadata({'origin': 'mage_nb test'})\n"
    "    if name == 'nested_table':\n"
    "        return pa.table(\n"
    "            {\n"
    "                'list': pa.array([[1], [2, 3]]),\n"
    "                'large_list': pa.array([[1], []], pa.large_list(pa.int64())),\n"
    "                'fixed': pa.array([[1, 2], [3, 4]], pa.list_(pa.int64(), 2)),\n"
    "                'map': pa.array([[('a', 1)], []], pa.map_(pa.string(), pa.int64())),\n"
    "                'date64': pa.array([0, 86_400_000], pa.date64()),\n"
    "                'time32': pa.array([1, 2], pa.time32('s')),\n"
    "            }\n"
    "        )\n"
    "\n"
    "def same(name, got):\n"
    "    expected = make(name)\n"
    "    assert type(got) is type(expected), (name, type(got))\n"
    "    if isinstance(expected, pd.DataFrame):\n"
    "        pd.testing.assert_frame_equal(got, expected, check_exact=True, check_freq=True)\n"
    "        assert got.attrs == expected.attrs, (name, got.attrs)\n"
    "    else:\n"
    "        assert got.schema.equals(expected.schema, check_metadata=True), (\n"
    "            name, str(got.schema))\n"
    "        assert got.equals(expected, check_metadata=True), name\n"
    "    return name",
)
FRAME_NAMES = ("typed", "multi", "daily", "objects", "table", "nested_table")


def test_dataframes_and_arrow_tables_round_trip_exactly(tmp_path: Path) -> None:
    blocks = [f"%%loader {name}\nnote(context.uuid)\nmake({name!r})" for name in FRAME_NAMES]
    check = (
        "%%transformer check\n"
        "note(context.uuid)\n"
        "gate(context.uuid)\n"
        f"[same(name, value) for name, value in zip({FRAME_NAMES!r}, [{', '.join(FRAME_NAMES)}])]"
    )
    nb = notebook(tmp_path / "nb.ipynb", *FRAMES, *blocks, check)
    directory, record, again = first_then_resume(tmp_path, nb)
    assert again == ["check"], again  # every frame came from the store, and equals
    assert results(record)["check"] == ("completed", list(FRAME_NAMES))
    assert record["warnings"] == []
    # What Parquet holds exactly went to Parquet files (typed, multi and both tables); a
    # frame with Python objects in a column or an index frequency was pickled.
    assert len(list((directory / "outputs").glob("*.parquet"))) == 4


def test_fanout_names_and_metadata_survive_a_resume(tmp_path: Path) -> None:
    nb = notebook(
        tmp_path / "nb.ipynb",
        "%%loader users --dynamic\n"
        "note(context.uuid)\n"
        "users = [{'id': i} for i in (3, 1, 2)]\n"
        "[users, [{'block_uuid': f\"user_{u['id']}\", 'tier': 'gold' if u['id'] == 1 else 'std'}\n"
        "         for u in users]]",
        "%%transformer greet\n"
        "note(context.uuid)\n"
        "if users['id'] == 2:\n"
        "    gate(context.uuid)\n"
        "{'id': users['id'], 'tier': context.metadata['tier']}",
        "%%transformer parts --dynamic\n"
        "note(context.uuid)\n"
        "[[greet['id'] * 10, greet['id'] * 10 + 1], [{'block_uuid': 'a'}, {'block_uuid': 'b'}]]",
        "%%transformer leaf\n"
        "note(context.uuid)\n"
        "if context.uuid.endswith(':b'):\n"
        "    gate(context.uuid)\n"
        "{'value': parts, 'uuid': context.uuid, 'tier': context.metadata['tier']}",
    )
    _, record, again = first_then_resume(tmp_path, nb)
    assert sorted(again) == [
        "greet:user_2",
        "leaf:user_1:b",
        "leaf:user_2:a",
        "leaf:user_2:b",
        "leaf:user_3:b",
        "parts:user_2",
    ]
    baseline = tmp_path / "baseline.json"
    assert mage_nb("run", nb, "--no-progress", "--no-store", "--json", baseline).returncode == 0
    assert list(results(record)) == list(results(read_json(baseline)))
    assert results(record) == results(read_json(baseline))
    assert results(record)["leaf:user_1:b"] == (
        "completed",
        {"value": 11, "uuid": "leaf:user_1:b", "tier": "gold"},
    )


def test_an_output_that_cannot_be_unpickled_any_more_runs_again(tmp_path: Path) -> None:
    """A class of a stored output changed incompatibly between the run and the resume: the
    chunk cannot be read, so its instances run again (with a warning), no traceback."""
    module = tmp_path / "things.py"
    module.write_text("class Thing:\n    def __init__(self, v):\n        self.v = v\n")
    nb = notebook(
        tmp_path / "nb.ipynb",
        "from things import Thing",  # `python -m` runs with the working directory on sys.path
        "%%loader thing\nnote(context.uuid)\nThing(7)",
        "%%transformer value\nnote(context.uuid)\ngate(context.uuid)\nthing.v",
    )
    gate = tmp_path / "gate"
    proc = mage_nb("run", nb, "--no-progress", gate=gate, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    directory = only_run(tmp_path / ".mage_nb" / "runs")
    module.write_text(
        "class Thing:\n"
        "    def __init__(self, v):\n"
        "        self.v = v\n"
        "    def __setstate__(self, state):\n"
        "        raise TypeError('Thing changed: old pickles are not valid')\n"
    )
    gate.touch()
    log, out = tmp_path / "resume.log", tmp_path / "resume.json"
    proc = mage_nb(
        "run", nb, "--no-progress", "--resume", directory.name, "--json", out,
        log=log, gate=gate, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert executions(log) == ["thing", "value"]
    record = read_json(out)
    assert results(record)["value"] == ("completed", 7)
    [warning] = record["warnings"]  # type: ignore[misc]
    assert "cannot be read (TypeError: Thing changed" in warning and "run again" in warning


STREAM = (
    "%%loader items --dynamic\nnote(context.uuid)\n(i * 10 for i in range(6))",
    "%%transformer work --reduce list\n"
    "note(context.uuid)\n"
    "if items == 30:\n"
    "    gate(context.uuid)\n"
    "items + 1",
    "%%exporter total\nnote(context.uuid)\nwork",
)


@pytest.mark.parametrize("kept", [False, True], ids=["outputs-not-kept", "outputs-kept"])
def test_a_completed_stream_resumes_with_all_its_items(tmp_path: Path, kept: bool) -> None:
    """A streaming dynamic block completed and one child failed. Its items are in the store
    only if the run kept its outputs (`--json`); if not, the stream and its children run
    again — never a resume that silently drops the children it cannot name."""
    nb = notebook(tmp_path / "nb.ipynb", *STREAM)
    first = ("--json", tmp_path / "first.json") if kept else ()
    directory, record, again = first_then_resume(tmp_path, nb, *first)
    assert results(record)["total"] == ("completed", [1, 11, 21, 31, 41, 51])
    assert len(record["block_runs"]) == 8  # type: ignore[arg-type]
    if kept:
        assert sorted(again) == ["total", "work:3"]
        assert record["warnings"] == []
    else:
        assert sorted(again) == ["items", "total", *(f"work:{i}" for i in range(6))]
        [warning] = record["warnings"]  # type: ignore[misc]
        assert "'items' was not stored" in warning and "streamed" in warning
    assert StoredRun(directory).status == "completed"
