from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def mage_python() -> Path:
    """The Python of the Mage 0.9.80 virtualenv (built once per machine; ~100 s cold)."""
    from mage_support import mage_venv_python

    return mage_venv_python()
