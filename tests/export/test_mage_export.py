"""``export --to mage``: Mage 0.9.80 itself runs the exported project (SPEC §7).

Each exported project is run through Mage's own block-run scheduler (tests/mage_driver.py,
in the Mage virtualenv) and every block run's output is compared with the notebook's own
run (``mage_nb.run_notebook``): blocks outside fan-outs by NAME, dynamic children in item
order (and by name where Mage names them as we do). Then one test per construct that Mage
cannot express: the refusal's message and that nothing was written; or the warning's text.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import write_notebook
from mage_support import drive, failures, pair_instances, same

import mage_nb
from mage_nb.engine.code import analyse
from mage_nb.engine.fanout import make_suffixes, normalise
from mage_nb.export import ExportError, export_notebook
from mage_nb.export import mage_helpers as helpers
from mage_nb.export.rewrite import mage_function, sql_tables_to_mage
from mage_nb.notebook import load_notebook

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
SCRIPT = Path(sys.executable).parent / "mage-nb"

pytestmark = pytest.mark.timeout(1800)

# Everything Mage can express, in one notebook: a named fan-out (names sanitised and
# de-duplicated), metadata and params through `context`, a static upstream next to the
# fan-out, a function-style block with a @test, list outputs reduced, a block reading a
# reduce and a fan-out member, a DataFrame fanned out row by row under --max-children,
# retries with context.attempt, a generator fan-out (exported with a warning), SQL on an
# upstream DataFrame and on a reduce (a block NAME that is a SQL keyword), and outputs Mage would otherwise split (None, [], [x], tuples).
FEATURES = [
    "%load_ext mage_nb\nimport pandas as pd\n",
    "def label(text):\n    return f'#{text}'\n",
    """%%block loader regions --dynamic
names = ["north", "north", "east west"]
[names, [{"block_uuid": n, "zone": z} for z, n in enumerate(names, start=1)]]""",
    """%%loader settings
{"factor": 10}""",
    """%%transformer region_info
# metadata and params through context
{
    "region": regions,
    "zone": context.metadata["zone"],
    "day": context.params["day"],
    "label": label(regions),  # a prelude helper
}""",
    """%%transformer scaled --reduce
@transformer
def scale(region_info, settings, *args, **kwargs):
    return [region_info["zone"] * settings["factor"], kwargs.get("day")]

@test
def two_values(output):
    assert len(output) == 2""",
    """%%transformer share
round(region_info["zone"] / sum(x for x in scaled if isinstance(x, int)), 4)""",
    """%%exporter summary
{"scaled": scaled, "count": len(scaled), "nothing": None, "empty": [], "one": [5], "pair": (1, "a")}""",
    """%%transformer row --reduce
{"region": regions, "zone_no": context.metadata["zone"]}""",
    """%%block sql ranked
select region, zone_no from row order by zone_no desc""",
    """%%loader frame
pd.DataFrame({"id": [1, 2, 3], "score": [10.5, 20.0, 12.25]})""",
    """%%block sql totals
select count(*) as n, sum(f.score) as total
from frame as f""",
    """%%transformer report
{"n": int(totals["n"][0]), "total": float(totals["total"][0])}""",
    """%%loader ids --dynamic --max-children 2 --on-overflow truncate
pd.DataFrame({"id": [7, 8, 9]})""",
    """%%transformer flaky --retries 2
if context.attempt < 2:
    raise ConnectionError("first try fails")
{"id": ids["id"], "attempt": context.attempt, "index": context.index}""",
    """%%block loader letters --dynamic
(c for c in "abc")""",
    """%%block custom shout
letters.upper() * 2""",
    """%%transformer none_at_all
x = 1""",
]
PARAMS = {"day": "mon"}


def export_to_mage(notebook: Path, out: Path, **kwargs: Any) -> list[str]:
    return export_notebook(load_notebook(notebook), out, to="mage", **kwargs)


def run_both(
    notebook: Path, work: Path, mage_python: Path, params: dict[str, str] | None = None
) -> dict[str, Any]:
    """Export, run in Mage, run in mage_nb; both records."""
    project = work / "project"
    warnings = export_to_mage(notebook, project)
    name = next(p.name for p in (project / "pipelines").iterdir())
    report = drive(mage_python, project, name, work / "mage.json", variables=params)
    record = json.loads(mage_nb.run_notebook(notebook, params=params).to_json())
    return {"project": project, "warnings": warnings, "report": report, "record": record}


def direct_children(notebook: Path) -> set[str]:
    pipeline = mage_nb.engine.Pipeline(load_notebook(notebook).specs)
    return {b.name for b in pipeline if b.scope and b.scope[0] in b.upstream}


@pytest.fixture(scope="module")
def users_run(mage_python: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    notebook = NOTEBOOKS / "dynamic_users.ipynb"
    return run_both(notebook, tmp_path_factory.mktemp("users"), mage_python)


@pytest.fixture(scope="module")
def features_notebook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_notebook(tmp_path_factory.mktemp("features") / "features.ipynb", FEATURES)


@pytest.fixture(scope="module")
def features_run(
    mage_python: Path, features_notebook: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    return run_both(features_notebook, tmp_path_factory.mktemp("run"), mage_python, PARAMS)


# -- Mage runs the export as the notebook runs ---------------------------------------------------
def test_dynamic_users_runs_in_mage_as_in_the_notebook(users_run: dict[str, Any]) -> None:
    report, record = users_run["report"], users_run["record"]
    assert report["status"] == "completed", failures(report)
    assert record["status"] == "completed"
    pairs = pair_instances(record, report, direct_children(NOTEBOOKS / "dynamic_users.ipynb"))
    assert len(pairs) == len(record["block_runs"]) == 11
    for ours, theirs, a, b in pairs:
        same(a, b, f"{ours} / Mage {theirs}")
    names = {theirs for _, theirs, _, _ in pairs}
    # Mage names the blocks that read the dynamic block by the item's name, as we do; the
    # blocks below them by index.
    assert "anonymize_user_data:for_user_2" in names
    assert "clean_column_names:1" in names
    report_output = next(b for _, t, _, b in pairs if t == "engagement_report")
    assert report_output["top_user"] == 3 and len(report_output["scores"]) == 3


def test_every_example_notebook_is_exported_or_refused_with_its_reasons(tmp_path: Path) -> None:
    """dynamic_users exports (and runs, above); the others use what Mage cannot run."""
    expected = {
        "dynamic_users": None,
        "dynamic_sql": ["'user_orders': it is --dynamic inside the fan-out of 'users'"],
        "fractal_fanout": [
            "'stores': it is --dynamic inside the fan-out of 'regions'",
            "'region_revenue': --reduce sum",
        ],
        "failure_isolation": [
            "'amount_in_eur': it reads 'orders' and 'exchange_rate': the dynamic block and",
            "'flagged': --reduce-policy partial",
            "'eur_total': --reduce sum",
            "'daily_report': it reads context.failed, context.reduced_from",
        ],
        "stream_large": [
            "'files': it imports mage_nb (from mage_nb import Item)",
            "'crc_total': --reduce sum",
            "'stats': --reduce Stats",
        ],
    }
    assert sorted(expected) == sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    for name, reasons in expected.items():
        out = tmp_path / name
        if reasons is None:
            export_to_mage(NOTEBOOKS / f"{name}.ipynb", out)
            assert (out / "pipelines" / name / "metadata.yaml").is_file()
            continue
        with pytest.raises(ExportError) as caught:
            export_to_mage(NOTEBOOKS / f"{name}.ipynb", out)
        message = str(caught.value)
        assert message.startswith(f"cannot export {name}.ipynb to Mage 0.9.80"), message
        assert "nothing was written" in message
        for reason in reasons:
            assert f"block {reason}" in message, message
        assert not out.exists()


def test_features_run_in_mage_as_in_the_notebook(
    features_run: dict[str, Any], features_notebook: Path
) -> None:
    report, record = features_run["report"], features_run["record"]
    assert report["status"] == "completed", failures(report)
    assert record["status"] == "completed", record
    pairs = pair_instances(record, report, direct_children(features_notebook))
    assert len(pairs) == len(record["block_runs"])
    for ours, theirs, a, b in pairs:
        same(a, b, f"{ours} / Mage {theirs}")
    outputs = {ours: a for ours, _, a, _ in pairs}
    # What the comparison covered, spelled out:
    assert [u for u in outputs if u.startswith("region_info:")] == [
        "region_info:north",
        "region_info:north_1",  # de-duplicated as mage_nb does (Mage would drop the item)
        "region_info:east_west",  # sanitised
    ]
    assert outputs["region_info:north_1"] == {
        "region": "north",
        "zone": 2,
        "day": "mon",
        "label": "#north",
    }
    assert outputs["summary"] == {
        "scaled": [10, "mon", 20, "mon", 30, "mon"],  # list outputs extended, as Mage does
        "count": 6,
        "nothing": None,
        "empty": [],
        "one": [5],
        "pair": [1, "a"],
    }
    assert outputs["report"] == {"n": 3, "total": 42.75}
    assert outputs["ranked"] == [
        {"region": "east west", "zone_no": 3},
        {"region": "north", "zone_no": 2},
        {"region": "north", "zone_no": 1},
    ]
    assert outputs["ids"] == [{"id": 7}, {"id": 8}]  # truncated by --max-children
    assert outputs["flaky:1"] == {"id": 8, "attempt": 2, "index": [1]}
    assert outputs["shout:2"] == "CC"
    assert outputs["none_at_all"] is None


def test_features_export_warns_about_what_it_approximates(features_run: dict[str, Any]) -> None:
    warnings = "\n".join(features_run["warnings"])
    assert "block 'letters': it returns a generator (stream mode)" in warnings
    assert "block 'totals': Mage copies frame into DuckDB tables with cleaned column names" in (
        warnings
    )
    assert "a fan-out of zero items fails in Mage 0.9.80" in warnings


def test_features_project_layout(features_run: dict[str, Any]) -> None:
    project: Path = features_run["project"]
    metadata = yaml.safe_load((project / "pipelines" / "features" / "metadata.yaml").read_text())
    blocks = {b["uuid"]: b for b in metadata["blocks"]}
    assert blocks["regions"]["type"] == "data_loader"
    assert blocks["regions"]["configuration"] == {"dynamic": True}
    assert blocks["scaled"]["configuration"] == {"reduce_output": True}
    assert blocks["scaled"]["upstream_blocks"] == ["region_info", "settings"]
    assert blocks["shout"]["type"] == "custom"
    assert blocks["summary"]["type"] == "data_exporter"
    assert blocks["totals"]["language"] == "sql"
    assert blocks["totals"]["configuration"]["data_provider"] == "duckdb"
    assert blocks["flaky"]["retry_config"] == {
        "retries": 2,
        "delay": 0.0,
        "max_delay": 1.0,
        "exponential_backoff": False,
    }
    assert (
        (project / "transformers" / "totals.sql")
        .read_text()
        .endswith("select count(*) as n, sum(f.score) as total\nfrom {{ df_1 }} as f\n")
    )
    assert (project / "custom" / "shout.py").is_file()
    assert (project / "io_config.yaml").is_file()
    info = (project / "transformers" / "region_info.py").read_text()
    # The body is indented, not regenerated: its comments stay.
    assert "    # metadata and params through context\n" in info
    assert '    "label": label(regions),  # a prelude helper\n' in info
    assert "def label(text):" in info  # the prelude opens every block file


def test_params_reach_mage_as_runtime_variables(features_run: dict[str, Any]) -> None:
    by_uuid = {r["block_uuid"]: r for r in features_run["report"]["block_runs"]}
    assert by_uuid["region_info:east_west"]["outputs"]["output_0"]["day"] == "mon"


# -- refusals: nothing is written ---------------------------------------------------------------
REFUSALS = {
    "nested fan-out": (
        [
            "%%loader a --dynamic\n[1, 2]",
            "%%transformer b --dynamic\n[a, a * 10]",
            "%%transformer c\nb + 1",
        ],
        "block 'b': it is --dynamic inside the fan-out of 'a': a nested fan-out, which Mage "
        "0.9.80 runs wrongly",
    ),
    "dynamic and reduce": (
        [
            "%%loader a --dynamic\n[1, 2]",
            "%%transformer b --dynamic --reduce\n[a]",
            "%%transformer c\nb",
        ],
        "(--dynamic --reduce reduces, then fans out again)",
    ),
    "sibling zip": (
        [
            "%%loader a --dynamic\n[1, 2]",
            "%%transformer b\na + 1",
            "%%transformer c\na * 2",
            "%%transformer d\n(b, c)",
        ],
        "block 'd': it reads 'b' and 'c', two blocks inside the fan-out of 'a', which mage_nb "
        "zips item by item; Mage 0.9.80 makes a product of them with wrong inputs",
    ),
    "ancestor zip": (
        [
            "%%loader a --dynamic\n[1, 2]",
            "%%transformer b\na + 1",
            "%%transformer d\n(a, b)",
        ],
        "block 'd': it reads 'a' and 'b': the dynamic block and a block inside its fan-out",
    ),
    "product": (
        [
            "%%loader a --dynamic\n[1, 2]",
            "%%loader b --dynamic\n['x', 'y']",
            "%%transformer d\n(a, b)",
        ],
        "block 'd': it combines the independent fan-outs of 'a' and 'b' (a Cartesian product",
    ),
    "reduce sum": (
        ["%%loader a --dynamic\n[1, 2]", "%%transformer b --reduce sum\na", "%%exporter c\nb"],
        "block 'b': --reduce sum: Mage's reduce_output only collects a list; use --reduce "
        "(list) and apply sum in the block that reads it",
    ),
    "reduce partial": (
        [
            "%%loader a --dynamic\n[1, 2]",
            "%%transformer b --reduce --reduce-policy partial\na",
            "%%exporter c\nb",
        ],
        "block 'b': --reduce-policy partial: Mage fails whatever reads a reduce when one "
        "instance failed",
    ),
    "mage_nb import in a body": (
        [
            "%%loader a --dynamic\nfrom mage_nb import Item\n[Item(1, uuid='one')]",
            "%%transformer b\na",
        ],
        "block 'a': it imports mage_nb (from mage_nb import Item), which Mage's environment "
        "does not have",
    ),
    "mage_nb import in the prelude": (
        ["import mage_nb", "%%loader a\n1"],
        "the plain cells import mage_nb (mage_nb), which Mage's environment does not have",
    ),
    "context.reduced_from": (
        [
            "%%loader a --dynamic\n[1, 2]",
            "%%transformer b --reduce\na",
            "%%exporter c\ncontext.reduced_from",
        ],
        "block 'c': it reads context.reduced_from, which Mage does not provide",
    ),
    "context.metadata below a direct child": (
        [
            "%%loader a --dynamic\n[[1, 2], [{'k': 1}, {'k': 2}]]",
            "%%transformer b\na",
            "%%transformer c\n(b, context.metadata['k'])",
        ],
        "block 'c': it reads context.metadata inside the fan-out of 'a': Mage gives an item's "
        "metadata only to the blocks that read the dynamic block itself",
    ),
    "context as a value": (
        ["%%loader a\nprint(context)"],
        "block 'a': it uses `context` other than by reading an attribute (line 1)",
    ),
    "dynamic SQL": (
        ["%%block sql a --dynamic\nselect 1 as x", "%%transformer b\na"],
        "block 'a': a SQL block --dynamic: Mage 0.9.80 does not create the upstream tables of "
        "dynamic SQL blocks or of their children",
    ),
    "SQL in a fan-out": (
        ["%%loader a --dynamic\n[1, 2]", "%%block sql b\nselect {{ a }} as x"],
        "block 'b': a SQL block inside the fan-out of 'a'",
    ),
    "SQL template": (
        ["%%loader a\n1", "%%block sql b\nselect {{ a }} as x"],
        "block 'b': its SQL is a template (a): Mage pastes template values into the SQL text",
    ),
    "SQL connection": (
        ["%%block sql a --connection sqlite:///x.db\nselect 1 as x"],
        "block 'a': --connection sqlite:///x.db: the export writes SQL blocks for DuckDB only",
    ),
}


@pytest.mark.parametrize("construct", list(REFUSALS))
def test_refused_construct_writes_nothing(construct: str, tmp_path: Path) -> None:
    cells, message = REFUSALS[construct]
    notebook = write_notebook(tmp_path / "nb.ipynb", cells)
    out = tmp_path / "out" / "project"
    with pytest.raises(ExportError) as caught:
        export_to_mage(notebook, out)
    assert message in str(caught.value)
    assert "nothing was written" in str(caught.value) or "--name" in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    notebook = write_notebook(
        tmp_path / "nb.ipynb",
        [
            "%%loader a --dynamic\n[1, 2]",
            "%%transformer b --reduce sum\na",
            "%%transformer c --reduce count\na",
            "%%exporter d\n(b, c)",
        ],
    )
    with pytest.raises(ExportError) as caught:
        export_to_mage(notebook, tmp_path / "out")
    message = str(caught.value)
    assert "(2 problems)" in message
    assert "\n  - block 'b': --reduce sum" in message
    assert "\n  - block 'c': --reduce count" in message


def test_cli_refusal_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    if not SCRIPT.exists():
        pytest.skip("the mage-nb console script is not installed next to this interpreter")
    out = tmp_path / "project"
    done = subprocess.run(
        [str(SCRIPT), "export", NOTEBOOKS / "fractal_fanout.ipynb", "--to", "mage", out],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "mage-nb: error: cannot export fractal_fanout.ipynb to Mage 0.9.80" in done.stderr
    assert "nested fan-out" in done.stderr
    assert not out.exists()


def test_cli_export_prints_warnings_and_writes_the_project(tmp_path: Path) -> None:
    if not SCRIPT.exists():
        pytest.skip("the mage-nb console script is not installed next to this interpreter")
    out = tmp_path / "project"
    done = subprocess.run(
        [str(SCRIPT), "export", NOTEBOOKS / "dynamic_users.ipynb", "--to", "mage", out],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "mage-nb export: warning: block 'users': a fan-out of zero items" not in done.stderr
    assert "mage-nb export: warning: 'users': a fan-out of zero items fails" in done.stderr
    assert (out / "pipelines" / "dynamic_users" / "metadata.yaml").is_file()
    assert (out / "README.md").read_text().startswith("# dynamic_users\n")


# -- warnings -------------------------------------------------------------------------------------
WARNINGS = {
    "--window": (
        ["%%loader a --dynamic --window 4\n[1]", "%%transformer b\na"],
        "block 'a': --window 4 dropped: Mage does not stream a fan-out",
    ),
    "--max-concurrency": (
        ["%%loader a --max-concurrency 2\n1"],
        "block 'a': --max-concurrency 2 dropped: Mage limits block runs per pipeline",
    ),
    "--executor": (
        ["%%loader a --executor processes\n1"],
        "block 'a': --executor processes dropped",
    ),
    "--timeout": (
        ["%%loader a --timeout 2.5\n1"],
        "block 'a': --timeout 2.5 exported as Mage's timeout of 3 s: Mage checks it from its "
        "scheduler loop",
    ),
    "generator": (
        [
            "%%loader a --dynamic\n@loader\ndef f():\n    yield from range(3)",
            "%%transformer b\na",
        ],
        "block 'a': it returns a generator (stream mode): Mage gets its items as one list",
    ),
    "magic in the prelude": (
        ["%matplotlib inline\nx = 1", "%%loader a\nx"],
        "cell 1: dropped %matplotlib",
    ),
    "shell command in the prelude": (
        ["!echo hi\nx = 1", "%%loader a\nx"],
        "cell 1: dropped a shell command or IPython call (get_ipython().system('echo hi')): "
        "Mage has no IPython",
    ),
    "SQL reads a table that is not a block": (
        ["%%block sql a\nselect * from orders"],
        "block 'a': reads orders, which is not a block: Mage runs SQL on the DuckDB file of "
        "io_config.yaml",
    ),
    "function style below a direct child": (
        [
            "%%loader a --dynamic\n[1]",
            "%%transformer b\na",
            "%%transformer c\n@transformer\ndef f(b, **kwargs):\n    return b",
        ],
        "block 'c': f() runs inside the fan-out of 'a' but does not read 'a': Mage passes the "
        "items' metadata as keyword arguments only to the blocks that read the dynamic block "
        "itself",
    ),
    "block_uuid parameter": (
        ["%%loader a\n@loader\ndef f(block_uuid=None):\n    return block_uuid"],
        "block 'a': f() takes block_uuid: Mage passes its own",
    ),
    "decorator split over lines": (
        ["%%loader a\n@\\\nloader\ndef f():\n    return 1"],
        "block 'a': its body could not be re-indented as text",
    ),
    "pipeline name": (
        ["%%loader a\n1"],
        "the pipeline is named 'my_notebook' (Mage's form of 'My Notebook')",
    ),
}


@pytest.mark.parametrize("construct", list(WARNINGS))
def test_exported_with_a_warning(construct: str, tmp_path: Path) -> None:
    cells, message = WARNINGS[construct]
    name = "My Notebook" if construct == "pipeline name" else "nb"
    notebook = write_notebook(tmp_path / f"{name}.ipynb", cells)
    out = tmp_path / "project"
    warnings = export_to_mage(notebook, out)
    assert any(message in w for w in warnings), warnings
    assert any((out / "pipelines").iterdir())
    readme = (out / "README.md").read_text()
    assert message.split(":")[0] in readme


def test_timeout_and_tabs_are_written(tmp_path: Path) -> None:
    notebook = write_notebook(
        tmp_path / "nb.ipynb", ["%%loader a --timeout 2.5\nif True:\n\tx = 1\nx"]
    )
    export_to_mage(notebook, tmp_path / "p")
    metadata = yaml.safe_load((tmp_path / "p" / "pipelines" / "nb" / "metadata.yaml").read_text())
    assert metadata["blocks"][0]["timeout"] == 3
    text = (tmp_path / "p" / "data_loaders" / "a.py").read_text()
    # Tab indentation stays; four spaces before it keep it consistent.
    assert "def a(*args, **kwargs):\n    if True:\n    \tx = 1\n    return [x]\n" in text
    compile(text, "a.py", "exec")


def test_bad_pipeline_name_is_refused(tmp_path: Path) -> None:
    notebook = write_notebook(tmp_path / "nb.ipynb", ["%%loader a\n1"])
    with pytest.raises(ExportError, match=r"--name 'My Pipe': a Mage pipeline name is lower"):
        export_to_mage(notebook, tmp_path / "p", name="My Pipe")
    assert not (tmp_path / "p").exists()


# -- the rewrite on its own ----------------------------------------------------------------------
def rewrite(body: str, params: list[str], **kwargs: Any) -> str:
    info = analyse(body, "b")
    function = mage_function(body, info, name="b", decorator="transformer", params=params, **kwargs)
    assert not function.from_tree
    return function.text


def test_only_the_last_expression_changes() -> None:
    body = (
        "# leading comment\n"
        "total = a + 1  # trailing comment\n"
        "\n"
        "query = '''\n"
        "keep\n"
        "  this\n"
        "'''\n"
        '{"total": total,  # inside\n'
        ' "query": query}  # after\n'
    )
    assert rewrite(body, ["a"]) == (
        "@transformer\n"
        "def b(a, *args, **kwargs):\n"
        "    # leading comment\n"
        "    total = a + 1  # trailing comment\n"
        "\n"
        "    query = '''\n"
        "keep\n"
        "  this\n"
        "'''\n"
        '    return [{"total": total,  # inside\n'
        '     "query": query}]  # after\n'
    )


@pytest.mark.parametrize(
    ("body", "last"),
    [
        ("a, 2", "    return [(a, 2)]"),
        ("x = 1; a", "    x = 1; return [a]"),
        ("a;", "    return [a];"),
        ("x = a", "    return [None]"),
        ("(y := a)", "    return [(y := a)]"),
        ("x = 'é→'; a + x  # ü", "    x = 'é→'; return [a + x]  # ü"),
        ("(a +\n a)", "     a)]"),
    ],
)
def test_final_statement_forms(body: str, last: str) -> None:
    assert rewrite(body, ["a"]).rstrip("\n").split("\n")[-1] == last


def test_dynamic_block_returns_the_fanout_helper() -> None:
    assert rewrite("[a, a]", ["a"], fanout=True).endswith("    return _mage_nb_fanout([a, a])\n")


def test_name_read_before_assigned_starts_from_the_prelude() -> None:
    text = rewrite("df = df + a\ndf", ["a"])
    assert '    df = globals()["df"]' in text


def test_function_style_is_wrapped_and_its_tests_called() -> None:
    body = (
        "@transformer\n"
        "def f(a, *args, **kwargs):\n"
        "    return a\n"
        "\n"
        "@test\n"
        "def check(output):\n"
        "    assert output\n"
    )
    text = rewrite(body, ["a"])
    assert "@transformer\ndef b(a, *args, **kwargs):\n    def f(a, *args, **kwargs):" in text
    assert "    @test" not in text
    assert text.endswith(
        "    _mage_nb_output = _mage_nb_call(f, (a,), kwargs)\n"
        "    _mage_nb_test(check, _mage_nb_output, (a,))\n"
        "    return [_mage_nb_output]\n"
    )


def test_sql_table_references_become_df_variables() -> None:
    sql = (
        "select u.id, s.total from users u\n"
        "join scores on scores.id = u.id, users\n"
        "where u.id in (select id from scores) -- users\n"
    )
    assert sql_tables_to_mage(sql, ["users", "scores"], ["users", "scores"]) == (
        "select u.id, s.total from {{ df_1 }} u\n"
        "join {{ df_2 }} AS scores on scores.id = u.id, {{ df_1 }} AS users\n"
        "where u.id in (select id from {{ df_2 }} AS scores) -- users\n"
    )


# -- the helpers copied into Mage block files agree with the engine ------------------------------
@pytest.mark.parametrize(
    "output",
    [
        [1, 2, 3],
        (1, 2),
        [[1, 2], [{"block_uuid": "a b"}, {"block_uuid": "a b", "k": 1}]],
        [["x", "y", "z"], [{"block_uuid": "n"}, {}, {"block_uuid": "n"}]],
        ([{"a": 1}], ({"block_uuid": "only"},)),
        range(4),
        (i for i in "ab"),
        [[1], [2]],
    ],
)
def test_fanout_helper_names_items_as_the_engine(output: Any) -> None:
    import itertools

    first, second = (
        itertools.tee(output, 2)
        if not isinstance(output, (list, tuple, range))
        else (
            output,
            output,
        )
    )
    items = normalise(first, "d")
    suffixes, _ = make_suffixes(items.names, len(items.values), "d")
    values, metadata = helpers._mage_nb_items(second, "d", True, None, "fail", True)
    assert values == list(items.values)
    names = [m.get("block_uuid") for m in metadata]
    assert names == (suffixes or [None] * len(values))
    assert [m["mage_nb_metadata"] or None for m in metadata] == (
        items.metadata or [None] * len(values)
    )


def test_fanout_helper_refuses_what_the_engine_refuses() -> None:
    with pytest.raises(TypeError, match="dynamic block 'd' returned dict, which cannot be fanned"):
        helpers._mage_nb_items({"a": 1}, "d", True, None, "fail", False)
    with pytest.raises(ValueError, match="produced 3 items, more than --max-children 2"):
        helpers._mage_nb_items([1, 2, 3], "d", True, 2, "fail", False)
    with pytest.raises(ValueError, match=r"Mage 0\.9\.80 cannot run an empty fan-out"):
        helpers._mage_nb_items([], "d", True, None, "fail", False)
    assert helpers._mage_nb_items([], "d", False, None, "fail", False) == [[], []]


def test_call_helper_passes_the_keywords_a_function_accepts() -> None:
    def f(a, b=None, *, block_uuid=None):  # type: ignore[no-untyped-def]
        return (a, b, block_uuid)

    kwargs = {"b": "B", "block_uuid": "u", "other": 1, "mage_nb_metadata": {}}
    assert helpers._mage_nb_call(f, (1,), kwargs) == (1, "B", "u")
    assert helpers._mage_nb_call(f, (1, 2), kwargs) == (1, 2, "u")
    assert helpers._mage_nb_call(lambda a, **kw: sorted(kw), (1,), kwargs) == [
        "b",
        "block_uuid",
        "other",
    ]


def test_an_exported_python_folder_exports_to_the_same_mage_blocks(tmp_path: Path) -> None:
    source = NOTEBOOKS / "dynamic_users.ipynb"
    export_notebook(load_notebook(source), tmp_path / "folder", to="python")
    export_to_mage(source, tmp_path / "direct")
    export_to_mage(tmp_path / "folder", tmp_path / "via_folder")
    files = sorted(p.relative_to(tmp_path / "direct") for p in (tmp_path / "direct").rglob("*.py"))
    assert files == sorted(
        p.relative_to(tmp_path / "via_folder") for p in (tmp_path / "via_folder").rglob("*.py")
    )
    for file in files:
        direct = (tmp_path / "direct" / file).read_text().partition("# The block")[2]
        via = (tmp_path / "via_folder" / file).read_text().partition("# The block")[2]
        assert direct == via, file
