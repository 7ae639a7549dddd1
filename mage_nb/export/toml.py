"""A small TOML writer for the exported ``pipeline.toml``.

Python reads TOML (``tomllib``) but does not write it, and the file needs only a few value
types, so this writes exactly those: strings, booleans, integers, finite or infinite floats,
arrays of those, tables of those, and arrays of tables. Anything else is a ``TypeError`` (a
bug in the caller, never silently written). Strings are always basic (double-quoted) strings
with every character that TOML does not allow raw escaped, so any header line survives.
``dumps`` checks its own output by reading it back with ``tomllib``.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}
# TOML basic strings may not hold these raw: control characters other than tab, and DEL.
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x08\x0a-\x1f\x7f]|\t')


def _string(text: str) -> str:
    def escape(match: re.Match[str]) -> str:
        char = match.group()
        return _ESCAPES.get(char) or f"\\u{ord(char):04x}"

    return '"' + _NEEDS_ESCAPE.sub(escape, text) + '"'


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _string(key)


def format_value(value: Any) -> str:
    """A value as TOML writes it (``true``, ``"text"``, ``[1, 2]``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = repr(value)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Sequence):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as a TOML value: {value!r}")


def _is_table_array(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and bool(value)
        and all(isinstance(v, Mapping) for v in value)
    )


def dumps(data: Mapping[str, Any], *, comment: str = "") -> str:
    """TOML text for ``data``: plain keys first, then tables, then arrays of tables.

    ``comment`` (lines of text) is written first, each line as a ``#`` comment.
    """
    lines = [f"# {line}".rstrip() for line in comment.splitlines()]
    if lines:
        lines.append("")
    plain = {k: v for k, v in data.items() if not isinstance(v, Mapping) and not _is_table_array(v)}
    lines.extend(f"{_key(k)} = {format_value(v)}" for k, v in plain.items())
    for key, value in data.items():
        if isinstance(value, Mapping):
            lines += ["", f"[{_key(key)}]"]
            lines.extend(f"{_key(k)} = {format_value(v)}" for k, v in value.items())
        elif _is_table_array(value):
            for table in value:
                lines += ["", f"[[{_key(key)}]]"]
                lines.extend(f"{_key(k)} = {format_value(v)}" for k, v in table.items())
    text = "\n".join(lines) + "\n"
    if not _same(tomllib.loads(text), data):
        raise AssertionError(f"TOML writer: {text!r} does not read back as {data!r}")
    return text


def _same(read: Any, written: Any) -> bool:
    if isinstance(written, float) and math.isnan(written):
        return isinstance(read, float) and math.isnan(read)
    if isinstance(written, Mapping):
        return (
            isinstance(read, dict)
            and set(read) == set(written)
            and all(_same(read[k], written[k]) for k in written)
        )
    if isinstance(written, Sequence) and not isinstance(written, str):
        return (
            isinstance(read, list)
            and len(read) == len(written)
            and all(_same(r, w) for r, w in zip(read, written, strict=True))
        )
    return type(read) is type(written) and bool(read == written)
