"""Where an export is written: a staging folder that becomes OUT_DIR only when it is complete.

An exporter writes into an empty folder of the same name inside a hidden temporary folder
next to OUT_DIR (same file system, so the move is a rename). If it raises, the staging folder
is removed and OUT_DIR is as it was: no half-written export is ever left. Invariants:

- an OUT_DIR that exists and is not empty is refused unless ``force``; with ``force`` the
  export's files replace files of the same name and everything else in OUT_DIR stays (an
  export never deletes what it did not write);
- an OUT_DIR that is a file, or that cannot be created, is refused;
- folders created on the way to OUT_DIR are removed again if the export fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from . import ExportError


def _check_target(out_dir: Path, shown: str, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{shown} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise ExportError(
            f"{shown} exists and is not empty: choose a new folder, or pass --force to "
            "write the export into it (files of the same name are replaced, others kept)"
        )


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return the ones created, outermost first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    missing.reverse()
    try:
        for path in missing:
            path.mkdir()
    except OSError as exc:
        _remove_empty(missing)
        raise ExportError(f"cannot create {folder}: {exc.strerror or exc}") from None
    return missing


def _remove_empty(created: list[Path]) -> None:
    for path in reversed(created):
        with contextlib.suppress(OSError):
            path.rmdir()


def _merge(source: Path, target: Path) -> None:
    """Move the tree ``source`` into the existing folder ``target``, replacing files."""
    for entry in source.iterdir():
        destination = target / entry.name
        if entry.is_dir() and destination.is_dir():
            _merge(entry, destination)
        else:
            if destination.is_dir():
                shutil.rmtree(destination)
            os.replace(entry, destination)


@contextlib.contextmanager
def staged_folder(out_dir: str | os.PathLike[str], *, force: bool = False) -> Iterator[Path]:
    """Yield an empty folder named like OUT_DIR; on a clean exit its contents become OUT_DIR.

    Raises ``ExportError`` (nothing written) when OUT_DIR cannot be used.
    """
    shown = os.fspath(out_dir)
    target = Path(os.path.abspath(shown))  # "." has a name and a parent this way
    if not target.name:
        raise ExportError(f"cannot export into {shown}: choose a folder below it")
    _check_target(target, shown, force)
    created = _make_parents(target.parent)
    try:
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.export-", dir=target.parent))
    except OSError as exc:
        _remove_empty(created)
        raise ExportError(f"cannot write in {target.parent}: {exc.strerror or exc}") from None
    try:
        staging = scratch / target.name
        staging.mkdir()
        yield staging
        _check_target(target, shown, force)  # it may have changed while the export was written
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        if target.exists():
            _merge(staging, target)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        _remove_empty(created)
        raise
    shutil.rmtree(scratch, ignore_errors=True)
