# mypy: ignore-errors
"""Helpers that ``export --to mage`` copies into the block files that need them.

They run inside Mage, where mage_nb is not installed: each function is self-contained
(imports inside, no annotations, no module-level names) and is pasted into a block file
with ``inspect.getsource``. Each one reproduces, in Mage, one rule of mage_nb's semantics:

* ``_mage_nb_items``: a dynamic block's output forms (SPEC §2.1: lists, tuples,
  ``[items, metadata]``, DataFrames and Arrow tables row by row, iterators) and its item
  names (§2.2: metadata ``block_uuid`` sanitised and made unique), returned as Mage's
  ``[items, metadata]`` so that Mage names the dynamic children as mage_nb names them;
  ``--max-children``/``--on-overflow``; a clear error for an empty fan-out (which Mage
  0.9.80 cannot run);
* ``_mage_nb_call``: a function-style body's function called with the upstream outputs
  positionally and the keyword arguments it accepts (all if it takes ``**kwargs``);
* ``_mage_nb_test``: a ``@test`` function called with the output (and the inputs if it
  takes more than one argument);
* ``_mage_nb_context``: the part of ``context`` Mage can tell a block (``params``,
  ``metadata``, ``block``, ``attempt``, ``index``; ``uuid`` and ``lineage`` outside fan-outs).

Tests call these functions directly and compare them with the engine's own rules.
"""

from __future__ import annotations


def _mage_nb_items(output, block, children, max_children, on_overflow, keep_metadata):
    """A dynamic block's output as Mage's [items, metadata], items named as mage_nb names them."""
    import itertools
    import re
    from collections.abc import Iterable, Mapping

    metadata = None
    module = type(output).__module__.split(".")[0]
    if (
        isinstance(output, (list, tuple))
        and len(output) == 2
        and isinstance(output[0], (list, tuple))
        and isinstance(output[1], (list, tuple))
        and all(isinstance(m, Mapping) for m in output[1])
        and len(output[0]) == len(output[1])
    ):
        values, metadata = output
    elif isinstance(output, (list, tuple)):
        values = output
    elif module == "pandas" and hasattr(output, "to_dict") and hasattr(output, "columns"):
        values = output.to_dict(orient="records")
    elif module == "polars" and hasattr(output, "to_dicts"):
        values = output.to_dicts()
    elif module == "pyarrow" and hasattr(output, "to_pylist") and hasattr(output, "schema"):
        values = output.to_pylist()
    elif (
        isinstance(output, (str, bytes, bytearray, Mapping))
        or output is None
        or not isinstance(output, Iterable)
    ):
        raise TypeError(
            f"dynamic block {block!r} returned {type(output).__name__}, which cannot be "
            "fanned out; return a list or tuple of items, [items, metadata], a DataFrame or "
            "Arrow table (one item per row), or a generator/iterator"
        )
    else:
        values = output
    if max_children is None:
        items = list(values)
    else:
        items = list(itertools.islice(values, max_children + 1))
        if len(items) > max_children:
            sized = isinstance(values, (list, tuple))
            if on_overflow == "fail":
                count = len(values) if sized else len(items)
                raise ValueError(
                    f"dynamic block {block!r} produced {'' if sized else 'at least '}{count} "
                    f"items, more than --max-children {max_children}"
                )
            total = f" of {len(values)}" if sized else ""
            print(
                f"dynamic block {block!r} produced more than --max-children {max_children} "
                f"items; kept the first {max_children}{total}"
            )
            items = items[:max_children]
    meta = list(metadata)[: len(items)] if metadata is not None else [None] * len(items)
    if not items and children:
        raise ValueError(
            f"dynamic block {block!r} produced no items: Mage 0.9.80 cannot run an empty "
            "fan-out (it would run each block below once with no input, and fail), where "
            "mage_nb runs none of them"
        )
    names = [str(m["block_uuid"]) if m and "block_uuid" in m else None for m in meta]
    named = any(name is not None for name in names)
    seen = set()
    mage_metadata = []
    for i, m in enumerate(meta):
        own = {k: v for k, v in (m or {}).items() if k != "block_uuid"}
        entry = dict(own)
        if keep_metadata:
            entry["mage_nb_metadata"] = own
        if named:
            base = re.sub(r"[^A-Za-z0-9_.-]", "_", names[i]) if names[i] else str(i)
            suffix = base
            while suffix in seen:
                suffix = f"{suffix}_{i}"
            if suffix != base:
                print(
                    f"dynamic block {block!r}: item {i} is named {base!r} like an earlier "
                    f"item; renamed to {suffix!r}"
                )
            seen.add(suffix)
            entry["block_uuid"] = suffix
        mage_metadata.append(entry)
    return [items, mage_metadata]


def _mage_nb_call(function, inputs, kwargs, context=None):
    """Call a function-style body's function as mage_nb does: upstream outputs positionally,
    then the keyword arguments it accepts (every one if it takes **kwargs)."""
    import inspect

    given = {k: v for k, v in kwargs.items() if k != "mage_nb_metadata"}
    if context is not None:
        given["context"] = context
    params = list(inspect.signature(function).parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return function(*inputs, **given)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        filled = {p.name for p in positional}
    else:
        filled = {p.name for p in positional[: len(inputs)]}
    accepted = {
        p.name
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in filled
    }
    return function(*inputs, **{k: v for k, v in given.items() if k in accepted})


def _mage_nb_test(check, output, inputs):
    """Run a @test function: with the output, and the inputs if it takes more arguments."""
    code = check.__code__
    if code.co_argcount > 1 or code.co_flags & 0x04:
        check(output, *inputs)
    else:
        check(output)


def _mage_nb_context(block, kwargs, fanout):
    """mage_nb's `context`, as far as Mage's keyword arguments tell it."""
    from types import SimpleNamespace

    mage_keys = {
        "block_uuid",
        "configuration",
        "context",
        "ds",
        "dynamic_block_index",
        "dynamic_block_uuid",
        "env",
        "event",
        "execution_date",
        "execution_partition",
        "hr",
        "interval_end_datetime",
        "interval_end_datetime_previous",
        "interval_seconds",
        "interval_start_datetime",
        "interval_start_datetime_previous",
        "logger",
        "mage_nb_metadata",
        "part_index",
        "pipeline_run_id",
        "pipeline_uuid",
        "repo_path",
        "retry",
        "spark",
        "trigger_name",
        "variables",
    }
    metadata = dict(kwargs.get("mage_nb_metadata") or {})
    params = {k: v for k, v in kwargs.items() if k not in mage_keys and k not in metadata}
    attempt = (kwargs.get("retry") or {}).get("attempts") or 1
    index = kwargs.get("dynamic_block_index")
    return SimpleNamespace(
        block=block,
        params=params,
        metadata=metadata,
        attempt=attempt,
        index=(index,) if fanout and index is not None else (),
        uuid=block,
        lineage=[],
    )
