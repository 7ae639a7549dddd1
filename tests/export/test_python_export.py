"""``mage-nb export --to python``: the folder runs like its notebook (SPEC §7), in subprocesses.

Every example notebook is exported, then run both ways with ``mage-nb run --json``; the run
records must agree on everything but timings and run ids (uuids, blocks, statuses, lineage,
upstream, attempts, outputs, error types and messages). The bad inputs each show their error
and that nothing else was lost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from helpers import write_notebook

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
EXAMPLES = ["dynamic_users", "fractal_fanout", "failure_isolation", "dynamic_sql", "stream_large"]
ENV = {**os.environ, "PYTHONUTF8": "1", "PYTHONIOENCODING": "utf-8"}
SCRIPT = Path(sys.executable).parent / "mage-nb"


def run(
    *args: object, script: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The ``mage-nb`` console script (or ``python -m mage_nb``), output as UTF-8 text."""
    if script and not SCRIPT.exists():
        pytest.skip("the mage-nb console script is not installed next to this interpreter")
    command = [str(SCRIPT)] if script else [sys.executable, "-m", "mage_nb"]
    return subprocess.run(
        [*command, *map(str, args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        env=ENV,
        check=False,
    )


def example(name: str, tmp_path: Path) -> Path:
    """An example notebook; ``stream_large`` made small (40 items of 1 kB, not 2,000 of 100 kB)
    so that its full run record stays small."""
    path = NOTEBOOKS / f"{name}.ipynb"
    if name != "stream_large":
        return path
    text = path.read_text(encoding="utf-8")
    for big, small in (("range(2_000)", "range(40)"), ("* 25_000", "* 250")):
        assert big in text, f"stream_large.ipynb no longer has {big!r}: update this test"
        text = text.replace(big, small)
    small_copy = tmp_path / "stream_large.ipynb"
    small_copy.write_text(text, encoding="utf-8")
    return small_copy


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """A run record without what differs between two runs of one pipeline (ids, times,
    tracebacks, whose file names and line numbers say where the code was read from)."""
    runs = []
    for entry in record["block_runs"]:
        entry = {k: v for k, v in entry.items() if k not in ("started_at", "ended_at")}
        if entry["error"] is not None:
            entry["error"] = {k: entry["error"][k] for k in ("type", "message")}
        runs.append(entry)
    return {"status": record["status"], "block_runs": runs, "warnings": record["warnings"]}


def run_record(
    target: Path, out: Path, *args: object, script: bool = True
) -> tuple[int, dict[str, Any]]:
    done = run("run", target, "--json", out, "--no-progress", *args, script=script)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(out.read_text(encoding="utf-8"))


def export(notebook: Path, out_dir: Path, *args: object) -> subprocess.CompletedProcess[str]:
    done = run("export", notebook, "--to", "python", out_dir, *args)
    assert done.returncode == 0, done.stderr
    return done


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> content)."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


# -- the round trip ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", EXAMPLES)
def test_the_exported_folder_runs_like_its_notebook(name: str, tmp_path: Path) -> None:
    notebook = example(name, tmp_path)
    out = tmp_path / f"{name}_py"
    export(notebook, out)

    nb_code, nb_record = run_record(notebook, tmp_path / "notebook.json")
    folder_code, folder_record = run_record(out, tmp_path / "folder.json")
    module_code, module_record = run_record(out, tmp_path / "module.json", script=False)

    assert nb_record["block_runs"], "the notebook ran no instance"
    assert folder_code == module_code == nb_code
    assert comparable(folder_record) == comparable(nb_record)
    assert comparable(module_record) == comparable(nb_record)
    assert folder_record["run_id"] != nb_record["run_id"]


def test_failures_stay_failures_with_the_same_errors_and_attempts(tmp_path: Path) -> None:
    out = tmp_path / "failures"
    export(NOTEBOOKS / "failure_isolation.ipynb", out)

    code, record = run_record(out, tmp_path / "run.json")

    assert code == 1
    runs = {r["uuid"]: r for r in record["block_runs"]}
    assert runs["amount_in_eur:A-3"]["status"] == "failed"
    assert runs["amount_in_eur:A-3"]["error"]["type"] == "ValueError"
    assert runs["exchange_rate:A-3"]["attempts"] == 2  # retried once, as in the notebook
    assert runs["flagged:A-3"]["status"] == "upstream_failed"
    assert runs["daily_report"]["status"] == "completed"  # --reduce-policy partial


def test_graph_draws_the_folder_as_it_draws_the_notebook(tmp_path: Path) -> None:
    out = tmp_path / "users"
    export(NOTEBOOKS / "dynamic_users.ipynb", out)

    from_notebook = run("graph", NOTEBOOKS / "dynamic_users.ipynb")
    from_folder = run("graph", out)

    assert from_folder.returncode == 0, from_folder.stderr
    assert from_folder.stdout == from_notebook.stdout
    assert "users" in from_folder.stdout


def test_run_options_work_on_a_folder(tmp_path: Path) -> None:
    notebook = write_notebook(
        tmp_path / "params.ipynb",
        [
            "import os\nSCALE = 10",
            "%%loader main_pid\nos.getpid()",
            "%%loader n --dynamic\nlist(range(int(context.params['count'])))",
            "%%transformer scaled --executor processes\n(n * SCALE, os.getpid())",
            "%%transformer tens --reduce sum\nscaled[0]",
            "%%exporter total\ntens",
        ],
    )
    out = tmp_path / "params_py"
    export(notebook, out)

    code, record = run_record(
        out, tmp_path / "run.json", "--param", "count=4", "--max-workers", "2"
    )
    done = run(
        "run", out, "--param", "count=3", "--tree", "--no-progress", "--executor", "processes"
    )

    assert code == 0
    runs = {r["uuid"]: r for r in record["block_runs"]}
    assert runs["total"]["output"] == 60
    # --executor processes: the prelude (SCALE) was rebuilt from prelude.py in other processes
    assert runs["main_pid"]["output"] not in {runs[f"scaled:{i}"]["output"][1] for i in range(4)}
    assert done.returncode == 0, done.stderr
    assert "scaled:2" in done.stdout  # --tree


# -- what the folder holds ---------------------------------------------------------------------
def test_the_folder_holds_pipeline_toml_prelude_block_files_and_a_readme(tmp_path: Path) -> None:
    out = tmp_path / "sql_py"
    export(NOTEBOOKS / "dynamic_sql.ipynb", out)

    assert sorted(tree(out)) == sorted(
        [
            "README.md",
            "pipeline.toml",
            "prelude.py",
            "blocks/users.py",
            "blocks/user_orders.sql",
            "blocks/order_total.py",
            "blocks/order_totals.py",
            "blocks/user_summary.py",
            "blocks/summaries.py",
            "blocks/ranking.sql",
        ]
    )
    pipeline = tomllib.loads((out / "pipeline.toml").read_text(encoding="utf-8"))
    assert pipeline["name"] == "dynamic_sql"
    assert pipeline["source"] == "dynamic_sql.ipynb"
    assert pipeline["prelude"] == "prelude.py"
    blocks = {b["name"]: b for b in pipeline["blocks"]}
    assert list(blocks) == [
        "users",
        "user_orders",
        "order_total",
        "order_totals",
        "user_summary",
        "summaries",
        "ranking",
    ]  # notebook order
    assert blocks["user_orders"] == {
        "name": "user_orders",
        "kind": "sql",
        "file": "blocks/user_orders.sql",
        "header": "%%block sql user_orders --dynamic",
        "origin": "cell 7",
        "upstream": ["users"],
        "dynamic": True,
    }
    assert blocks["order_totals"]["reduce"] == "list"
    assert blocks["order_totals"]["reduce_policy"] == "all"
    assert blocks["user_summary"]["upstream"] == ["users", "order_totals"]


def test_block_files_keep_the_body_verbatim_under_a_comment_saying_how_it_is_read(
    tmp_path: Path,
) -> None:
    notebook = write_notebook(
        tmp_path / "styles.ipynb",
        [
            "%%loader users --dynamic\n[1, 2]",
            "%%transformer double\n@transformer\ndef double(users, **kwargs):\n    return users * 2",
            "%%exporter total --reduce sum\ndouble  # one per user",
            "%%block sql query\nselect 42 as answer  -- not {{ users }}",
        ],
    )
    out = tmp_path / "styles_py"
    export(notebook, out)

    users = (out / "blocks/users.py").read_text(encoding="utf-8")
    double = (out / "blocks/double.py").read_text(encoding="utf-8")
    total = (out / "blocks/total.py").read_text(encoding="utf-8")
    query = (out / "blocks/query.sql").read_text(encoding="utf-8")

    assert users.endswith("\n\n[1, 2]\n")
    assert users.startswith("# Block `users` (loader)")
    assert "Upstream: none." in users and "Expression style" in users
    assert double.endswith("@transformer\ndef double(users, **kwargs):\n    return users * 2\n")
    assert "users: one item of its output" in double
    assert "Function style: `double` is called with the upstream outputs" in double
    assert "double: the output of its instance for the same item" in total
    assert total.endswith("\ndouble  # one per user\n")
    assert query.startswith("-- Block `query` (sql)")
    assert query.endswith("\nselect 42 as answer  -- not {{ users }}\n")


def test_prelude_py_holds_the_plain_cells_with_their_numbers_skip_left_out_magics_dropped(
    tmp_path: Path,
) -> None:
    notebook = write_notebook(
        tmp_path / "prelude.ipynb",
        [
            "# md: a title",
            "%load_ext mage_nb\nimport math",
            ("LEFT_OUT = 1", ["skip"]),
            "%time X = 2\nbanner = !echo exported",
            "%%capture\nprint('a cell magic')",
            "%%loader value\n(math.floor(2.5), X, banner)",
        ],
    )
    out = tmp_path / "prelude_py"
    done = export(notebook, out)
    prelude = (out / "prelude.py").read_text(encoding="utf-8")

    assert "# cell 2\n# dropped: %load_ext mage_nb" in prelude
    assert "import math" in prelude
    assert "LEFT_OUT" not in prelude and "# cell 3" not in prelude
    assert "# cell 4\n# dropped: %time X = 2  (IPython magic, needs a kernel)" in prelude
    assert "banner = get_ipython().getoutput('echo exported')" in prelude
    assert "# cell 5\n# dropped: %%capture" in prelude and "# print('a cell magic')" in prelude
    # The magics are reported when the export drops them (a headless run of the notebook
    # warns about them at every run instead).
    assert "cell 4: dropped %time" in done.stderr and "cell 5: dropped %%capture" in done.stderr
    assert "load_ext" not in done.stderr

    nb_code, nb_record = run_record(notebook, tmp_path / "nb.json")
    code, record = run_record(out, tmp_path / "folder.json")
    # `%time X = 2` is skipped in both, so X is undefined in both: the same failure.
    assert code == nb_code == 1
    assert comparable(record)["block_runs"] == comparable(nb_record)["block_runs"]
    assert "NameError" in json.dumps(record["block_runs"][0]["error"])
    assert record["warnings"] == []


def test_the_readme_gives_the_two_commands_that_run_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "users_py"
    export(NOTEBOOKS / "dynamic_users.ipynb", out)
    readme = (out / "README.md").read_text(encoding="utf-8")

    assert "mage-nb run users_py" in readme
    assert "python -m mage_nb run users_py" in readme
    # ... and they work, from the folder that contains it
    for command in (["mage-nb"], [sys.executable, "-m", "mage_nb"]):
        if command == ["mage-nb"]:
            command = [str(SCRIPT)]
        done = subprocess.run(
            [*command, "run", "users_py", "--no-progress"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=ENV,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr


# -- maintaining the folder by hand ------------------------------------------------------------
def test_a_block_file_edited_by_hand_changes_what_the_run_outputs(tmp_path: Path) -> None:
    out = tmp_path / "users_py"
    export(NOTEBOOKS / "dynamic_users.ipynb", out)
    report = out / "blocks/engagement_report.py"
    text = report.read_text(encoding="utf-8")
    assert '"top_user": ranked[0]["id"]' in text
    report.write_text(
        text.replace('"top_user": ranked[0]["id"]', '"top_user": ranked[-1]["id"], "edited": True'),
        encoding="utf-8",
    )

    code, record = run_record(out, tmp_path / "run.json")

    assert code == 0
    output = {r["uuid"]: r["output"] for r in record["block_runs"]}["engagement_report"]
    assert output["edited"] is True
    assert output["top_user"] == 2  # the lowest score now, not the highest (3)


def test_an_option_changed_in_the_header_takes_effect(tmp_path: Path) -> None:
    out = tmp_path / "users_py"
    export(NOTEBOOKS / "dynamic_users.ipynb", out)
    toml = out / "pipeline.toml"
    text = toml.read_text(encoding="utf-8")
    text = text.replace(
        'header = "%%transformer compute_engagement_score --reduce"\n',
        'header = "%%transformer compute_engagement_score --reduce count"\n',
    ).replace('reduce = "list"', 'reduce = "count"')
    toml.write_text(text, encoding="utf-8")
    report = out / "blocks/engagement_report.py"
    body = report.read_text(encoding="utf-8").rsplit("\n\n", 1)[0]
    report.write_text(body + "\n\ncompute_engagement_score\n", encoding="utf-8")

    code, record = run_record(out, tmp_path / "run.json")

    assert code == 0
    assert record["block_runs"][-1]["output"] == 3


def test_an_error_in_an_edited_block_points_at_the_file_line(tmp_path: Path) -> None:
    out = tmp_path / "users_py"
    export(NOTEBOOKS / "dynamic_users.ipynb", out)
    block = out / "blocks/clean_column_names.py"
    block.write_text(block.read_text(encoding="utf-8") + "1 / 0\n", encoding="utf-8")
    line = len(block.read_text(encoding="utf-8").splitlines())

    code, record = run_record(out, tmp_path / "run.json")

    assert code == 1
    error = next(r["error"] for r in record["block_runs"] if r["status"] == "failed")
    assert error["type"] == "ZeroDivisionError"
    assert f"line {line}," in error["traceback"] and "1 / 0" in error["traceback"]


def test_a_new_read_is_refused_until_the_upstream_key_lists_it(tmp_path: Path) -> None:
    out = tmp_path / "users_py"
    export(NOTEBOOKS / "dynamic_users.ipynb", out)
    report = out / "blocks/engagement_report.py"
    report.write_text(
        report.read_text(encoding="utf-8") + "len(compute_engagement_score), users\n",
        encoding="utf-8",
    )

    refused = run("run", out, "--no-progress")
    toml = out / "pipeline.toml"
    toml.write_text(
        toml.read_text(encoding="utf-8").replace(
            'upstream = ["compute_engagement_score"]',
            'upstream = ["compute_engagement_score", "users"]',
        ),
        encoding="utf-8",
    )
    code, record = run_record(out, tmp_path / "run.json")

    assert refused.returncode == 2
    assert "block 'engagement_report'" in refused.stderr
    assert 'upstream = ["compute_engagement_score"]` disagrees' in refused.stderr
    assert '["compute_engagement_score", "users"]' in refused.stderr
    assert code == 0
    # `users` is a fan-out now read at the top level: one report per user
    assert [r["uuid"] for r in record["block_runs"]][-3:] == [
        f"engagement_report:for_user_{i}" for i in (1, 2, 3)
    ]


def test_an_option_key_that_disagrees_with_the_header_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "users_py"
    export(NOTEBOOKS / "dynamic_users.ipynb", out)
    toml = out / "pipeline.toml"
    toml.write_text(
        toml.read_text(encoding="utf-8").replace(
            'origin = "cell 7"\n', 'origin = "cell 7"\nretries = 3\n'
        ),
        encoding="utf-8",
    )

    done = run("run", out, "--no-progress")

    assert done.returncode == 2
    assert "block 'anonymize_user_data'" in done.stderr
    assert (
        "`retries = 3` disagrees with its header '%%transformer anonymize_user_data'" in done.stderr
    )
    assert "--retries" in done.stderr
    assert "Traceback" not in done.stderr


# -- bad inputs ---------------------------------------------------------------------------------
def test_a_non_empty_out_dir_is_refused_and_left_untouched(tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    (out / "prelude.py").write_text("# my own prelude", encoding="utf-8")
    before = tree(out)

    done = run("export", NOTEBOOKS / "dynamic_users.ipynb", "--to", "python", out)

    assert done.returncode == 2
    assert f"{out} exists and is not empty" in done.stderr and "--force" in done.stderr
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no staging folder left
    assert done.stdout == ""


def test_force_writes_into_a_non_empty_out_dir_and_keeps_other_files(tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    (out / "prelude.py").write_text("# an old prelude", encoding="utf-8")

    export(NOTEBOOKS / "dynamic_users.ipynb", out, "--force")
    code, _ = run_record(out, tmp_path / "run.json")

    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert "import hashlib" in (out / "prelude.py").read_text(encoding="utf-8")
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json", "taken"]


def test_an_empty_out_dir_is_used_and_missing_parents_are_created(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    export(NOTEBOOKS / "dynamic_users.ipynb", tmp_path / "empty")
    export(NOTEBOOKS / "dynamic_users.ipynb", tmp_path / "a" / "b" / "c")

    assert (tmp_path / "empty" / "pipeline.toml").is_file()
    assert (tmp_path / "a" / "b" / "c" / "pipeline.toml").is_file()


def test_a_missing_notebook_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    done = run("export", tmp_path / "nope.ipynb", "--to", "python", tmp_path / "out")

    assert done.returncode == 2
    assert "no such notebook" in done.stderr and "nope.ipynb" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_invalid_header_exits_2_names_the_cell_and_writes_nothing(tmp_path: Path) -> None:
    notebook = write_notebook(
        tmp_path / "bad.ipynb", ["import math", "%%loader users --retries many\n[1]"]
    )

    done = run("export", notebook, "--to", "python", tmp_path / "out")

    assert done.returncode == 2
    assert "cell 2" in done.stderr and "--retries" in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.ipynb"]


def test_a_cycle_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    notebook = write_notebook(
        tmp_path / "cycle.ipynb", ["%%transformer a\nb + 1", "%%transformer b\na + 1"]
    )

    done = run("export", notebook, "--to", "python", tmp_path / "out")

    assert done.returncode == 2
    assert "cycle" in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_plain_cell_that_does_not_compile_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    notebook = write_notebook(tmp_path / "syntax.ipynb", ["x = (", "%%loader one\n1"])

    done = run("export", notebook, "--to", "python", tmp_path / "out")

    assert done.returncode == 2
    assert "cell 1 (prelude) does not compile" in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_missing_block_file_is_a_clear_error_naming_it(tmp_path: Path) -> None:
    out = tmp_path / "users_py"
    export(NOTEBOOKS / "dynamic_users.ipynb", out)
    (out / "blocks/clean_column_names.py").unlink()
    before = tree(out)

    for script in (True, False):
        done = run("run", out, "--no-progress", script=script)
        assert done.returncode == 2
        assert "pipeline.toml: block 'clean_column_names'" in done.stderr
        assert "blocks/clean_column_names.py does not exist" in done.stderr
        assert "Traceback" not in done.stderr
    assert tree(out) == before


def test_a_folder_without_pipeline_toml_is_not_a_pipeline(tmp_path: Path) -> None:
    done = run("run", tmp_path, "--no-progress")

    assert done.returncode == 2
    assert "has no pipeline.toml" in done.stderr
    assert "mage-nb export NOTEBOOK --to python" in done.stderr


def test_a_bad_header_in_pipeline_toml_names_the_block_and_the_header(tmp_path: Path) -> None:
    out = tmp_path / "users_py"
    export(NOTEBOOKS / "dynamic_users.ipynb", out)
    toml = out / "pipeline.toml"
    toml.write_text(
        toml.read_text(encoding="utf-8").replace(
            '"%%block loader users --dynamic"', '"%%block loader users --dynamic --window 0"'
        ),
        encoding="utf-8",
    )

    done = run("run", out, "--no-progress")

    assert done.returncode == 2
    assert "pipeline.toml: block 'users': header" in done.stderr and "--window" in done.stderr


def test_a_raising_prelude_names_prelude_py_and_its_line(tmp_path: Path) -> None:
    out = tmp_path / "users_py"
    export(NOTEBOOKS / "dynamic_users.ipynb", out)
    prelude = out / "prelude.py"
    prelude.write_text(
        prelude.read_text(encoding="utf-8") + "raise RuntimeError('no config')\n",
        encoding="utf-8",
    )
    line = len(prelude.read_text(encoding="utf-8").splitlines())

    done = run("run", out, "--no-progress")

    assert done.returncode == 2
    assert "prelude.py raised RuntimeError: no config; nothing ran" in done.stderr
    assert f"line {line}" in done.stderr


def test_exporting_to_mage_before_it_exists_or_to_an_unknown_target_exits_2(
    tmp_path: Path,
) -> None:
    bad_target = run("export", NOTEBOOKS / "dynamic_users.ipynb", "--to", "zip", tmp_path / "o")
    missing_to = run("export", NOTEBOOKS / "dynamic_users.ipynb", tmp_path / "o")

    assert bad_target.returncode == 2 and "--to" in bad_target.stderr
    assert missing_to.returncode == 2 and "--to" in missing_to.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_exported_folder_exports_again_to_the_same_files(tmp_path: Path) -> None:
    first = tmp_path / "first"
    export(NOTEBOOKS / "fractal_fanout.ipynb", first)
    second = tmp_path / "second"
    export(first, second)

    a, b = tree(first), tree(second)
    assert sorted(a) == sorted(b)
    for name in a:
        if name.startswith("blocks/"):
            # the same body under one comment (which names the file it came from this time)
            assert a[name].split(b"\n\n", 1)[1] == b[name].split(b"\n\n", 1)[1], name
            assert b[name].count(b"exported by mage_nb") == 1
    assert comparable(run_record(second, tmp_path / "b.json")[1]) == comparable(
        run_record(first, tmp_path / "a.json")[1]
    )


@pytest.fixture(autouse=True)
def _no_stray_files(tmp_path: Path) -> Any:
    """No test leaves a staging folder behind."""
    yield
    if tmp_path.exists():
        stray = list(tmp_path.rglob(".*.export-*"))
        assert stray == [], stray


def test_a_block_added_by_hand_runs(tmp_path: Path) -> None:
    out = tmp_path / "users_py"
    export(NOTEBOOKS / "dynamic_users.ipynb", out)
    (out / "blocks/top_score.py").write_text(
        "# a block written by hand\nmax(row['score'] for row in engagement_report['scores'])\n",
        encoding="utf-8",
    )
    with (out / "pipeline.toml").open("a", encoding="utf-8") as toml:
        toml.write('\n[[blocks]]\nheader = "%%exporter top_score"\nfile = "blocks/top_score.py"\n')

    code, record = run_record(out, tmp_path / "run.json")

    assert code == 0
    assert record["block_runs"][-1]["uuid"] == "top_score"
    assert record["block_runs"][-1]["output"] == 69.17
    assert record["block_runs"][-1]["upstream"] == ["engagement_report"]
