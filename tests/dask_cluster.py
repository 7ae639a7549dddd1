"""A real Dask cluster for tests: a ``dask scheduler`` and two ``dask worker`` processes on
127.0.0.1 (free ports), stopped by process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DASK = Path(sys.executable).parent / "dask"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_this_process() -> None:
    """Runs in the child before ``dask`` starts: when the test session dies without
    stopping the cluster (killed by a CI timeout), the kernel sends the child SIGTERM, so
    no scheduler or worker outlives it (Linux ``PR_SET_PDEATHSIG``)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _wait_for_workers(address: str, count: int, timeout: float = 60) -> None:
    from distributed import Client

    with Client(address, timeout="20s", set_as_default=False) as client:
        client.wait_for_workers(count, timeout=timeout)


class Cluster:
    def __init__(self, tmp: Path):
        self.port = _free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.tmp = tmp
        self.scheduler = self._spawn(
            "scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"
        )
        self.workers = [self.add_worker() for _ in range(2)]
        _wait_for_workers(self.address, 2)

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        with (self.tmp / f"{args[0]}-{time.monotonic_ns()}.log").open("wb") as log:
            return subprocess.Popen(
                [str(DASK), *args],
                stdout=log,
                stderr=log,
                cwd=self.tmp,
                start_new_session=True,
                preexec_fn=_die_with_this_process if sys.platform == "linux" else None,
            )

    def add_worker(self) -> subprocess.Popen[bytes]:
        return self._spawn(
            "worker", self.address, "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"
        )

    def stop(self) -> None:
        for process in (*self.workers, self.scheduler):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in (*self.workers, self.scheduler):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
