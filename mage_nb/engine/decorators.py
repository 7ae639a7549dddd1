"""Mage-style decorators for function-style block bodies.

They only mark a function; the engine finds the marked function by the names used in the
cell's source and calls it once per instance. They exist in every block body without an
import and are importable from ``mage_nb``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: Decorator names that make a cell function style, and the role each marks.
ROLE_DECORATORS = ("loader", "transformer", "exporter", "custom", "data_loader", "data_exporter")
TEST_DECORATOR = "test"


def _marker(role: str) -> Callable[[F], F]:
    def mark(fn: F) -> F:
        fn.__mage_nb_role__ = role  # type: ignore[attr-defined]
        return fn

    mark.__name__ = role
    mark.__qualname__ = role
    mark.__doc__ = f"Mark the function that a function-style block calls (as Mage's @{role})."
    return mark


loader = _marker("loader")
transformer = _marker("transformer")
exporter = _marker("exporter")
custom = _marker("custom")
data_loader = _marker("data_loader")
data_exporter = _marker("data_exporter")
test = _marker("test")
test.__doc__ = "Mark a function called with the block's output after every instance."

#: What a block body finds bound without importing anything.
PROVIDED: dict[str, Callable[..., Any]] = {
    "loader": loader,
    "transformer": transformer,
    "exporter": exporter,
    "custom": custom,
    "data_loader": data_loader,
    "data_exporter": data_exporter,
    "test": test,
}
