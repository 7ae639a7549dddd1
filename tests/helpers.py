"""Shared test helpers: build pipelines from cell texts, write real notebooks."""

from __future__ import annotations

import ast
import builtins
import functools
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import nbformat
import pytest

from mage_nb.engine import Pipeline, PipelineRun, Run, SyncExecutor, ThreadExecutor, parse_header
from mage_nb.engine.executors import Executor, ProcessExecutor
from mage_nb.engine.spec import BlockSpec, split_block_cell


def specs_from_cells(cells: Iterable[str]) -> list[BlockSpec]:
    """Each text is a block cell: a ``%%block ...`` header line, then the body."""
    specs = []
    for number, cell in enumerate(cells, start=1):
        split = split_block_cell(cell)
        assert split is not None, f"not a block cell: {cell[:40]!r}"
        header, body = split
        specs.append(parse_header(header, source=body, origin=f"cell {number}"))
    return specs


def run_cells(
    *cells: str,
    executor: Executor | str = "sync",
    namespace: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    listeners: Iterable[Any] = (),
) -> PipelineRun:
    """Run block cells with the given executor ("sync", "threads", "processes" or one)."""
    run, chosen = build_run(
        *cells, executor=executor, namespace=namespace, params=params, listeners=listeners
    )
    try:
        return run.execute()
    finally:
        chosen.close()


def build_run(
    *cells: str,
    executor: Executor | str = "sync",
    namespace: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    listeners: Iterable[Any] = (),
) -> tuple[Run, Executor]:
    """``run_cells`` before it runs: the ``Run`` and its executor (the caller closes it)."""
    ns: dict[str, Any] = {"__builtins__": builtins, "__name__": "__main__"}
    ns.update(namespace or {})
    if executor == "sync":
        chosen: Executor = SyncExecutor()
    elif executor == "threads":
        chosen = ThreadExecutor(8)
    elif executor == "processes":
        chosen = ProcessExecutor(2)
    else:
        assert not isinstance(executor, str)
        chosen = executor
    try:
        run = Run(
            Pipeline(specs_from_cells(cells)),
            ns,
            executor=chosen,
            params=params,
            listeners=list(listeners),
            # what a worker process starts from: this namespace, shipped by value
            setup=functools.partial(dict, ns),
        )
    except BaseException:
        chosen.close()
        raise
    return run, chosen


def write_notebook(path: Path, cells: Iterable[str | tuple[str, list[str]]]) -> Path:
    """Write a real .ipynb; a cell is its source, or (source, tags); '# md:' cells are markdown."""
    nb = nbformat.v4.new_notebook()
    for cell in cells:
        source, tags = (cell, []) if isinstance(cell, str) else cell
        if source.startswith("# md:"):
            nb.cells.append(nbformat.v4.new_markdown_cell(source[5:].strip()))
            continue
        new = nbformat.v4.new_code_cell(source)
        if tags:
            new.metadata["tags"] = tags
        nb.cells.append(new)
    nbformat.write(nb, path)
    return path


def outputs(run: PipelineRun, block: str) -> dict[str, Any]:
    """uuid -> output of one block's instances, in instance order."""
    return {r.uuid: r.output for r in run.instances(block)}


def statuses(run: PipelineRun, block: str | None = None) -> dict[str, str]:
    return {r.uuid: r.status for r in run.instances(block)}


def on_executors(*executors: Any) -> pytest.MarkDecorator:
    """Run a test on these executors of the ``any_executor`` fixture only (names, or
    ``pytest.param(name, marks=...)``)."""
    return pytest.mark.parametrize("any_executor", executors, indirect=True)


def notebook_code(source: str, **names: Any) -> dict[str, Any]:
    """What a notebook's plain cells would define: ``source`` run as ``__main__`` code, so its
    functions and classes travel to worker processes and Dask workers by value."""
    namespace: dict[str, Any] = {"__name__": "__main__", **names}
    exec(source, namespace)
    namespace.pop("__builtins__", None)
    return namespace


_NOTE = """
def note(*values):
    with open(LOG, "a") as log:
        log.write(repr(values) + "\\n")
"""


def note_to(path: Path) -> dict[str, Any]:
    """A namespace with ``note(*values)``: a block body appends one line to ``path`` (one
    write in append mode: lines from concurrent processes do not mix). Side effects a test can
    count wherever the body ran; ``notes(path)`` reads them back."""
    return notebook_code(_NOTE, LOG=str(path))


def notes(path: Path) -> list[tuple[Any, ...]]:
    """What the bodies noted in ``path``, one tuple per ``note`` call, in file order."""
    if not path.exists():
        return []
    return [ast.literal_eval(line) for line in path.read_text().splitlines()]


#: ``wait_for(path, seconds)`` for block bodies: wait until the file exists (another body, a
#: listener or the test creates it); False if it did not appear in time.
WAIT_FOR = notebook_code(
    "def wait_for(path, seconds):\n"
    "    import os, time\n"
    "    end = time.monotonic() + seconds\n"
    "    while not os.path.exists(path):\n"
    "        if time.monotonic() > end:\n"
    "            return False\n"
    "        time.sleep(0.005)\n"
    "    return True\n"
)


def wait_for(path: Path, seconds: float) -> bool:
    """``wait_for`` in the test process."""
    wait: Any = WAIT_FOR["wait_for"]
    return bool(wait(str(path), seconds))


#: Where a timed-out instance can be abandoned: not the sync executor, which runs a body
#: inline and cannot give up on it.
TIMEOUT_EXECUTORS = on_executors("threads", "processes", "dask")


#: The environment of a ``mage-nb`` subprocess: output as UTF-8 whatever the locale.
CLI_ENV = {**os.environ, "PYTHONUTF8": "1", "PYTHONIOENCODING": "utf-8"}


def run_cli(
    *args: object,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m mage_nb`` with the test's own interpreter, output as UTF-8 text."""
    return subprocess.run(
        [sys.executable, "-m", "mage_nb", *map(str, args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        env=CLI_ENV if env is None else {**CLI_ENV, **env},
        cwd=cwd,
        check=False,
    )


def touch(path: Path) -> str:
    """Python source that creates ``path`` (a side effect a test can look for)."""
    return f"__import__('pathlib').Path({str(path)!r}).write_text('ran')"
