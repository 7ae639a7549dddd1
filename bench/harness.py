"""What the benchmarks share: the fan-out workload notebooks, running a measurement in a fresh
interpreter (so no run sees another's heap or threads), timing ``mage-nb run`` as a whole
process, collecting samples and their medians, formatting the tables and verdicts, and the
command line (``--quick``, ``--smoke``, ``--repeats``, ``--json`` and the hidden ``--worker``)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

WORKER_TIMEOUT = 1800
SLEEP_SECONDS = 0.001

# A one-block notebook: what ``mage-nb run`` costs before any work (start-up, imports, summary).
STARTUP_CELLS = ["%%loader one\n1"]


# --------------------------------------------------------------------------- notebooks


def write_notebook(path: Path, cells: list[str]) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(nb, str(path))
    return path


def flat_cells(n: int) -> list[str]:
    """The fan-out workload: a dynamic loader of ``n`` ints, one tiny instance per item, summed."""
    return [
        f"N = {n}",
        "%%block loader items --dynamic\nlist(range(N))",
        "%%transformer work --reduce sum\nitems * 2 + 1",
        "%%exporter total\nwork",
    ]


def sleep_cells(n: int) -> list[str]:
    """The same fan-out whose instances sleep ``SLEEP_SECONDS``: instances that finish apart."""
    return [
        f"import time\nN = {n}",
        "%%block loader items --dynamic\nlist(range(N))",
        f"%%transformer nap --reduce sum\ntime.sleep({SLEEP_SECONDS})\nitems * 2 + 1",
        "%%exporter total\nnap",
    ]


# --------------------------------------------------------------------------- the machine


def default_workers() -> int:
    """ThreadPoolExecutor's (and mage_nb's) default: min(32, CPUs + 4)."""
    return min(32, (os.cpu_count() or 1) + 4)


def maxrss_bytes() -> int:
    """This process's peak resident memory (``ru_maxrss`` is in KiB on Linux, bytes on macOS)."""
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


# --------------------------------------------------------------------------- measuring


def in_subprocess(script: str, kind: str, timeout: float, **kwargs: Any) -> dict[str, Any]:
    """Run ``script --worker`` for one ``worker_*`` measurement; an error is a result, not a crash."""
    spec = json.dumps({"kind": kind, "kwargs": kwargs})
    try:
        proc = subprocess.run(
            [sys.executable, script, "--worker", spec],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"{kind}: timed out after {timeout} s"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"{kind}: exit {proc.returncode}: {tail}"}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def mage_command() -> list[str]:
    script = Path(sys.executable).parent / "mage-nb"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mage_nb"]


def time_cli(notebook: Path, *args: str) -> dict[str, Any]:
    """Wall time of ``mage-nb run NOTEBOOK --no-progress ARGS`` as a whole process."""
    command = " ".join(["mage-nb run", notebook.name, *args])
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [*mage_command(), "run", str(notebook), "--no-progress", *args],
            capture_output=True,
            text=True,
            timeout=WORKER_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"{command}: timed out"}
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["?"])[-1]
        return {"error": f"mage-nb run {notebook.name}: exit {proc.returncode}: {tail}"}
    return {"seconds": seconds, "ok": " completed in " in proc.stdout}  # the summary line


class Measurements:
    """Samples per (case, n), n None for a case measured at one size only; a sample is the dict a
    worker returned. Failures are collected to be listed under the tables, not raised: a
    benchmark informs, and one failed case does not stop the others."""

    def __init__(self, *, name_errors: bool = False) -> None:
        """``name_errors``: a worker's error is prefixed with the case and n it was measuring
        (worth it where one worker kind serves many cases)."""
        self.samples: dict[tuple[str, int | None], list[dict[str, Any]]] = {}
        self.errors: list[str] = []
        self.name_errors = name_errors

    def add(self, case: str, n: int | None, sample: dict[str, Any]) -> dict[str, Any]:
        where = case if n is None else f"{case} n={n}"
        if "error" in sample:
            error = f"{where}: {sample['error']}" if self.name_errors else sample["error"]
            self.errors.append(error)
            print(f"  ! {error}", file=sys.stderr)
            return sample
        if not sample.get("ok", True):
            self.errors.append(f"{where}: wrong result")
        self.samples.setdefault((case, n), []).append(sample)
        return sample

    def median(self, case: str, n: int | None = None, field: str = "seconds") -> float | None:
        values = [s[field] for s in self.samples.get((case, n), []) if field in s]
        return statistics.median(values) if values else None

    def by_name(self) -> dict[str, list[dict[str, Any]]]:
        """The samples keyed ``case@n`` (``case`` alone without n), as ``--json`` saves them."""
        return {case if n is None else f"{case}@{n}": s for (case, n), s in self.samples.items()}

    def print_errors(self) -> None:
        if self.errors:
            print()
            print("errors / wrong results:")
            for error in self.errors:
                print(f"  {error}")


# --------------------------------------------------------------------------- the report


def fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def div(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def verdict_at_most(value: float | None, limit: float) -> str:
    return "N/A " if value is None else ("PASS" if value <= limit else "FAIL")


def verdict_at_least(value: float | None, floor: float) -> str:
    return "N/A " if value is None else ("PASS" if value >= floor else "FAIL")


def python_and_cpus() -> str:
    return f"Python {platform.python_version()}, {os.cpu_count()} CPUs"


# --------------------------------------------------------------------------- the command line


def main(
    argv: list[str] | None,
    doc: str | None,
    *,
    quick_help: str,
    smoke_help: str,
    workers: Mapping[str, Callable[..., dict[str, Any]]],
    plan: Callable[[argparse.Namespace], dict[str, Any]],
    run: Callable[[dict[str, Any], Path], Measurements],
    report: Callable[[Measurements, dict[str, Any]], dict[str, Any]],
    tmp_prefix: str = "mage_nb_bench_",
) -> int:
    """``--worker SPEC``: run one measurement (in the fresh interpreter ``in_subprocess``
    started) and print its result. Otherwise plan, run in a temporary directory, print the
    report, and save it with the samples under ``--json``. The exit status is 0 whatever the
    outcome: a benchmark informs, it never fails the build."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--smoke", action="store_true", help=smoke_help)
    parser.add_argument("--repeats", type=int, help="override the number of repeats")
    parser.add_argument("--json", metavar="OUT", help="save the results as JSON")
    parser.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(workers[spec["kind"]](**spec["kwargs"])))
        return 0

    cfg = plan(args)
    if args.repeats:
        cfg["repeats"] = max(1, args.repeats)
    try:
        with tempfile.TemporaryDirectory(prefix=tmp_prefix) as tmp:
            m = run(cfg, Path(tmp))
        summary = report(m, cfg)
    except Exception as exc:
        print(f"benchmark error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 0
    if args.json:
        payload = {
            "config": {**cfg, "python": platform.python_version(), "cpus": os.cpu_count()},
            **summary,
            "samples": m.by_name(),
        }
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str))
        print(f"\nresults saved to {args.json}")
    return 0
