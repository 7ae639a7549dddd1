"""What a dynamic block may output, and the fan-outs it makes (SPEC §2.1, §2.2).

``normalise`` turns any accepted output into items, per-item names and per-item metadata;
``FanoutRecord`` holds one fan-out's names and metadata so that every descendant instance
can refer to its lineage element as ``(record, index)`` without copying strings or dicts.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import FanoutError

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
ACCEPTED_FORMS = (
    "a list or tuple of items, [items, metadata], mage_nb.Fanout(items, metadata), "
    "a DataFrame or Arrow table (one item per row), or a generator/iterator"
)


class Fanout:
    """An explicit fan-out: ``items`` and, optionally, one metadata dict per item."""

    __slots__ = ("items", "metadata")

    def __init__(
        self, items: Iterable[Any], metadata: Iterable[Mapping[str, Any] | None] | None = None
    ):
        self.items = items
        self.metadata = metadata

    def __repr__(self) -> str:
        return f"Fanout({self.items!r}, metadata={self.metadata!r})"


@dataclass(frozen=True, slots=True)
class Item:
    """One item of a fan-out with an optional name (``uuid``) and metadata."""

    value: Any
    uuid: str | None = None
    metadata: Mapping[str, Any] | None = None


class FanoutRecord:
    """One fan-out: who made it and how its items are named.

    ``size`` is the number of items. A fan-out that never happened (its dynamic instance did
    not complete) or that has no items is represented downstream by a single marker index
    (``FAILED`` or ``EMPTY``), so its size counts as 1 for whoever closes it.
    """

    __slots__ = ("block", "metadata", "owner", "size", "streaming", "suffixes")

    def __init__(
        self,
        block: str,
        owner: str,
        size: int,
        suffixes: list[str] | None = None,
        metadata: list[dict[str, Any] | None] | None = None,
    ):
        self.block = block
        self.owner = owner
        self.size = size
        self.suffixes = suffixes
        self.metadata = metadata
        self.streaming = False  # items still arriving: ``size`` is a count so far

    def suffix(self, index: int) -> str:
        if self.suffixes is None:
            return str(index)
        return self.suffixes[index]

    def item_metadata(self, index: int) -> dict[str, Any] | None:
        if self.metadata is None or index < 0:
            return None
        return self.metadata[index]


#: Marker indices in an instance key: the fan-out at this position failed / was empty.
FAILED = -1
EMPTY = -2


@dataclass
class Items:
    """A dynamic output, normalised."""

    values: list[Any]
    names: list[str | None] | None
    metadata: list[dict[str, Any] | None] | None
    truncated: bool = False
    truncated_from: int | None = None  # how many there were, when known


def _is_frame(value: Any) -> str | None:
    module = type(value).__module__.split(".")[0]
    if module == "pandas" and hasattr(value, "to_dict") and hasattr(value, "columns"):
        return "pandas"
    if module == "polars" and hasattr(value, "to_dicts"):
        return "polars"
    if module == "pyarrow" and hasattr(value, "to_pylist") and hasattr(value, "schema"):
        return "arrow"
    return None


def _is_metadata_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(m, Mapping) for m in value)


def _take(values: Iterable[Any], limit: int | None) -> list[Any]:
    if limit is None:
        return list(values)
    return list(itertools.islice(values, limit + 1))


def normalise(
    output: Any, block: str, *, max_children: int | None = None, on_overflow: str = "fail"
) -> Items:
    """Turn a dynamic block's output into items (SPEC §2.1 and §8), or raise ``FanoutError``."""
    metadata: Any = None
    if isinstance(output, Fanout):
        values = output.items
        metadata = output.metadata
    elif (
        isinstance(output, (list, tuple))
        and len(output) == 2
        and isinstance(output[0], (list, tuple))
        and _is_metadata_list(output[1])
        and len(output[0]) == len(output[1])
    ):
        values, metadata = output
    elif isinstance(output, (list, tuple)):
        values = output
    elif (kind := _is_frame(output)) is not None:
        if kind == "pandas":
            values = output.to_dict(orient="records")
        elif kind == "polars":
            values = output.to_dicts()
        else:
            values = output.to_pylist()
    elif (
        isinstance(output, (str, bytes, bytearray, Mapping))
        or output is None
        or not isinstance(output, Iterable)
    ):
        raise FanoutError(
            f"dynamic block {block!r} returned {type(output).__name__}, which cannot be fanned out; "
            f"return {ACCEPTED_FORMS}"
        )
    else:
        values = output
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise FanoutError(
            f"dynamic block {block!r}: Fanout items must be iterable, got {type(values).__name__}"
        )
    items = (
        values if isinstance(values, list) and max_children is None else _take(values, max_children)
    )
    truncated, truncated_from = False, None
    if max_children is not None and len(items) > max_children:
        if on_overflow == "fail":
            what = "at least " if not isinstance(values, (list, tuple)) else ""
            count = len(values) if isinstance(values, (list, tuple)) else len(items)
            raise FanoutError(
                f"dynamic block {block!r} produced {what}{count} items, more than --max-children {max_children}"
            )
        truncated = True
        truncated_from = len(values) if isinstance(values, (list, tuple)) else None
        items = items[:max_children]
    meta_list: list[dict[str, Any] | None] | None = None
    if metadata is not None:
        meta_list = list(metadata) if not isinstance(metadata, list) else metadata
        if len(meta_list) < len(items):
            raise FanoutError(
                f"dynamic block {block!r}: {len(meta_list)} metadata entries for {len(items)} items"
            )
        meta_list = meta_list[: len(items)]
        for i, m in enumerate(meta_list):
            if m is not None and not isinstance(m, Mapping):
                raise FanoutError(
                    f"dynamic block {block!r}: metadata of item {i} is {type(m).__name__}, expected a dict"
                )
    names: list[str | None] | None = None
    if any(isinstance(v, Item) for v in items):
        names = [None] * len(items)
        items = list(items)
        meta_list = list(meta_list) if meta_list is not None else [None] * len(items)
        for i, v in enumerate(items):
            if isinstance(v, Item):
                items[i] = v.value
                names[i] = v.uuid
                if v.metadata is not None:
                    meta_list[i] = {**(meta_list[i] or {}), **v.metadata}
    if meta_list is not None:
        clean: list[dict[str, Any] | None] = []
        for i, m in enumerate(meta_list):
            if m and "block_uuid" in m:
                if names is None:
                    names = [None] * len(items)
                if names[i] is None:
                    names[i] = str(m["block_uuid"])
                m = {k: v for k, v in m.items() if k != "block_uuid"}
            clean.append(dict(m) if m else None)
        meta_list = clean if any(clean) else None
    return Items(
        values=items,
        names=names,
        metadata=meta_list,
        truncated=truncated,
        truncated_from=truncated_from,
    )


def make_suffixes(
    names: list[str | None] | None, size: int, block: str
) -> tuple[list[str] | None, list[str]]:
    """Name a fan-out's items: sanitised, unique; returns (suffixes or None, warnings).

    ``None`` means "the index", which costs no string per item until it is shown.
    """
    if names is None:
        return None, []
    suffixes: list[str] = []
    seen: set[str] = set()
    warnings: list[str] = []
    for i in range(size):
        raw = names[i]
        base = _UNSAFE.sub("_", raw) if raw else str(i)
        suffix = base
        while suffix in seen:
            suffix = f"{suffix}_{i}"
        if suffix != base:
            warnings.append(
                f"dynamic block {block!r}: item {i} is named {base!r} like an earlier item; "
                f"renamed to {suffix!r}"
            )
        seen.add(suffix)
        suffixes.append(suffix)
    return suffixes, warnings


def is_stream(output: Any) -> bool:
    """True for outputs whose items are produced lazily (generators and other iterators)."""
    return isinstance(output, Iterator)


def unpack(value: Any) -> tuple[Any, str | None, dict[str, Any] | None]:
    """One streamed item: (value, name or None, metadata without block_uuid, or None)."""
    if not isinstance(value, Item):
        return value, None, None
    meta = dict(value.metadata) if value.metadata else None
    name = value.uuid
    if meta and "block_uuid" in meta:
        name = name if name is not None else str(meta.pop("block_uuid"))
        meta.pop("block_uuid", None)
    return value.value, name, meta or None


class SuffixNamer:
    """Names items one at a time, as ``make_suffixes`` does for a whole list."""

    def __init__(self, block: str):
        self.block = block
        self.seen: set[str] = set()

    def name(self, raw: str | None, index: int) -> tuple[str, str | None]:
        """(suffix, warning or None)."""
        base = _UNSAFE.sub("_", raw) if raw else str(index)
        suffix = base
        while suffix in self.seen:
            suffix = f"{suffix}_{index}"
        self.seen.add(suffix)
        if suffix == base:
            return suffix, None
        return suffix, (
            f"dynamic block {self.block!r}: item {index} is named {base!r} like an earlier item; "
            f"renamed to {suffix!r}"
        )
