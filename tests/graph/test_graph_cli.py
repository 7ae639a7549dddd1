"""``mage-nb graph`` as a user runs it: real subprocesses, real notebooks (SPEC §3.3, §6)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_notebook

HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz's `dot` program is not installed")
ENV = {**os.environ, "PYTHONUTF8": "1", "PYTHONIOENCODING": "utf-8"}

CELLS = [
    "import math",
    "%%block loader users --dynamic\n[1, 2, 3]",
    "%%block transformer t\nprint('hello from', users)\n"
    "if users == 2:\n    raise ValueError('boom')\nmath.sqrt(users)",
    "%%block transformer r --reduce sum\nt",
    "%%block exporter e\nr",
]


def graph_cli(
    *args: object, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mage_nb", "graph", *map(str, args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        env=env or ENV,
        check=False,
    )


@pytest.fixture
def notebook(tmp_path: Path) -> Path:
    return write_notebook(tmp_path / "pipe.ipynb", CELLS)


@pytest.fixture
def no_dot_env(tmp_path: Path) -> dict[str, str]:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    return {**ENV, "PATH": str(empty)}


def test_dag_dot_on_stdout(notebook: Path) -> None:
    done = graph_cli(notebook)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("digraph pipeline {")
    assert "users -> t" in done.stdout
    assert "shape=doubleoctagon" in done.stdout
    assert "reduce: sum" in done.stdout
    assert "hello" not in done.stdout + done.stderr  # nothing ran


def test_dag_to_dot_file(notebook: Path, tmp_path: Path) -> None:
    out = tmp_path / "dag.dot"
    done = graph_cli(notebook, "-o", out)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert out.read_text(encoding="utf-8").startswith("digraph pipeline {")


@needs_dot
def test_dag_to_svg_file(notebook: Path, tmp_path: Path) -> None:
    out = tmp_path / "dag.svg"
    done = graph_cli(notebook, "-o", out)
    assert done.returncode == 0, done.stderr
    svg = out.read_text(encoding="utf-8")
    assert "<svg" in svg
    assert "<title>users</title>" in svg


def test_svg_without_dot_exits_2(
    notebook: Path, tmp_path: Path, no_dot_env: dict[str, str]
) -> None:
    out = tmp_path / "dag.svg"
    done = graph_cli(notebook, "-o", out, env=no_dot_env)
    assert done.returncode == 2
    assert "dot" in done.stderr and "not installed" in done.stderr
    assert not out.exists()


def test_dot_file_without_dot_still_works(
    notebook: Path, tmp_path: Path, no_dot_env: dict[str, str]
) -> None:
    out = tmp_path / "dag.dot"
    done = graph_cli(notebook, "-o", out, env=no_dot_env)
    assert done.returncode == 0, done.stderr
    assert out.read_text(encoding="utf-8").startswith("digraph")


def test_unknown_output_format_exits_2(notebook: Path, tmp_path: Path) -> None:
    done = graph_cli(notebook, "-o", tmp_path / "dag.png")
    assert done.returncode == 2
    assert ".dot or .svg" in done.stderr


def test_expanded_runs_the_notebook_and_draws_instances(notebook: Path) -> None:
    done = graph_cli(notebook, "--expanded")
    assert done.returncode == 0, done.stderr
    dot = done.stdout
    assert dot.startswith("digraph run {")  # block prints went to stderr, not into the DOT
    assert "hello from 1" in done.stderr
    for uuid in ("users", "t:0", "t:1", "t:2", "r:0", "r:1", "r:2"):
        assert f'label="{uuid}\\n' in dot
    assert "✗ failed" in dot and "⊘ upstream_failed" in dot
    assert "run" in done.stderr and "failed" in done.stderr


@needs_dot
def test_expanded_to_svg(notebook: Path, tmp_path: Path) -> None:
    out = tmp_path / "run.svg"
    done = graph_cli(notebook, "--expanded", "-o", out, "--limit", "2")
    assert done.returncode == 0, done.stderr
    svg = out.read_text(encoding="utf-8")
    assert "<svg" in svg and "t:1" in svg


def test_expanded_limit_collapses(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "wide.ipynb",
        ["%%block loader items --dynamic\nlist(range(500))", "%%block transformer t\nitems"],
    )
    done = graph_cli(nb, "--expanded", "--limit", "3")
    assert done.returncode == 0, done.stderr
    assert "… 497 more  ✓497" in done.stdout
    assert done.stdout.count('\\n✓ completed"') == 1 + 3


@pytest.mark.parametrize("expanded", [False, True])
def test_invalid_notebook_exits_2_with_the_error_line(tmp_path: Path, expanded: bool) -> None:
    marker = tmp_path / "ran"
    nb = write_notebook(
        tmp_path / "cycle.ipynb",
        [
            f"__import__('pathlib').Path({str(marker)!r}).write_text('x')",
            "%%block transformer a --upstream b\n1",
            "%%block transformer b --upstream a\n2",
        ],
    )
    done = graph_cli(nb, *(["--expanded"] if expanded else []))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("mage-nb: error: ")
    assert "cycle" in done.stderr
    assert not marker.exists()


def test_bad_header_and_missing_file_exit_2(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "bad.ipynb", ["%%block loader x --retries nope\n1"])
    done = graph_cli(nb)
    assert done.returncode == 2
    assert "mage-nb: error: cell 1" in done.stderr
    missing = graph_cli(tmp_path / "nope.ipynb")
    assert missing.returncode == 2
    assert "mage-nb: error:" in missing.stderr
