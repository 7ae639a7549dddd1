"""Project configuration: named database connections for SQL blocks.

Looked up from the notebook's folder: ``mage_nb.toml`` there (a ``[connections]`` table), then
the nearest ``pyproject.toml`` at or above it (``[tool.mage_nb.connections]``); the first
found wins per name. Values are URLs and may use ``${ENV_VAR}`` so that secrets stay out of
notebooks and config files (they are expanded when a block uses the connection).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from .engine.errors import PipelineError


def _read(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise PipelineError(f"cannot read {path}: {exc}") from None


def _table(data: dict[str, object], *keys: str) -> dict[str, str]:
    node: object = data
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return {}
        node = node[key]
    if not isinstance(node, dict):
        return {}
    return {str(name): str(url) for name, url in node.items()}


def load_connections(folder: str | Path) -> dict[str, str]:
    """Connection name -> URL (environment references not yet expanded)."""
    folder = Path(folder).resolve()
    found: dict[str, str] = {}
    local = folder / "mage_nb.toml"
    if local.is_file():
        found.update(_table(_read(local), "connections"))
    for parent in (folder, *folder.parents):
        pyproject = parent / "pyproject.toml"
        if pyproject.is_file():
            for name, url in _table(_read(pyproject), "tool", "mage_nb", "connections").items():
                found.setdefault(name, url)
            break
    return found
