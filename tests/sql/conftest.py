"""A real PostgreSQL server for the SQL block tests.

``initdb`` makes a throw-away cluster in a temporary directory; the server listens on
127.0.0.1 on a free port, with its socket in that directory and trust authentication (a test
cluster nobody else can reach). PostgreSQL refuses to run as root, so when the tests run as
root (CI) the server binaries run as the ``postgres`` system user; otherwise as the current
user. Without an ``initdb`` binary every test that asks for a server is skipped.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import psycopg

USER = "mage"
DATABASE = "shop"
_START_TIMEOUT = 30


def _bindir() -> Path | None:
    """Debian's versioned bin directory (newest first), else whatever is on PATH."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
        reverse=True,
    )
    if candidates:
        return Path(candidates[0]).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _run_as() -> tuple[list[str], str | None]:
    """The command prefix that runs the server binaries, and the user owning the files."""
    if os.geteuid() != 0:
        return [], None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no 'postgres' system user to run PostgreSQL")
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--"], "postgres"
    if shutil.which("setpriv"):
        entry = pwd.getpwnam("postgres")
        return [
            "setpriv",
            f"--reuid={entry.pw_uid}",
            f"--regid={entry.pw_gid}",
            "--init-groups",
        ], "postgres"
    pytest.skip("running as root and neither runuser nor setpriv can drop to 'postgres'")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One throw-away cluster: ``start()``, ``stop()`` (``kill()`` = immediate), ``url``."""

    def __init__(self, bindir: Path, prefix: list[str], owner: str | None):
        self.bindir = bindir
        self.prefix = prefix
        self.base = Path(tempfile.mkdtemp(prefix="mage_nb_pg_"))
        os.chmod(self.base, 0o700)
        if owner is not None:
            shutil.chown(self.base, owner, owner)
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.port = free_port()
        self.user = USER
        self.database = DATABASE
        self.url = f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{DATABASE}"
        self.running = False
        self._env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        for name in ("PGDATA", "PGPORT", "PGHOST", "PGUSER", "PGDATABASE", "PGPASSWORD"):
            self._env.pop(name, None)
        self._initdb()

    # -- process control ------------------------------------------------------------------
    def _cmd(self, tool: str, *args: str, timeout: float = _START_TIMEOUT) -> None:
        cmd = [*self.prefix, str(self.bindir / tool), *args]
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=self._env, check=False
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n{log}"
            )

    def _initdb(self) -> None:
        self._cmd(
            "initdb",
            "-D",
            str(self.data),
            "--auth=trust",
            "--username=postgres",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# mage_nb tests\n"
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.base}'\n"
                "fsync = off\n"  # commits still reach the OS: they survive a killed server
                "max_connections = 60\n"
            )

    def start(self) -> None:
        self._cmd("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30", "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``mode="immediate"`` kills it (clients lose their connections)."""
        self._cmd("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")
        self.running = False

    def kill(self) -> None:
        self.stop("immediate")

    def connect(
        self, *, dbname: str | None = None, user: str | None = None
    ) -> psycopg.Connection[Any]:
        """A psycopg connection (autocommit) for setting up data."""
        import psycopg

        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=user or self.user,
            dbname=dbname or self.database,
            autocommit=True,
            connect_timeout=10,
        )

    def execute(
        self, sql: str, params: tuple[object, ...] | None = None, *, dbname: str | None = None
    ) -> list[tuple[Any, ...]]:
        """Run one statement as the test role; return its rows (if any)."""
        with self.connect(dbname=dbname) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description is not None else []

    def _bootstrap(self) -> None:
        with self.connect(dbname="postgres", user="postgres") as conn:
            conn.execute(f"create role {USER} login")
            conn.execute(f"create database {DATABASE} owner {USER}")

    def create_database(self, name: str) -> str:
        """A fresh database owned by the test role; returns its SQLAlchemy URL."""
        with self.connect(dbname="postgres", user="postgres") as conn:
            conn.execute(f"drop database if exists {name}")
            conn.execute(f"create database {name} owner {USER}")
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{name}"

    def destroy(self) -> None:
        if self.running:
            try:
                self.stop("immediate")
            except Exception:
                pid_file = self.data / "postmaster.pid"
                if pid_file.exists():  # the postmaster this object started
                    pid = int(pid_file.read_text().split()[0])
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, 9)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_factory() -> Iterator[Callable[[], PostgresServer]]:
    """Makes started servers (role ``mage``, database ``shop``); all are removed at the end."""
    bindir = _bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        pytest.skip(
            "no PostgreSQL server binaries (initdb/pg_ctl) found: install Debian's 'postgresql' "
            "(scripts/system-deps.sh does, via `make install`)"
        )
    prefix, owner = _run_as()
    servers: list[PostgresServer] = []

    def make() -> PostgresServer:
        started = time.monotonic()
        server = PostgresServer(bindir, prefix, owner)
        servers.append(server)
        server.start()
        server._bootstrap()
        assert time.monotonic() - started < _START_TIMEOUT
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.destroy()


@pytest.fixture(scope="session")
def postgres(postgres_factory: Callable[[], PostgresServer]) -> PostgresServer:
    """The shared server of the session (tests that stop it use their own instead)."""
    return postgres_factory()
