"""Fixtures for the browser tests: a private JupyterLab server and headless Debian Chromium.

Nothing is downloaded and nothing global changes: the server binds 127.0.0.1 on a free port,
serves a temporary copy of ``notebooks/``, and keeps its config, data, runtime, settings and
workspaces in a temporary directory (the venv's own ``share/jupyter`` stays on the search path,
so the prebuilt anywidget and ipywidgets lab extensions are found). Settings that would reach
the network (news, update checks, the PyPI extension manager) are off. Chromium is Debian's
``chromium`` driven by Playwright's Python API with ``executable_path``. A test opens a notebook
with ``open_notebook``, waits for its kernel with ``kernel_idle`` and fails with the browser
console's last lines through ``fail``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SERVER_START_S = 60
SECOND = 1000  # Playwright waits are in milliseconds

# Plugin settings written as the user's settings: no news or update checks (network), and no
# notebook windowing, so every cell stays in the DOM while the test looks for it.
USER_SETTINGS: dict[str, dict[str, Any]] = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}
# Disabled in the server's page config: the news/update plugin and the extension manager.
DISABLED_PLUGINS = {
    "@jupyterlab/apputils-extension:announcements": True,
    "@jupyterlab/extensionmanager-extension:plugin": True,
}
# The notebook's kernel status, or "dialog" while JupyterLab asks which kernel to start (the
# example notebooks carry no kernelspec metadata). Needs LabApp.expose_app_in_browser.
KERNEL_STATE = """() => {
    if (document.querySelector(".jp-Dialog")) return "dialog";
    const widget = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const session = widget && widget.sessionContext && widget.sessionContext.session;
    return session && session.kernel ? session.kernel.status : "";
}"""


@dataclass
class LabServer:
    url: str
    token: str
    root_dir: Path
    log: Path

    def lab_url(self, path: str) -> str:
        return f"{self.url}/lab/tree/{path}?token={self.token}"

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def _wait_for_status(server: LabServer, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + SERVER_START_S
    request = urllib.request.Request(
        f"{server.url}/api/status", headers={"Authorization": f"token {server.token}"}
    )
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    pytest.fail(f"JupyterLab did not answer /api/status in {SERVER_START_S}s:\n{server.log_tail()}")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, or the test is skipped (before any server starts)."""
    if CHROMIUM is None:
        pytest.skip(
            "Debian's chromium is not installed; run `make install` (scripts/system-deps.sh)"
        )
    return CHROMIUM


@pytest.fixture(scope="module")
def lab_server(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """JupyterLab on 127.0.0.1:<free port> serving a temporary copy of notebooks/."""
    base = tmp_path_factory.mktemp("jupyterlab")
    root_dir = base / "notebooks"
    shutil.copytree(ROOT / "notebooks", root_dir)
    home = {name: base / name for name in ("config", "data", "runtime", "ipython")}
    for path in home.values():
        path.mkdir()
    settings_dir, workspaces_dir = base / "settings", base / "workspaces"
    for name, data in USER_SETTINGS.items():
        _write_json(settings_dir / name, data)
    _write_json(
        home["config"] / "labconfig" / "page_config.json", {"disabledExtensions": DISABLED_PLUGINS}
    )
    workspaces_dir.mkdir()

    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(home["config"]),
        JUPYTER_DATA_DIR=str(home["data"]),
        JUPYTER_RUNTIME_DIR=str(home["runtime"]),
        IPYTHONDIR=str(home["ipython"]),
        JUPYTERLAB_SETTINGS_DIR=str(settings_dir),
        JUPYTERLAB_WORKSPACES_DIR=str(workspaces_dir),
        JUPYTER_PLATFORM_DIRS="1",
        PYTHONUNBUFFERED="1",
        # the kernelspec's argv is plain "python": make it this interpreter
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    env.pop("JUPYTER_PATH", None)
    port, token = _free_port(), secrets.token_hex(16)
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root_dir}",
        "--ServerApp.open_browser=False",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
        "--LabApp.expose_app_in_browser=True",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # containers and CI machines often run as root
    log = base / "server.log"
    server = LabServer(url=f"http://127.0.0.1:{port}", token=token, root_dir=root_dir, log=log)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=base, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_for_status(server, proc)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, ARTIFACTS / "jupyterlab-server.log")


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    """Headless Debian Chromium (Playwright's own browsers are never installed)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def artifacts() -> Path:
    """artifacts/browser/ (git-ignored): screenshots and logs the browser tests keep."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def console_log() -> list[str]:
    """What the page printed to its console, and its uncaught errors (``[pageerror] ...``)."""
    return []


@pytest.fixture
def page(
    browser: Any, console_log: list[str], artifacts: Path, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """A fresh page (Playwright waits 30 s by default); on failure its screenshot and console log
    are kept in artifacts/browser/."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30 * SECOND)
    page.on("console", lambda msg: console_log.append(f"[{msg.type}] {msg.text}"))
    page.on("pageerror", lambda exc: console_log.append(f"[pageerror] {exc}"))
    try:
        yield page
    finally:
        report = getattr(request.node, "report_call", None)
        if report is None or report.failed:
            name = request.node.name
            try:
                page.screenshot(path=str(artifacts / f"{name}-failure.png"), full_page=True)
            except Exception as exc:  # the page may be gone; the log is still worth keeping
                console_log.append(f"[test] failure screenshot not taken: {exc}")
            (artifacts / f"{name}-console.log").write_text(
                "\n".join(console_log) + "\n", encoding="utf-8"
            )
        context.close()


@pytest.fixture
def fail(console_log: list[str]) -> Callable[[str, Exception], NoReturn]:
    """``fail(what, exc)``: fail the test saying what went wrong, with the last console lines."""

    def fail_(what: str, exc: Exception) -> NoReturn:
        recent = "\n".join(console_log[-15:]) or "(console empty)"
        pytest.fail(f"{what}: {exc}\nlast browser console lines:\n{recent}", pytrace=False)

    return fail_


@pytest.fixture
def kernel_idle(page: Any) -> Callable[..., None]:
    """``kernel_idle(timeout_s=45)``: wait for the current notebook's kernel to be idle,
    accepting the kernel dialog (Python 3) if it shows."""
    from playwright.sync_api import expect

    def kernel_idle_(timeout_s: float = 45) -> None:
        handle = page.wait_for_function(
            f"() => {{ const s = ({KERNEL_STATE})(); return (s === 'idle' || s === 'dialog') && s; }}",
            timeout=timeout_s * SECOND,
        )
        if handle.json_value() == "dialog":
            dialog = page.locator(".jp-Dialog")
            expect(dialog).to_contain_text("Select Kernel")  # and not some other question
            dialog.locator(".jp-Dialog-button.jp-mod-accept").click()  # "Select"
            dialog.wait_for(state="detached")
            page.wait_for_function(
                f"() => ({KERNEL_STATE})() === 'idle'", timeout=timeout_s * SECOND
            )

    return kernel_idle_


@pytest.fixture
def open_notebook(
    lab_server: LabServer,
    page: Any,
    kernel_idle: Callable[..., None],
    fail: Callable[[str, Exception], NoReturn],
) -> Callable[[str], None]:
    """``open_notebook(path)``: the page opens a notebook of the server's notebooks/ copy and
    waits for its kernel to be idle; the test fails (with the console) if it does not."""
    from playwright.sync_api import Error

    def open_notebook_(path: str) -> None:
        page.goto(lab_server.lab_url(path))
        try:
            page.locator(".jp-NotebookPanel").first.wait_for(state="visible", timeout=45 * SECOND)
            kernel_idle()
        except (Error, AssertionError) as exc:
            fail(f"{path} did not open with an idle kernel", exc)

    return open_notebook_
