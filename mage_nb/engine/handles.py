"""Outputs that stay on the Dask workers which computed them.

A large output (``DaskExecutor(keep_on_workers=...)`` bytes or more) is not sent back to the
kernel: the worker keeps it, the scheduler holds a ``RemoteOutput`` (a Dask future plus a
preview), and a downstream instance that runs on Dask gets the future as an argument of its
task, so Dask moves the data from worker to worker. The value reaches this process only
when something here needs it: a block that runs locally, a reduce strategy other than
``list``, or the end of a run that keeps its outputs.

Invariant: the engine never gives a block body a ``RemoteOutput``; ``resolve_inputs`` (local
executors) or Dask itself (remote) replaces each by its value first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class KeptOnWorker:
    """What a worker sends back instead of a large output (plain data)."""

    token: str
    address: str
    nbytes: int
    type_name: str
    is_list: bool
    preview: str


class Boxed:
    """A kept output as a Dask task result. Dask serialises a bare list or dict item by
    item (seconds for a list of 400,000 ints); boxed, it is one pickle."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:
        return (Boxed, (self.value,))


class RemoteOutput:
    """An output held by a Dask worker; ``resolve()`` fetches it (and blocks until then)."""

    __slots__ = ("future", "is_list", "nbytes", "preview", "type_name")

    def __init__(self, future: Any, kept: KeptOnWorker):
        self.future = future
        self.nbytes = kept.nbytes
        self.type_name = kept.type_name
        self.is_list = kept.is_list
        self.preview = kept.preview

    def resolve(self) -> Any:
        return self.future.result().value

    def __repr__(self) -> str:
        return f"{self.preview} <{self.type_name}, {self.nbytes:,} bytes, kept on a Dask worker>"


@dataclass(frozen=True)
class Ref:
    """Placeholder in a shipped task's inputs for the n-th future passed beside it."""

    index: int


def _has_handle(value: Any) -> bool:
    if type(value) is RemoteOutput:
        return True
    return type(value) is list and any(type(v) is RemoteOutput for v in value)


def map_handles(value: Any, fn: Any) -> Any:
    """``value`` with each handle (itself, or an item of a reduced list) replaced by fn(h)."""
    if type(value) is RemoteOutput:
        return fn(value)
    if type(value) is list and any(type(v) is RemoteOutput for v in value):
        return [fn(v) if type(v) is RemoteOutput else v for v in value]
    return value


def resolve(value: Any) -> Any:
    """The value with every handle fetched from its worker."""
    return map_handles(value, RemoteOutput.resolve)


def resolve_inputs(inputs: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
    if inputs is None or not any(_has_handle(v) for v in inputs):
        return inputs
    return tuple(resolve(v) for v in inputs)


def detach(inputs: tuple[Any, ...], futures: list[Any]) -> tuple[Any, ...]:
    """Inputs with each handle replaced by a ``Ref`` to its future (appended to ``futures``)."""
    if not any(_has_handle(v) for v in inputs):
        return inputs

    def ref(handle: RemoteOutput) -> Ref:
        futures.append(handle.future)
        return Ref(len(futures) - 1)

    return tuple(map_handles(v, ref) for v in inputs)


def attach(inputs: tuple[Any, ...], values: tuple[Any, ...]) -> tuple[Any, ...]:
    """On the worker: each ``Ref`` replaced by the value Dask resolved for it."""

    def value_of(item: Any) -> Any:
        if type(item) is Ref:
            return values[item.index].value
        if type(item) is list and any(type(v) is Ref for v in item):
            return [values[v.index].value if type(v) is Ref else v for v in item]
        return item

    return tuple(value_of(v) for v in inputs)


def collect(value: Any, into: list[RemoteOutput]) -> None:
    """Append the handles in ``value`` (itself or items of a list) to ``into``."""
    if type(value) is RemoteOutput:
        into.append(value)
    elif type(value) is list:
        into.extend(v for v in value if type(v) is RemoteOutput)
