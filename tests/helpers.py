"""Shared test helpers: build pipelines from cell texts, write real notebooks."""

from __future__ import annotations

import builtins
import functools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import nbformat

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
        return Run(
            Pipeline(specs_from_cells(cells)),
            ns,
            executor=chosen,
            params=params,
            listeners=list(listeners),
            # what a worker process starts from: this namespace, shipped by value
            setup=functools.partial(dict, ns),
        ).execute()
    finally:
        chosen.close()


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
