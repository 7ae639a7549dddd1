"""Build the JupyterLab extension into mage_nb/labextension, only when its sources changed.

    python labextension/build.py          # build (or reuse), then link it into this env
    python labextension/build.py test     # the TypeScript unit tests (node's test runner)

The build's inputs (package.json, yarn.lock, .yarnrc.yml, tsconfig.json, src/, style/) are
hashed. The result is reused, in this order:

1. mage_nb/labextension already holds the build of that hash (labextension/.built-hash);
2. a copy kept in ~/.cache/mage_nb/labextension/<hash>/ by an earlier build on this machine,
   in any clone (a fresh clone of an unchanged extension builds nothing);
3. otherwise ``jlpm install --immutable`` (yarn.lock must not change; downloads go to yarn's
   global cache, so a later install is offline-fast) and ``jlpm build:prod``, whose output is
   then kept in the cache (the 3 newest builds).

Then ``jupyter labextension develop`` links mage_nb/labextension into this environment's
share/jupyter/labextensions/mage-nb, so ``jupyter labextension list`` shows it enabled.
Run it with the project's venv python (jlpm and jupyter-builder come from JupyterLab there).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = ROOT / "mage_nb" / "labextension"
STAMP = HERE / ".built-hash"
INPUTS = ("package.json", "yarn.lock", ".yarnrc.yml", "tsconfig.json", "src", "style")
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mage_nb" / "labextension"
KEEP = 3
NAME = "mage-nb"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bindir, env.get("PATH", "")])
    env.setdefault("YARN_ENABLE_PROGRESS_BARS", "0")
    return env


def _run(*cmd: str, cwd: Path = HERE) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, env=_env(), check=True)


def source_hash() -> str:
    digest = hashlib.sha256()
    for name in INPUTS:
        path = HERE / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(HERE)).encode() + b"\0")
            digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()[:20]


def _node_modules() -> None:
    # a no-op in a few seconds when node_modules matches yarn.lock
    _run("jlpm", "install", "--immutable")


def _built() -> bool:
    return (OUT / "package.json").exists() and (OUT / "static" / "style.js").exists()


def build() -> None:
    started = time.monotonic()
    wanted = source_hash()
    if _built() and STAMP.exists() and STAMP.read_text().strip() == wanted:
        print(f"labextension: up to date ({wanted})")
    elif (CACHE / wanted / "package.json").exists():
        shutil.rmtree(OUT, ignore_errors=True)
        shutil.copytree(CACHE / wanted, OUT)
        STAMP.write_text(wanted + "\n")
        print(f"labextension: reused the build {wanted} from {CACHE}")
    else:
        _node_modules()
        _run("jlpm", "build:prod")
        if not _built():
            sys.exit("labextension: the build wrote no mage_nb/labextension/static/style.js")
        STAMP.write_text(wanted + "\n")
        keep = CACHE / wanted
        shutil.rmtree(keep, ignore_errors=True)
        keep.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(OUT, keep)
        old = sorted(
            (p for p in CACHE.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime
        )[:-KEEP]
        for path in old:
            shutil.rmtree(path, ignore_errors=True)
        print(f"labextension: built {wanted} in {time.monotonic() - started:.0f}s")
    link = Path(sys.prefix) / "share" / "jupyter" / "labextensions" / NAME
    if not (link.is_symlink() and link.resolve() == OUT.resolve()):
        _run(sys.executable, "-m", "jupyter", "labextension", "develop", "--overwrite", ".", cwd=ROOT)


def test() -> None:
    _node_modules()
    _run("jlpm", "test")


if __name__ == "__main__":
    {"build": build, "test": test}[sys.argv[1] if len(sys.argv) > 1 else "build"]()
