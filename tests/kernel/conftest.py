"""A fresh IPython shell with ``%load_ext mage_nb`` per test, and helpers to run cells in it."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import ExecutionResult, InteractiveShell
from traitlets.config import Config


@pytest.fixture
def shell(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[InteractiveShell]:
    """A new InteractiveShell with the extension loaded; the capture routers are undone after."""
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path_factory.mktemp("ipython")))
    stdout, stderr = sys.stdout, sys.stderr
    InteractiveShell.clear_instance()
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    instance = InteractiveShell.instance(config=config)
    try:
        instance.run_line_magic("load_ext", "mage_nb")
        yield instance
    finally:
        magics = instance.magics_manager.registry.get("PipelineMagics")
        if magics is not None:
            magics.session.cancel()
            background = magics._background
            if background is not None:
                background.join(10)
        for value in list(instance.user_ns.values()):
            if isinstance(value, threading.Event):
                value.set()  # let blocked block bodies return
        InteractiveShell.clear_instance()
        sys.stdout, sys.stderr = stdout, stderr


@pytest.fixture
def magics(shell: InteractiveShell) -> Any:
    """The PipelineMagics instance, with the live widget off (tests not about the widget)."""
    instance = shell.magics_manager.registry["PipelineMagics"]
    instance.show_widget = False
    return instance


@pytest.fixture
def session(magics: Any) -> Any:
    return magics.session


@pytest.fixture
def cell(shell: InteractiveShell, magics: Any) -> Callable[..., ExecutionResult]:
    """Run a cell that must succeed; return its ExecutionResult."""

    def run(source: str, cell_id: str | None = None) -> ExecutionResult:
        result = shell.run_cell(source, cell_id=cell_id)
        result.raise_error()
        return result

    return run


@pytest.fixture
def usage_error(shell: InteractiveShell, magics: Any) -> Callable[..., str]:
    """Run a cell that must fail with a one-line UsageError; return the message."""

    def run(source: str, cell_id: str | None = None) -> str:
        result = shell.run_cell(source, cell_id=cell_id)
        error = result.error_in_exec or result.error_before_exec
        assert isinstance(error, UsageError), f"expected a UsageError, got {error!r}"
        message = str(error)
        assert message.strip(), "empty UsageError"
        assert "\n" not in message.strip(), f"UsageError is not one line: {message!r}"
        return message

    return run
