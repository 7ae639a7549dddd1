"""Reduce strategies: how the outputs of one closed fan-out become one value (SPEC §2.6, §8).

Every strategy is a ``Reducer`` with ``initial() / step(acc, value) / finish(acc)``: the
scheduler folds each output as it arrives (in item order), so neither a fan-out's items nor
its outputs need to be held at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .errors import GraphError
from .spec import BUILTIN_REDUCERS


class Reducer(Protocol):
    def initial(self) -> Any: ...
    def step(self, acc: Any, value: Any) -> Any: ...
    def finish(self, acc: Any) -> Any: ...


class ListReducer:
    """Mage's default: list outputs are extended into the result, others appended."""

    def initial(self) -> list[Any]:
        return []

    def step(self, acc: list[Any], value: Any) -> list[Any]:
        if isinstance(value, list):
            acc.extend(value)
        else:
            acc.append(value)
        return acc

    def finish(self, acc: list[Any]) -> list[Any]:
        return acc


class ConcatReducer:
    """DataFrames and Arrow tables concatenated into one; lists concatenated."""

    def initial(self) -> list[Any]:
        return []

    def step(self, acc: list[Any], value: Any) -> list[Any]:
        acc.append(value)
        return acc

    def finish(self, acc: list[Any]) -> Any:
        if not acc:
            return []
        module = type(acc[0]).__module__.split(".")[0]
        if module == "pandas":
            import pandas as pd

            return pd.concat(acc, ignore_index=True)
        if module == "pyarrow":
            import pyarrow as pa

            return pa.concat_tables(acc)
        if module == "polars":
            import polars as pl

            return pl.concat(acc)
        out: list[Any] = []
        for value in acc:
            if not isinstance(value, (list, tuple)):
                raise TypeError(
                    f"reduce strategy 'concat' takes DataFrames, Arrow tables or lists, got {type(value).__name__}"
                )
            out.extend(value)
        return out


class SumReducer:
    def initial(self) -> Any:
        return 0

    def step(self, acc: Any, value: Any) -> Any:
        return acc + value

    def finish(self, acc: Any) -> Any:
        return acc


class CountReducer:
    def initial(self) -> int:
        return 0

    def step(self, acc: int, value: Any) -> int:
        return acc + 1

    def finish(self, acc: int) -> int:
        return acc


class MergeReducer:
    """Dicts merged in instance order; later wins."""

    def initial(self) -> dict[Any, Any]:
        return {}

    def step(self, acc: dict[Any, Any], value: Any) -> dict[Any, Any]:
        if not isinstance(value, Mapping):
            raise TypeError(f"reduce strategy 'merge' takes dicts, got {type(value).__name__}")
        acc.update(value)
        return acc

    def finish(self, acc: dict[Any, Any]) -> dict[Any, Any]:
        return acc


class CallableReducer:
    """A plain callable given the ordered list of outputs."""

    def __init__(self, fn: Callable[[list[Any]], Any]):
        self.fn = fn

    def initial(self) -> list[Any]:
        return []

    def step(self, acc: list[Any], value: Any) -> list[Any]:
        acc.append(value)
        return acc

    def finish(self, acc: list[Any]) -> Any:
        return self.fn(acc)


_BUILTIN: dict[str, Callable[[], Reducer]] = {
    "list": ListReducer,
    "concat": ConcatReducer,
    "sum": SumReducer,
    "count": CountReducer,
    "merge": MergeReducer,
}
assert tuple(_BUILTIN) == BUILTIN_REDUCERS


def _is_incremental(obj: Any) -> bool:
    return all(callable(getattr(obj, m, None)) for m in ("initial", "step", "finish"))


def resolve_strategy(
    strategy: str, block: str, namespace: Mapping[str, Any]
) -> Callable[[], Reducer]:
    """Return a factory that makes one reducer per group (so a class is instantiated per group).

    Raises ``GraphError`` before anything runs for a name that is neither built in nor a
    callable or reducer object in the notebook's namespace.
    """
    if strategy in _BUILTIN:
        return _BUILTIN[strategy]
    if strategy not in namespace:
        raise GraphError(
            f"block {block!r}: unknown reduce strategy {strategy!r}: use one of "
            f"{', '.join(BUILTIN_REDUCERS)}, or the name of a callable defined in the notebook"
        )
    obj = namespace[strategy]
    if isinstance(obj, type):
        if not _is_incremental(obj):
            raise GraphError(
                f"block {block!r}: reducer class {strategy!r} needs initial(), step() and finish()"
            )
        return obj
    if _is_incremental(obj):
        return lambda: obj
    if callable(obj):
        return lambda: CallableReducer(obj)
    raise GraphError(
        f"block {block!r}: reduce strategy {strategy!r} names a {type(obj).__name__}, "
        "not a callable or an initial/step/finish reducer"
    )
