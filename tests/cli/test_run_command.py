"""``mage-nb run`` as a user runs it: real subprocesses, real notebooks (SPEC §3.3, §8)."""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import CLI_ENV, run_cli, touch, write_notebook

import mage_nb
from mage_nb import PipelineRun, run_notebook

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "notebooks" / "dynamic_users.ipynb"
BLOCK_RUN_FIELDS = {
    "uuid",
    "block",
    "status",
    "lineage",
    "upstream",
    "attempts",
    "output",
    "error",
    "started_at",
    "ended_at",
}


def strict_json(path: Path) -> dict[str, Any]:
    """Parse a record, refusing the NaN/Infinity extensions that are not JSON."""

    def refuse(name: str) -> None:
        raise AssertionError(f"not JSON: {name}")

    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)
    return data


def utc(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert value.utcoffset() == dt.timedelta(0), text
    return value


def by_uuid(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["uuid"]: entry for entry in record["block_runs"]}


def summary_line(stdout: str, block: str) -> str:
    [line] = [line for line in stdout.splitlines() if line.strip().split()[:1] == [block]]
    return line


# -- exit 0 and the summary ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def example_by_module() -> subprocess.CompletedProcess[str]:
    """``python -m mage_nb run`` on the example notebook, progress bar on."""
    return run_cli("run", EXAMPLE)


@pytest.fixture(scope="module")
def example_by_script() -> subprocess.CompletedProcess[str]:
    """The ``mage-nb`` console script on the example notebook, with ``--no-progress``."""
    script = Path(sys.executable).parent / "mage-nb"
    if not script.exists():
        pytest.skip("the mage-nb console script is not installed next to this interpreter")
    return subprocess.run(
        [str(script), "run", str(EXAMPLE), "--no-progress"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        env=CLI_ENV,
        check=False,
    )


def test_example_notebook_exits_0_with_the_run_tree_summary_on_stdout(
    example_by_module: subprocess.CompletedProcess[str],
) -> None:
    done = example_by_module

    assert done.returncode == 0, done.stderr
    assert "completed" in done.stdout.splitlines()[0]
    assert re.search(r"\busers\s+1/1\b", done.stdout)
    for block in ("anonymize_user_data", "clean_column_names", "compute_engagement_score"):
        assert re.search(rf"\b{block}\s+3/3\b", summary_line(done.stdout, block))
    assert re.search(r"\bengagement_report\s+1/1\b", done.stdout)
    # Children of the fan-out are indented under it: the summary is a tree.
    indent = {}
    for block in ("users", "anonymize_user_data", "engagement_report"):
        line = summary_line(done.stdout, block)
        indent[block] = len(line) - len(line.lstrip())
    assert indent["anonymize_user_data"] > indent["users"] == indent["engagement_report"]


def test_progress_goes_to_stderr_and_never_to_stdout(
    example_by_module: subprocess.CompletedProcess[str],
) -> None:
    done = example_by_module

    assert "inst/s" in done.stderr or "it/s" in done.stderr
    assert "11/11" in done.stderr
    for bar_mark in ("\r", "inst/s", "it/s", "%|", "11/11"):
        assert bar_mark not in done.stdout


def test_no_progress_leaves_stderr_empty(
    example_by_script: subprocess.CompletedProcess[str],
) -> None:
    assert example_by_script.returncode == 0
    assert example_by_script.stderr == ""
    assert re.search(r"compute_engagement_score\s+3/3", example_by_script.stdout)


def test_python_dash_m_prints_the_same_summary_as_the_console_script(
    example_by_module: subprocess.CompletedProcess[str],
    example_by_script: subprocess.CompletedProcess[str],
) -> None:
    def normalised(text: str) -> str:
        return re.sub(r"run [\w-]+ (\w+) in [\d.]+s", r"run ID \1 in Ns", text)

    assert example_by_module.returncode == example_by_script.returncode == 0
    assert normalised(example_by_module.stdout) == normalised(example_by_script.stdout)
    assert normalised(example_by_module.stdout).startswith("run ID completed in Ns")


# -- exit 1: some instance failed ----------------------------------------------------------------


def test_one_failing_item_exits_1_the_rest_still_run_and_stdout_names_it(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        [
            "%%loader items --dynamic\n[1, 2, 3, 4]",
            "%%transformer double\nif items == 2:\n    raise ValueError(f'bad item {items}')\nitems * 2",
            "%%transformer after\ndouble + 1",
            "%%loader elsewhere\n'independent branch'",
        ],
    )
    record_path = tmp_path / "run.json"

    done = run_cli("run", nb, "--json", record_path)

    assert done.returncode == 1, done.stderr
    [failed_line] = [line for line in done.stdout.splitlines() if "double:1" in line]
    assert "ValueError: bad item 2" in failed_line
    record = strict_json(record_path)
    assert record["status"] == "failed"
    runs = by_uuid(record)
    statuses = {uuid: entry["status"] for uuid, entry in runs.items()}
    assert statuses == {
        "items": "completed",
        "double:0": "completed",
        "double:1": "failed",
        "double:2": "completed",
        "double:3": "completed",
        "after:0": "completed",
        "after:1": "upstream_failed",
        "after:2": "completed",
        "after:3": "completed",
        "elsewhere": "completed",
    }
    assert [runs[f"after:{i}"]["output"] for i in (0, 2, 3)] == [3, 7, 9]
    error = runs["double:1"]["error"]
    assert set(error) == {"type", "message", "traceback"}
    assert error["type"] == "ValueError"
    assert error["message"] == "bad item 2"
    assert "Traceback" in error["traceback"]
    assert "bad item" in error["traceback"]
    assert runs["double:1"]["output"] is None
    assert runs["double:1"]["attempts"] == 1
    never_ran = runs["after:1"]
    assert never_ran["attempts"] == 0
    assert "double:1" in never_ran["error"]["message"]


# -- exit 2: the notebook or the command is invalid ----------------------------------------------

INVALID = {
    "cycle": (
        ["%%transformer cyc_left\ncyc_right + 1", "%%transformer cyc_right\ncyc_left + 1"],
        [],
        ["cycle", "cyc_left", "cyc_right"],
    ),
    "duplicate_name": (
        ["%%loader twin\n1", "%%loader twin\n2"],
        [],
        ["twin", "cell 2", "cell 3"],
    ),
    "unknown_upstream": (
        ["%%transformer child --upstream ghost_block\n1"],
        [],
        ["child", "ghost_block"],
    ),
    "bad_header_option": (
        ["%%loader opts --bogus-flag\n1"],
        [],
        ["--bogus-flag", "cell 2"],
    ),
    "reduce_outside_fanout": (
        ["%%loader base\n[1, 2]", "%%transformer flat --reduce\nbase"],
        [],
        ["flat", "--reduce"],
    ),
    "unknown_reduce_strategy": (
        ["%%loader base --dynamic\n[1, 2]", "%%transformer folded --reduce no_such_reducer\nbase"],
        [],
        ["folded", "no_such_reducer"],
    ),
    "param_without_equals": (
        ["%%loader fine\n1"],
        ["--param", "just_a_key"],
        ["just_a_key", "KEY=VALUE"],
    ),
    "max_workers_zero": (
        ["%%loader fine\n1"],
        ["--max-workers", "0"],
        ["--max-workers"],
    ),
}


@pytest.fixture(scope="module")
def invalid_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[Path, Path, subprocess.CompletedProcess[str]]]:
    """Every invalid case, started at once (each is a separate CLI process) to save time."""
    started = {}
    for case, (cells, options, _) in INVALID.items():
        tmp = tmp_path_factory.mktemp(case)
        marker, record_path = tmp / "a-block-ran", tmp / "run.json"
        nb = write_notebook(tmp / "nb.ipynb", [f"%%loader side_effect\n{touch(marker)}", *cells])
        args = [sys.executable, "-m", "mage_nb", "run", str(nb), "--json", str(record_path)]
        args += options
        proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=CLI_ENV,
        )
        started[case] = (marker, record_path, args, proc)
    results = {}
    for case, (marker, record_path, args, proc) in started.items():
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        results[case] = (
            marker,
            record_path,
            subprocess.CompletedProcess(args, proc.returncode, out, err),
        )
    return results


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_notebook_or_command_exits_2_with_one_clear_line_and_runs_nothing(
    invalid_runs: dict[str, tuple[Path, Path, subprocess.CompletedProcess[str]]], case: str
) -> None:
    marker, record_path, done = invalid_runs[case]
    expected = INVALID[case][2]

    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "error" in lines[0]
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert "Traceback" not in done.stderr
    assert done.stdout.strip() == ""
    assert not record_path.exists()
    assert not marker.exists()


def test_a_missing_notebook_exits_2_naming_the_file(tmp_path: Path) -> None:
    record_path = tmp_path / "run.json"

    done = run_cli("run", tmp_path / "nowhere.ipynb", "--json", record_path)

    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "nowhere.ipynb" in lines[0]
    assert "Traceback" not in done.stderr
    assert not record_path.exists()


# -- parameters ----------------------------------------------------------------------------------


def test_params_reach_context_params_and_function_keywords_as_strings(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        [
            "%%loader from_context\ndict(context.params)",
            "%%loader function_style\n"
            "@loader\n"
            "def load(region, limit, **kwargs):\n"
            "    return {'region': region, 'limit': limit, 'expr': kwargs['expr'],\n"
            "            'types': sorted({type(v).__name__ for v in (region, limit)})}",
        ],
    )
    record_path = tmp_path / "run.json"

    done = run_cli(
        "run",
        nb,
        "--param",
        "region=eu-west",
        "--param",
        "limit=10",
        "--param",
        "expr=a=b",
        "--param",
        "empty=",
        "--json",
        record_path,
    )

    assert done.returncode == 0, done.stderr
    runs = by_uuid(strict_json(record_path))
    assert runs["from_context"]["output"] == {
        "region": "eu-west",
        "limit": "10",
        "expr": "a=b",
        "empty": "",
    }
    assert runs["function_style"]["output"] == {
        "region": "eu-west",
        "limit": "10",
        "expr": "a=b",
        "types": ["str"],
    }


# -- the --json record ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def record_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Any]:
    """One CLI run of a notebook whose outputs exercise every JSON conversion."""
    tmp = tmp_path_factory.mktemp("record")
    nb = write_notebook(
        tmp / "nb.ipynb",
        [
            "import datetime as dt\nimport time\nimport numpy as np\nimport pandas as pd\n"
            "import pyarrow as pa",
            "class Opaque:\n    def __repr__(self):\n        return '<Opaque 7>'",
            # Before its upstream in the notebook, and later items finish first.
            "%%transformer slow_child\ntime.sleep(0.01 * (11 - numbers))\nnumbers * 10",
            "%%loader numbers --dynamic\nlist(range(12))",
            "%%loader frame\n"
            "pd.DataFrame({'a': [1, 2], 'b': [0.5, float('nan')],\n"
            "              'when': pd.to_datetime(['2024-01-02', '2024-03-04'])})",
            "%%loader table\npa.table({'x': [1, 2], 'y': ['p', 'q']})",
            "%%loader scalars\n"
            "{'int64': np.int64(7), 'float64': np.float64(2.5), 'bool_': np.bool_(True),\n"
            " 'nan': float('nan'), 'np_nan': np.float64('nan'),\n"
            " 'when': dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc),\n"
            " 'day': dt.date(2024, 5, 6), 1: 'one', 'opaque': Opaque(),\n"
            " 'nested': [{'x': np.int32(1), 'y': (1, 2)}]}",
            "%%loader boom\nraise RuntimeError('kaboom')",
        ],
    )
    record_path = tmp / "run.json"
    before = dt.datetime.now(dt.UTC)
    done = run_cli("run", nb, "--json", record_path)
    after = dt.datetime.now(dt.UTC)
    assert done.returncode == 1, done.stderr
    return strict_json(record_path), (before, after)


def test_json_record_has_the_top_level_fields_of_the_spec(
    record_run: tuple[dict[str, Any], Any],
) -> None:
    record, _ = record_run

    assert {"run_id", "status", "block_runs", "warnings"} <= set(record)
    assert isinstance(record["run_id"], str) and record["run_id"]
    assert record["status"] == "failed"
    assert isinstance(record["block_runs"], list)
    assert record["warnings"] == []


def test_every_block_run_has_exactly_the_spec_fields(
    record_run: tuple[dict[str, Any], Any],
) -> None:
    record, _ = record_run

    assert len(record["block_runs"]) == 1 + 12 + 4
    for entry in record["block_runs"]:
        assert set(entry) == BLOCK_RUN_FIELDS, entry["uuid"]
        assert isinstance(entry["attempts"], int)
        assert isinstance(entry["upstream"], list)


def test_lineage_is_block_and_string_suffix_pairs_and_upstream_lists_names(
    record_run: tuple[dict[str, Any], Any],
) -> None:
    runs = by_uuid(record_run[0])

    assert runs["slow_child:3"]["lineage"] == [["numbers", "3"]]
    assert runs["slow_child:3"]["upstream"] == ["numbers"]
    assert runs["slow_child:3"]["block"] == "slow_child"
    assert runs["numbers"]["lineage"] == []
    assert runs["numbers"]["upstream"] == []
    for entry in record_run[0]["block_runs"]:
        for pair in entry["lineage"]:
            assert isinstance(pair, list) and len(pair) == 2
            assert all(isinstance(part, str) for part in pair)


def test_block_runs_are_in_topological_then_instance_order(
    record_run: tuple[dict[str, Any], Any],
) -> None:
    uuids = [entry["uuid"] for entry in record_run[0]["block_runs"]]
    blocks = [entry["block"] for entry in record_run[0]["block_runs"]]

    assert uuids.index("numbers") < uuids.index("slow_child:0")
    # Item index order (0, 1, 2, ..., 10, 11), not finishing order nor string order.
    assert [u for u in uuids if u.startswith("slow_child:")] == [
        f"slow_child:{i}" for i in range(12)
    ]
    # One block's instances are listed together.
    firsts = [b for i, b in enumerate(blocks) if i == 0 or blocks[i - 1] != b]
    assert len(firsts) == len(set(firsts))
    assert set(blocks) == {"numbers", "slow_child", "frame", "table", "scalars", "boom"}


def test_outputs_are_converted_to_json(record_run: tuple[dict[str, Any], Any]) -> None:
    runs = by_uuid(record_run[0])

    assert runs["numbers"]["output"] == list(range(12))  # a dynamic block: its item values
    assert runs["slow_child:11"]["output"] == 110
    assert runs["frame"]["output"] == [
        {"a": 1, "b": 0.5, "when": "2024-01-02T00:00:00"},
        {"a": 2, "b": None, "when": "2024-03-04T00:00:00"},
    ]
    assert runs["table"]["output"] == [{"x": 1, "y": "p"}, {"x": 2, "y": "q"}]
    scalars = runs["scalars"]["output"]
    assert scalars == {
        "int64": 7,
        "float64": 2.5,
        "bool_": True,
        "nan": None,
        "np_nan": None,
        "when": "2024-05-06T07:08:09+00:00",
        "day": "2024-05-06",
        "1": "one",
        "opaque": "<Opaque 7>",
        "nested": [{"x": 1, "y": [1, 2]}],
    }
    assert type(scalars["int64"]) is int
    assert type(scalars["bool_"]) is bool


def test_a_failed_instance_records_type_message_and_traceback(
    record_run: tuple[dict[str, Any], Any],
) -> None:
    runs = by_uuid(record_run[0])

    boom = runs["boom"]
    assert boom["status"] == "failed"
    assert boom["output"] is None
    assert set(boom["error"]) == {"type", "message", "traceback"}
    assert boom["error"]["type"] == "RuntimeError"
    assert boom["error"]["message"] == "kaboom"
    assert "RuntimeError: kaboom" in boom["error"]["traceback"]
    assert all(
        entry["error"] is None for entry in record_run[0]["block_runs"] if entry["uuid"] != "boom"
    )


def test_times_are_iso_8601_utc_within_the_run(record_run: tuple[dict[str, Any], Any]) -> None:
    record, (before, after) = record_run

    for entry in record["block_runs"]:
        started, ended = utc(entry["started_at"]), utc(entry["ended_at"])
        assert before <= started <= ended <= after, entry["uuid"]


def test_max_workers_1_runs_instances_one_at_a_time(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        [
            "import time",
            "%%loader items --dynamic\n[0, 1, 2, 3]",
            "%%transformer nap\ntime.sleep(0.1)\nitems",
        ],
    )
    record_path = tmp_path / "run.json"

    done = run_cli("run", nb, "--max-workers", "1", "--json", record_path)

    assert done.returncode == 0, done.stderr
    naps = [e for e in strict_json(record_path)["block_runs"] if e["block"] == "nap"]
    assert [e["output"] for e in naps] == [0, 1, 2, 3]
    spans = sorted((utc(e["started_at"]), utc(e["ended_at"])) for e in naps)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start  # never two at once


# -- Ctrl-C ---------------------------------------------------------------------------------------


def test_ctrl_c_cancels_the_run_writes_the_record_and_exits_1_promptly(tmp_path: Path) -> None:
    started = tmp_path / "first-instance-started"
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        [
            "import pathlib\nimport time",
            "%%loader items --dynamic\nlist(range(200))",
            f"%%transformer work\npathlib.Path({str(started)!r}).touch()\ntime.sleep(0.05)\nitems",
        ],
    )
    record_path = tmp_path / "run.json"
    command = [sys.executable, "-m", "mage_nb", "run", str(nb), "--max-workers", "2"]
    out, err = (tmp_path / "stdout.txt").open("w"), (tmp_path / "stderr.txt").open("w")
    with out, err:
        proc = subprocess.Popen(
            [*command, "--json", str(record_path)],
            stdout=out,
            stderr=err,
            env=CLI_ENV,
        )
        try:
            deadline = time.monotonic() + 30
            while not started.exists():
                assert proc.poll() is None, "the run ended before any instance started"
                assert time.monotonic() < deadline, "no instance started within 30 s"
                time.sleep(0.02)
            time.sleep(1.0)
            proc.send_signal(signal.SIGINT)
            interrupted = time.monotonic()
            returncode = proc.wait(timeout=15)
            took = time.monotonic() - interrupted
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    assert returncode == 1, (tmp_path / "stderr.txt").read_text()
    assert took < 5
    record = strict_json(record_path)
    assert record["status"] == "cancelled"
    work = [e for e in record["block_runs"] if e["block"] == "work"]
    counts = collections.Counter(e["status"] for e in work)
    assert set(counts) == {"completed", "cancelled"}
    assert 0 < counts["completed"] < 200
    assert counts["completed"] + counts["cancelled"] == len(work) == 200
    assert all(e["output"] is None for e in work if e["status"] == "cancelled")
    assert "cancelled" in (tmp_path / "stdout.txt").read_text(encoding="utf-8")


# -- the Python API --------------------------------------------------------------------------------


def test_run_notebook_returns_a_pipeline_run_with_block_runs_by_uuid(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        [
            "%%loader items --dynamic\nlist(range(int(context.params['n'])))",
            "%%transformer inverse\n1 / items",
        ],
    )

    run = mage_nb.run_notebook(nb, params={"n": "3"}, executor="sync")

    assert isinstance(run, PipelineRun)
    assert run.status == "failed"
    assert list(run.block_runs) == ["items", "inverse:0", "inverse:1", "inverse:2"]
    assert run.block_runs["items"].output == [0, 1, 2]
    assert [run.block_runs[f"inverse:{i}"].output for i in (1, 2)] == [1.0, 0.5]
    zero = run.block_runs["inverse:0"]
    assert zero.status == "failed"
    assert zero.error is not None
    assert zero.error.type == "ZeroDivisionError"
    assert "division by zero" in zero.error.message
    assert run.block_runs["inverse:2"].error is None

    record = json.loads(run.to_json())
    assert {"run_id", "status", "block_runs", "warnings"} <= set(record)
    assert record["status"] == "failed"
    assert [e["uuid"] for e in record["block_runs"]] == list(run.block_runs)
    for entry in record["block_runs"]:
        assert set(entry) == BLOCK_RUN_FIELDS
    assert by_uuid(record)["inverse:0"]["error"]["type"] == "ZeroDivisionError"
    assert by_uuid(record)["inverse:1"]["lineage"] == [["items", "1"]]


def test_run_notebook_passes_api_params_through_unchanged(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "nb.ipynb", ["%%loader echo\ncontext.params['limit'] + 1"])

    run = run_notebook(nb, params={"limit": 41}, executor="sync")

    assert run.status == "completed"
    assert run.block_runs["echo"].output == 42
