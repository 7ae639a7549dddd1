from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sync", "threads"])
def executor(request: pytest.FixtureRequest) -> str:
    """Expansion tests run on the synchronous and the thread executor alike."""
    return str(request.param)


@pytest.fixture(params=["sync", "threads", "processes", "dask"])
def any_executor(request: pytest.FixtureRequest) -> Any:
    """Conformance tests run on every executor: inline, threads, worker processes and the
    session's real Dask cluster (a ``DaskExecutor`` on it; ``run_cells`` closes it)."""
    if request.param == "dask":
        from mage_nb.engine import DaskExecutor

        return DaskExecutor(request.getfixturevalue("cluster").address)
    return str(request.param)


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real Dask cluster for the whole session (started on first use)."""
    from dask_cluster import Cluster

    running = Cluster(tmp_path_factory.mktemp("dask"))
    try:
        yield running
    finally:
        running.stop()
