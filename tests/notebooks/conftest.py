"""Execute the example notebooks in a real Jupyter kernel (nbclient), once per test session.

Nothing global changes: two kernelspecs are written to a temporary directory put first on
``JUPYTER_PATH`` for the session. Both start ``sys.executable -m ipykernel_launcher`` (this
venv's ipykernel, whatever ``python3`` would resolve to) with a private ``IPYTHONDIR`` (no
user profile or startup scripts). The second one also has an empty ``PATH``, so the kernel
cannot find Graphviz's ``dot`` and ``%pipeline graph`` must fall back to DOT text.

Executed notebooks are written to ``artifacts/executed/`` for a person to open.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
ARTIFACTS = ROOT / "artifacts" / "executed"
KERNEL = "mage-nb-test"
KERNEL_NO_DOT = "mage-nb-test-no-dot"
CELL_TIMEOUT_S = 120

Execute = Callable[..., nbformat.NotebookNode]


def _write_kernelspec(kernels: Path, name: str, env: dict[str, str]) -> None:
    spec_dir = kernels / name
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python ({name})",
        "language": "python",
        "env": env,
        "metadata": {"debugger": False},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))


@pytest.fixture(scope="session")
def kernelspecs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Kernel names for the tests: ``default`` (PATH as is) and ``no_dot`` (empty PATH)."""
    base = tmp_path_factory.mktemp("jupyter")
    kernels = base / "share" / "kernels"
    ipython_dir = base / "ipython"
    ipython_dir.mkdir()
    empty_bin = base / "empty-bin"
    empty_bin.mkdir()
    _write_kernelspec(kernels, KERNEL, {"IPYTHONDIR": str(ipython_dir)})
    _write_kernelspec(
        kernels, KERNEL_NO_DOT, {"IPYTHONDIR": str(ipython_dir), "PATH": str(empty_bin)}
    )
    with pytest.MonkeyPatch.context() as patch:
        previous = os.environ.get("JUPYTER_PATH")
        paths = [str(base / "share"), *([previous] if previous else [])]
        patch.setenv("JUPYTER_PATH", os.pathsep.join(paths))
        yield {"default": KERNEL, "no_dot": KERNEL_NO_DOT}


@pytest.fixture(scope="session")
def execute(kernelspecs: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Execute:
    """``execute(name, kernel="default")``: the notebook executed (cached per session).

    Raises nbclient's ``CellExecutionError`` if any cell raises.
    """
    cache: dict[tuple[str, str], nbformat.NotebookNode] = {}

    def run(name: str, kernel: str = "default") -> nbformat.NotebookNode:
        key = (name, kernel)
        if key not in cache:
            nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
            workdir = tmp_path_factory.mktemp(f"run-{name}")
            client = NotebookClient(
                nb,
                timeout=CELL_TIMEOUT_S,
                kernel_name=kernelspecs[kernel],
                resources={"metadata": {"path": str(workdir)}},
                store_widget_state=True,
            )
            client.execute()
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            suffix = "" if kernel == "default" else f".{kernel}"
            nbformat.write(nb, ARTIFACTS / f"{name}{suffix}.ipynb")
            cache[key] = nb
        return cache[key]

    return run
