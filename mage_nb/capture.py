"""Per-instance output capture: what an instance prints or displays stays with that instance.

Instances run concurrently on worker threads, and ``sys.stdout`` is one object for the whole
process; so ``install()`` puts a router in front of ``sys.stdout``, ``sys.stderr`` and (in a
kernel) the shell's display publisher. A write from a thread that is running an instance goes
to that instance's buffer; any other write goes where it always went. Sibling instances never
print into each other, nor into whichever cell happens to be running.

``InstanceCapture`` is the engine's ``OutputCapture``: ``begin`` before an instance runs,
``end`` after, on the same thread.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from typing import Any, TextIO

#: Per stream and instance; beyond it the text is cut with a note (a runaway print loop
#: must not hold the whole run's memory).
MAX_CHARS = 1_000_000
_local = threading.local()


@dataclass
class Captured:
    """What one instance wrote: stdout, stderr, and rich displays as (data, metadata)."""

    stdout: str = ""
    stderr: str = ""
    displays: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.stdout or self.stderr or self.displays)


class _Buffer:
    __slots__ = ("displays", "stderr", "stdout")

    def __init__(self) -> None:
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.displays: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def result(self) -> Captured | None:
        if not (self.stdout or self.stderr or self.displays):
            return None
        return Captured(_join(self.stdout), _join(self.stderr), self.displays)


def _join(parts: list[str]) -> str:
    text = "".join(parts)
    if len(text) > MAX_CHARS:
        return text[:MAX_CHARS] + f"\n… [{len(text) - MAX_CHARS:,} more characters not kept]\n"
    return text


def _current() -> _Buffer | None:
    return getattr(_local, "buffer", None)


class _StreamRouter:
    """Stands in for sys.stdout / sys.stderr; everything but ``write`` goes to the original."""

    def __init__(self, original: TextIO, which: str):
        self._original = original
        self._which = which

    def write(self, text: str) -> int:
        buffer = _current()
        if buffer is None:
            return self._original.write(text)
        getattr(buffer, self._which).append(text)
        return len(text)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if _current() is None:
            self._original.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


class _DisplayRouter:
    """Stands in for an IPython shell's ``display_pub`` (as IPython's own capture does)."""

    def __init__(self, original: Any):
        self._original = original

    def publish(
        self, data: dict[str, Any], metadata: dict[str, Any] | None = None, **kwargs: Any
    ) -> Any:
        buffer = _current()
        if buffer is None:
            return self._original.publish(data, metadata=metadata, **kwargs)
        buffer.displays.append((dict(data), dict(metadata or {})))
        return None

    def clear_output(self, wait: bool = False) -> Any:
        if _current() is None:
            return self._original.clear_output(wait)
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


def install(shell: Any = None) -> None:
    """Route writes and displays made by running instances; idempotent."""
    if not isinstance(sys.stdout, _StreamRouter):
        sys.stdout = _StreamRouter(sys.stdout, "stdout")
    if not isinstance(sys.stderr, _StreamRouter):
        sys.stderr = _StreamRouter(sys.stderr, "stderr")
    if shell is not None and not isinstance(getattr(shell, "display_pub", None), _DisplayRouter):
        shell.display_pub = _DisplayRouter(shell.display_pub)


class InstanceCapture:
    """The engine's ``OutputCapture``: one buffer per running instance, per thread."""

    def __init__(self, shell: Any = None):
        self.shell = shell

    def begin(self, instance: Any) -> Any:
        previous = _current()
        _local.buffer = _Buffer()
        return previous

    def end(self, token: Any) -> Captured | None:
        buffer = _current()
        _local.buffer = token
        return buffer.result() if buffer is not None else None
