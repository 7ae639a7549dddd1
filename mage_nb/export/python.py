"""``export --to python``: a folder that ``mage-nb run`` runs with no Jupyter (layout: ``layout``).

Block bodies are copied verbatim, so an exported block means exactly what its cell meant:
an expression-style body stays expression style (its last expression is its output, free
names that are upstream blocks are their outputs); it is not rewritten into a function. Each
block file opens with comments saying what the block is, what its upstream names are bound
to and how its body is read. Its first line stands for the ``%%block`` header (the reader
drops it when it is a comment), so line numbers in tracebacks are the file's own.

The writer checks its work: the folder it wrote is read back and must give the same blocks,
options and edges as the notebook, or the export fails (and ``folder`` removes it).
"""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

from ..engine.dag import Block, Pipeline
from ..notebook import KERNEL, Notebook
from . import ExportError
from .layout import (
    BLOCKS_DIR,
    FORMAT,
    PIPELINE_FILE,
    PRELUDE_FILE,
    README_FILE,
    block_file,
    comment_prefix,
    header_of,
    readable_options,
)
from .prelude import prelude_module
from .toml import dumps

_TOML_INTRO = """\
A mage_nb pipeline, exported from {source}.
Run it with `mage-nb run FOLDER` (see README.md).

One [[blocks]] entry per block, in notebook order. `header` is the block's %%block line: it
is what runs (its options are read by the same parser as in a notebook), and `file` holds its
body. The other keys repeat what the header and the body say, for reading: if you edit one
so that it disagrees, the folder is refused until they agree again. To change an option,
edit the header; to change what a block reads, edit its body (or --upstream in the header)
and then its `upstream` key."""


def export_python(notebook: Notebook, out_dir: Path, *, name: str | None = None) -> list[str]:
    """Write the folder into ``out_dir`` (an existing, empty folder); return warnings.

    Raises ``PipelineError`` for an invalid notebook and ``ExportError`` for one that cannot
    be exported; what was written is then the caller's to remove (see ``folder``).
    """
    pipeline = Pipeline(notebook.specs)
    title = name or notebook.name
    source = notebook.path.name
    cells = (
        "the plain cells the kernel ran, in the order they first ran (cells that read block "
        "outputs left out)"
        if notebook.path == KERNEL
        else f"the plain code cells of {source}, in notebook order (cells tagged `skip` left out)"
    )
    files = _file_names(notebook)
    intro = textwrap.fill(
        f"The shared prelude of the pipeline `{title}`: {cells}. It runs once, before any block, into "
        "the namespace that every block body reads through to (imports, helpers, constants). "
        "IPython magics need a kernel: they are dropped and left here as comments.",
        width=90,
    )
    prelude, warnings = prelude_module(notebook.prelude, intro=intro)
    if "get_ipython()" in prelude:
        prelude = prelude.replace(
            "\n\n",
            "\n# `!cmd` lines became get_ipython().system(...) calls; `mage-nb run` provides\n"
            "# get_ipython() for them.\n\n",
            1,
        )
    (out_dir / BLOCKS_DIR).mkdir(parents=True, exist_ok=True)
    _write(out_dir / PRELUDE_FILE, prelude)
    entries = []
    for spec in notebook.specs:
        block = pipeline[spec.name]
        file = files[spec.name]
        body = _without_preamble(spec.source, file) if notebook.path.is_dir() else spec.source
        _write(out_dir / file, _block_text(block, pipeline, file, source, body))
        entry: dict[str, object] = {
            "name": spec.name,
            "kind": spec.kind,
            "file": file,
            "header": header_of(spec),
        }
        if spec.origin:
            entry["origin"] = spec.origin
        entry["upstream"] = list(block.upstream)
        entry.update(readable_options(spec))
        entries.append(entry)
    data = {
        "format": FORMAT,
        "name": title,
        "source": source,
        "prelude": PRELUDE_FILE,
        "blocks": entries,
    }
    _write(out_dir / PIPELINE_FILE, dumps(data, comment=_TOML_INTRO.format(source=source)))
    _write(out_dir / README_FILE, _readme(title, source, out_dir.name, pipeline, notebook, files))
    _check_round_trip(notebook, pipeline, out_dir)
    return warnings


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)


def _file_names(notebook: Notebook) -> dict[str, str]:
    """NAME -> file, unique even on a file system that ignores case (``Users``, ``users``)."""
    files: dict[str, str] = {}
    taken: set[str] = set()
    for spec in notebook.specs:
        file = block_file(spec)
        stem, dot, ext = file.rpartition(".")
        n = 1
        while file.lower() in taken:
            n += 1
            file = f"{stem}_{n}{dot}{ext}"
        taken.add(file.lower())
        files[spec.name] = file
    return files


def _binding(up: Block) -> str:
    """What an upstream block's NAME holds in a body that reads it."""
    if up.dynamic:
        return "one item of its output (it is --dynamic: this block runs once per item)"
    if up.reduce is not None:
        return f"its instances' outputs, combined (--reduce {up.reduce})"
    if up.scope:
        return "the output of its instance for the same item"
    return "its output"


def _without_preamble(source: str, file: str) -> str:
    """A body read from an exported folder, without the comments an export put above it
    (the loader already dropped their first line): exporting a folder again does not stack
    them. Only a run of comment lines followed by a blank line is taken off."""
    lines = source.split("\n")
    prefix = comment_prefix(file)
    n = 0
    while n < len(lines) and lines[n].startswith(prefix):
        n += 1
    if n and n < len(lines) and not lines[n].strip():
        return "\n".join(lines[n + 1 :])
    return source


def _block_text(block: Block, pipeline: Pipeline, file: str, source: str, body: str) -> str:
    spec = block.spec
    where = f"{spec.origin} of {source}" if spec.origin else source
    lines = [f"Block `{spec.name}` ({spec.kind}), exported by mage_nb from {where}."]
    lines.append("Its %%block header and options are in pipeline.toml.")
    lines.append("")
    if block.upstream:
        lines.append("Upstream, in positional order:")
        lines += [f"  {up}: {_binding(pipeline[up])}" for up in block.upstream]
    else:
        lines.append("Upstream: none.")
    lines.append("")
    if spec.kind == "sql":
        lines += [
            "SQL: the query runs on DuckDB in-process, or on the header's --connection. Each",
            "upstream output is a table named after its block; Jinja templates see the",
            "upstream outputs, the prelude's globals and `context`, and their values are sent",
            "as bind parameters. The result is a DataFrame (one item per row if --dynamic).",
        ]
    elif block.info is not None and block.info.style == "function":
        called = ", ".join(block.upstream) or "no upstream outputs"
        lines += [
            f"Function style: `{block.info.function}` is called with the upstream outputs",
            f"positionally ({called}), plus the keyword arguments it accepts: the run's",
            "parameters, its lineage's metadata, block_uuid and dynamic_block_index. Its return",
            "value is the block's output; a function decorated @test checks it.",
        ]
    else:
        lines += [
            "Expression style: this file runs as a script in a namespace of its own that reads",
            "through to prelude.py's globals"
            + (", with the upstream names bound as above" if block.upstream else "")
            + " and `context`",
            "bound. The value of the last expression statement is the block's output (None if",
            "the body does not end in an expression); assignments stay local.",
        ]
    prefix = comment_prefix(file)
    comment = "\n".join(f"{prefix} {line}".rstrip() for line in lines)
    if body and not body.endswith("\n"):
        body += "\n"
    return f"{comment}\n\n{body}"


def _readme(
    title: str,
    source: str,
    folder: str,
    pipeline: Pipeline,
    notebook: Notebook,
    files: dict[str, str],
) -> str:
    rows = []
    for spec in notebook.specs:
        block = pipeline[spec.name]
        upstream = ", ".join(block.upstream) or "—"
        header = header_of(spec).replace("|", "\\|")
        rows.append(
            f"| `{spec.name}` | [{files[spec.name]}]({files[spec.name]}) | {upstream} "
            f"| `{header}` |"
        )
    table = "\n".join(rows)
    return f"""# {title}

A mage_nb pipeline exported from `{source}` by
`mage-nb export --to python`. It runs without Jupyter (mage_nb must be installed).
From the folder that contains this one:

```bash
mage-nb run {folder}
python -m mage_nb run {folder}
```

Every `mage-nb run` option works (`--param KEY=VALUE`, `--json PATH`, `--executor`, `--tree`…),
and `mage-nb graph {folder}` draws the DAG.

## What is here

| file | what |
| --- | --- |
| `{PIPELINE_FILE}` | the pipeline: one `[[blocks]]` entry per block (its `%%block` header, file, upstream and options) |
| `{PRELUDE_FILE}` | the notebook's plain cells (imports, helpers, constants), run once before any block |
| `{BLOCKS_DIR}/` | one file per block: its body, as written in the notebook |

## Blocks

| block | file | upstream | header |
| --- | --- | --- | --- |
{table}

Edit a block's file to change what it computes; edit its `header` in `{PIPELINE_FILE}` to
change its options. Bodies keep the notebook's meaning: in expression style the last
expression is the output and upstream blocks are read by NAME; in function style the
decorated function is called with the upstream outputs.
"""


def _check_round_trip(notebook: Notebook, pipeline: Pipeline, out_dir: Path) -> None:
    """The folder must read back as the same blocks, options and edges."""
    from .load import load_folder

    loaded = load_folder(out_dir)
    back = Pipeline(loaded.specs)
    for spec, again in zip(notebook.specs, loaded.specs, strict=True):
        same = dataclasses.replace(again, source=spec.source, origin=spec.origin) == spec
        if not same or back[spec.name].upstream != pipeline[spec.name].upstream:
            raise ExportError(
                f"block {spec.name!r} does not read back as written (a bug in mage_nb's "
                "exporter; please report it with the notebook)"
            )
