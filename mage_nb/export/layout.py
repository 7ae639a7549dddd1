"""What an exported Python folder holds, shared by the writer (``python``) and the reader (``load``).

```
OUT_DIR/
  pipeline.toml      the pipeline: name, source notebook, prelude file, one [[blocks]] per block
  prelude.py         the notebook's plain cells
  blocks/NAME.py     one file per Python block (its body)
  blocks/NAME.sql    one file per SQL block
  README.md          how to run it
```

A ``[[blocks]]`` entry's ``header`` is the block's ``%%block`` line, read by the same parser
as in a notebook: it is what runs. ``name``, ``kind``, ``upstream`` and the option keys repeat
what the header and the body say, so the file can be read without knowing the header syntax;
the reader refuses a folder where one of them disagrees (an edited key that would otherwise
be silently ignored). Only ``file`` and ``header`` are required.
"""

from __future__ import annotations

import shlex
from typing import Any

from ..engine.spec import BlockSpec

PIPELINE_FILE = "pipeline.toml"
PRELUDE_FILE = "prelude.py"
BLOCKS_DIR = "blocks"
README_FILE = "README.md"
#: Version of the folder layout; a reader refuses a newer one.
FORMAT = 1

TOP_KEYS = ("format", "name", "source", "prelude", "blocks")
#: Option keys, in the order they are written, and the header flag each stands for.
OPTION_FLAGS = {
    "dynamic": "--dynamic",
    "reduce": "--reduce",
    "reduce_policy": "--reduce-policy",
    "retries": "--retries",
    "retry_delay": "--retry-delay",
    "timeout": "--timeout",
    "max_concurrency": "--max-concurrency",
    "connection": "--connection",
    "max_children": "--max-children",
    "on_overflow": "--on-overflow",
    "window": "--window",
    "executor": "--executor",
    "no_run": "--no-run",
}
#: Keys a [[blocks]] entry may have: what it is, then what the header says.
BLOCK_KEYS = ("name", "kind", "file", "header", "origin", "upstream", *OPTION_FLAGS)
_DEFAULTS = BlockSpec(kind="custom", name="_")


def options_of(spec: BlockSpec) -> dict[str, Any]:
    """Every option key with the spec's value (``None`` where the header leaves it unset)."""
    return {key: getattr(spec, key) for key in OPTION_FLAGS}


def readable_options(spec: BlockSpec) -> dict[str, Any]:
    """The option keys worth writing: ``dynamic`` always, the others where the header sets them
    (``reduce_policy`` whenever there is a reduce)."""
    written: dict[str, Any] = {}
    for key, value in options_of(spec).items():
        default = getattr(_DEFAULTS, key)
        if key == "dynamic" or value != default or (key == "reduce_policy" and spec.reduce):
            written[key] = value
    return written


def header_of(spec: BlockSpec) -> str:
    """The spec's ``%%block`` line: as it was written, or rebuilt from its options."""
    if spec.header:
        return spec.header
    words = ["%%block", spec.kind, spec.name]
    for key, value in readable_options(spec).items():
        flag = OPTION_FLAGS[key]
        if isinstance(value, bool):
            words += [flag] if value else []
        else:
            words += [flag, str(value)]
    if spec.upstream is not None:
        words += ["--upstream", *spec.upstream]
    return shlex.join(words)


def block_file(spec: BlockSpec) -> str:
    """``blocks/NAME.py``, or ``.sql`` for a SQL block (relative to the folder, with ``/``)."""
    return f"{BLOCKS_DIR}/{spec.name}.{'sql' if spec.kind == 'sql' else 'py'}"


def comment_prefix(file: str) -> str:
    """The line-comment marker of a block file's language."""
    return "--" if file.endswith(".sql") else "#"
