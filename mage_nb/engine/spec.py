"""Block specs: what a ``%%block KIND NAME [options]`` header says.

One parser serves the cell magics, the notebook loader and the exporters, so a header means
the same thing wherever it is read. Every option of SPEC §1.1 is parsed and validated here,
including the ones whose behaviour later layers add (executors, windows, connections).

Invariants: a ``BlockSpec`` is immutable and always valid on its own; checks that need the
other blocks (unknown upstreams, cycles, ``--reduce`` outside a fan-out) live in ``dag``.
"""

from __future__ import annotations

import argparse
import keyword
import shlex
from dataclasses import dataclass, field

from .errors import HeaderError

KINDS = ("loader", "transformer", "exporter", "custom", "sql")
#: Cell magics and the kind they stand for (``%%block`` takes the kind as its first word).
MAGIC_KINDS = {"loader": "loader", "transformer": "transformer", "exporter": "exporter"}
BUILTIN_REDUCERS = ("list", "concat", "sum", "count", "merge")
EXECUTORS = ("threads", "processes", "dask")
#: Names a block may not take: they are bound in every block body.
RESERVED_NAMES = frozenset(
    {
        "context",
        "loader",
        "transformer",
        "exporter",
        "custom",
        "data_loader",
        "data_exporter",
        "test",
    }
)


@dataclass(frozen=True)
class BlockSpec:
    """A block as its header and body describe it."""

    kind: str
    name: str
    source: str = ""
    dynamic: bool = False
    reduce: str | None = None
    reduce_policy: str = "all"
    upstream: tuple[str, ...] | None = None
    retries: int = 0
    retry_delay: float = 0.0
    timeout: float | None = None
    max_concurrency: int | None = None
    connection: str | None = None
    max_children: int | None = None
    on_overflow: str = "fail"
    window: int | None = None
    executor: str | None = None
    no_run: bool = False
    #: Where the block came from ("cell 3", a cell id, a file): used in error messages.
    origin: str = ""
    header: str = field(default="", compare=False)


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise HeaderError(message)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError(text)
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(text)
    return value


# argparse names the type in its message; give the checkers readable names.
_positive_int.__name__ = "positive integer"
_non_negative_int.__name__ = "non-negative integer"
_non_negative_float.__name__ = "non-negative number"
_positive_float.__name__ = "positive number"


def _build_parser() -> _Parser:
    p = _Parser(prog="%%block", add_help=False, allow_abbrev=False)
    p.add_argument("--dynamic", action="store_true")
    p.add_argument("--reduce", nargs="?", const="list", default=None, metavar="STRATEGY")
    p.add_argument("--reduce-policy", choices=("all", "partial"), default=None)
    p.add_argument("--upstream", nargs="+", default=None, metavar="NAME")
    p.add_argument("--retries", type=_non_negative_int, default=0)
    p.add_argument("--retry-delay", type=_non_negative_float, default=0.0)
    p.add_argument("--timeout", type=_positive_float, default=None)
    p.add_argument("--max-concurrency", type=_positive_int, default=None)
    p.add_argument("--connection", default=None)
    p.add_argument("--max-children", type=_positive_int, default=None)
    p.add_argument("--on-overflow", choices=("fail", "truncate"), default=None)
    p.add_argument("--window", type=_positive_int, default=None)
    p.add_argument("--executor", choices=EXECUTORS, default=None)
    p.add_argument("--no-run", action="store_true")
    return p


_PARSER = _build_parser()


def _check_name(name: str, what: str) -> None:
    if not name.isidentifier() or keyword.iskeyword(name):
        raise HeaderError(f"{what} {name!r} is not a valid Python identifier")


def parse_header(line: str, *, source: str = "", origin: str = "") -> BlockSpec:
    """Parse a magic line such as ``%%block loader users --dynamic``.

    Accepts ``%%block KIND NAME``, the aliases ``%%loader``/``%%transformer``/``%%exporter``,
    and the same text without the leading ``%%`` (as IPython hands a cell magic its line).
    """
    text = line.strip()
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise HeaderError(f"cannot read the header {text!r}: {exc}") from None
    if not words:
        raise HeaderError("empty block header: expected '%%block KIND NAME [options]'")
    magic = words[0].removeprefix("%%")
    if magic == "block":
        if len(words) < 2:
            raise HeaderError(
                f"missing KIND: expected '%%block KIND NAME', KIND one of {', '.join(KINDS)}"
            )
        kind, rest = words[1], words[2:]
        if kind not in KINDS:
            raise HeaderError(f"unknown block kind {kind!r}: expected one of {', '.join(KINDS)}")
    elif magic in MAGIC_KINDS:
        kind, rest = MAGIC_KINDS[magic], words[1:]
    else:
        raise HeaderError(
            f"not a block header: {words[0]!r} (expected %%block, %%loader, %%transformer or %%exporter)"
        )
    if not rest or rest[0].startswith("--"):
        raise HeaderError(
            f"missing NAME: expected '%%{magic} {'' if magic != 'block' else kind + ' '}NAME [options]'"
        )
    name, options = rest[0], rest[1:]
    _check_name(name, "block NAME")
    if name in RESERVED_NAMES:
        raise HeaderError(f"block NAME {name!r} is reserved (it is bound in every block body)")
    return _spec_from_options(kind, name, options, source=source, origin=origin, header=text)


def _spec_from_options(
    kind: str, name: str, options: list[str], *, source: str, origin: str, header: str
) -> BlockSpec:
    ns, extra = _PARSER.parse_known_args(options)
    if extra:
        raise HeaderError(f"block {name!r}: unexpected argument(s) {' '.join(extra)!r}")
    reduce = ns.reduce
    if reduce is not None and not reduce.isidentifier():
        raise HeaderError(
            f"block {name!r}: reduce strategy {reduce!r} is neither one of "
            f"{', '.join(BUILTIN_REDUCERS)} nor the name of a callable"
        )
    if ns.reduce_policy is not None and reduce is None:
        raise HeaderError(f"block {name!r}: --reduce-policy needs --reduce")
    if ns.connection is not None and kind != "sql":
        raise HeaderError(
            f"block {name!r}: --connection is only for sql blocks (this one is a {kind})"
        )
    for flag, value in (("--max-children", ns.max_children), ("--on-overflow", ns.on_overflow)):
        if value is not None and not ns.dynamic:
            raise HeaderError(f"block {name!r}: {flag} is only for --dynamic blocks")
    if ns.window is not None and not ns.dynamic:
        raise HeaderError(f"block {name!r}: --window is only for --dynamic blocks")
    upstream = None
    if ns.upstream is not None:
        for up in ns.upstream:
            _check_name(up, f"block {name!r}: --upstream")
        repeated = sorted({up for up in ns.upstream if ns.upstream.count(up) > 1})
        if repeated:
            raise HeaderError(
                f"block {name!r}: --upstream names {', '.join(map(repr, repeated))} twice"
            )
        upstream = tuple(ns.upstream)
    return BlockSpec(
        kind=kind,
        name=name,
        source=source,
        dynamic=ns.dynamic,
        reduce=reduce,
        reduce_policy=ns.reduce_policy or "all",
        upstream=upstream,
        retries=ns.retries,
        retry_delay=ns.retry_delay,
        timeout=ns.timeout,
        max_concurrency=ns.max_concurrency,
        connection=ns.connection,
        max_children=ns.max_children,
        on_overflow=ns.on_overflow or "fail",
        window=ns.window,
        executor=ns.executor,
        no_run=ns.no_run,
        origin=origin,
        header=header,
    )


BLOCK_MAGICS = ("block", *MAGIC_KINDS)


def split_block_cell(cell_source: str) -> tuple[str, str] | None:
    """Split a cell into (header line, body) if its first line is a block magic, else None."""
    first, _, body = cell_source.partition("\n")
    word = first.strip().split(maxsplit=1)[0] if first.strip() else ""
    if word.startswith("%%") and word[2:] in BLOCK_MAGICS:
        return first, body
    return None
