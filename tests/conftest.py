from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sync", "threads"])
def executor(request: pytest.FixtureRequest) -> str:
    """Expansion tests run on the synchronous and the thread executor alike."""
    return str(request.param)


@pytest.fixture
def root() -> Path:
    return ROOT
