"""Stream-mode benchmark: a generator fan-out against the same items as a list (SPEC §4).

Workload: ``n`` items of 100 KB each (``i.to_bytes(4, "little") * 25_000``), a per-item
transformer ``sum(item[::1000])`` that carries ``--reduce sum``, and an exporter::

    N = n                                       (plain cell: the prelude)
    %%loader items --dynamic                    (make(i) for i in range(N))   # stream
                                                [make(i) for i in range(N)]   # batch
    %%transformer work --reduce sum             sum(items[::1000])
    %%exporter total                            work

Method: each variant is a real notebook (nbformat) run in a **fresh subprocess** (this file
with ``--worker``) through ``mage_nb.run_notebook(path, keep_outputs="none")`` (the ``Run``
API with ``keep_outputs="none"`` if ``run_notebook`` lacks the parameter), on the default
thread executor, after a warm-up run of a 20-item notebook of the same shape (lazy imports,
first-call costs). Measured in the worker:

* **peak memory**: ``ru_maxrss`` after the run minus ``ru_maxrss`` right before it (the
  process's baseline after the warm-up);
* **wall time** of the ``run_notebook`` call;
* **time to the first completed child**: a ``RunListener`` notes when the first ``work``
  instance finishes, measured from the run's ``run_started`` event.

The reduced total is checked against the closed form ``100 * sum(i & 255)``.

Targets: peak memory of stream ≤ 0.05 × batch; time to the first completed child of the
stream ≤ 1% of the batch run's total; stream total time ≤ batch's. PASS/FAIL lines are
printed; the exit status is 0 whatever the outcome (benchmarks inform, they do not gate).

Usage::

    .venv/bin/python bench/stream.py [--quick] [--smoke] [--repeats K]

Default 20,000 items (2 GB as a list); ``--quick`` 2,000; ``--smoke`` 200 (for the tests).
With ``--repeats K`` each variant runs K times (alternating) and the median is shown.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import WORKER_TIMEOUT, div, maxrss_bytes, sub, write_notebook

ROOT = Path(__file__).resolve().parents[1]
ITEM_BYTES = 100_000
MEMORY_RATIO_TARGET = 0.05
FIRST_CHILD_TARGET = 0.01
VARIANTS = ("stream", "batch")
MARK = "@@RESULT "

PRELUDE = """\
N = {n}


def make(i):
    return i.to_bytes(4, "little") * 25_000
"""
LOADERS = {
    "stream": "%%loader items --dynamic\n(make(i) for i in range(N))",
    "batch": "%%loader items --dynamic\n[make(i) for i in range(N)]",
}
WORK = "%%transformer work --reduce sum\nsum(items[::1000])"
TOTAL = "%%exporter total\nwork"


def variant_notebook(path: Path, variant: str, n: int) -> Path:
    return write_notebook(path, [PRELUDE.format(n=n), LOADERS[variant], WORK, TOTAL])


def expected_total(n: int) -> int:
    # make(i)[::1000] takes 100 bytes at offsets that are multiples of 4: each is i & 255.
    return 100 * sum(i & 255 for i in range(n))


# --------------------------------------------------------------------------- the worker


def run_once(path: Path) -> dict[str, Any]:
    """Run one notebook with keep_outputs="none"; time it and catch the first child."""
    import inspect

    import mage_nb
    from mage_nb.engine import RunListener

    class Watch(RunListener):
        def __init__(self) -> None:
            self.started: float | None = None
            self.first_child: float | None = None
            self.total: Any = None
            self.status: dict[str, str] = {}

        def run_started(self, *, run: Any) -> None:
            self.started = time.perf_counter()

        def instance_finished(self, *, run: Any, instance: Any) -> None:
            if instance.block == "work":
                if self.first_child is None and instance.status == "completed":
                    self.first_child = time.perf_counter()
                if instance.status != "completed":
                    self.status[instance.uuid] = instance.status
            elif instance.block == "total":
                self.total = instance.output  # before keep_outputs="none" drops it

    watch = Watch()
    if "keep_outputs" in inspect.signature(mage_nb.run_notebook).parameters:
        how = "run_notebook"
        t0 = time.perf_counter()
        record = mage_nb.run_notebook(path, keep_outputs="none", listeners=[watch])
        wall = time.perf_counter() - t0
    else:  # pragma: no cover - older run_notebook
        how = "Run API"
        from mage_nb.engine import Pipeline, Run, ThreadExecutor
        from mage_nb.notebook import load_notebook, new_namespace, run_prelude

        t0 = time.perf_counter()
        notebook = load_notebook(path)
        namespace = new_namespace()
        run_prelude(notebook, namespace)
        executor = ThreadExecutor()
        try:
            record = Run(
                Pipeline(notebook.specs),
                namespace,
                executor=executor,
                listeners=[watch],
                keep_outputs="none",
            ).execute()
        finally:
            executor.close(wait=False)
        wall = time.perf_counter() - t0
    first = None
    if watch.first_child is not None and watch.started is not None:
        first = watch.first_child - watch.started
    return {
        "how": how,
        "status": record.status,
        "wall": wall,
        "first_child": first,
        "total": watch.total,
        "not_completed": len(watch.status),
    }


def worker(variant: str, n: int, directory: Path) -> dict[str, Any]:
    warm = variant_notebook(directory / f"warm_{variant}.ipynb", variant, 20)
    run_once(warm)
    path = variant_notebook(directory / f"{variant}.ipynb", variant, n)
    import gc

    gc.collect()
    baseline = maxrss_bytes()
    result = run_once(path)
    result["peak_rss"] = max(0, maxrss_bytes() - baseline)
    result["baseline_rss"] = baseline
    result["variant"] = variant
    result["n"] = n
    return result


def worker_main(variant: str, n: int, directory: str) -> None:
    try:
        result = worker(variant, n, Path(directory))
    except Exception:
        result = {"variant": variant, "n": n, "error": traceback.format_exc()}
    print(MARK + json.dumps(result), flush=True)


# --------------------------------------------------------------------------- the driver


def measure(variant: str, n: int, directory: Path) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        variant,
        str(n),
        str(directory),
    ]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=WORKER_TIMEOUT, cwd=ROOT, check=False
        )
    except subprocess.TimeoutExpired:
        return {"variant": variant, "n": n, "error": f"timed out after {WORKER_TIMEOUT}s"}
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"variant": variant, "n": n, "error": f"exit {proc.returncode}: " + " | ".join(tail)}


def median_of(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def fmt(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return "-" if value is None else f"{value * scale:,.{digits}f}"


def print_target(
    name: str, value: float | None, limit: float, detail: Callable[[float], str]
) -> None:
    """One PASS/FAIL line: ``value`` at most ``limit`` passes; a value not measured fails."""
    if value is None:
        print(f"FAIL {name}: not measured")
    else:
        print(f"{'PASS' if value <= limit else 'FAIL'} {name}: {detail(value)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 items")
    parser.add_argument("--smoke", action="store_true", help="200 items (for the test suite)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--worker", nargs=3, metavar=("VARIANT", "N", "DIR"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.worker[0], int(args.worker[1]), args.worker[2])
        return 0
    n = 200 if args.smoke else 2_000 if args.quick else 20_000
    expected = expected_total(n)
    print(
        f"stream benchmark: {n:,} items of {ITEM_BYTES // 1000} KB "
        f"({n * ITEM_BYTES / 1e9:.2f} GB as a list) -> sum(item[::1000]) -> --reduce sum; "
        f"keep_outputs='none', thread executor, fresh subprocess per run, "
        f"{args.repeats} repeat(s), median shown"
    )
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    errors: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="mage_nb_stream_bench_") as tmp:
            for _ in range(max(1, args.repeats)):
                for variant in VARIANTS:
                    row = measure(variant, n, Path(tmp))
                    if "error" in row:
                        errors.append(f"{variant}: {row['error']}")
                    else:
                        if row["total"] != expected or row["status"] != "completed":
                            errors.append(
                                f"{variant}: status {row['status']}, total {row['total']!r} "
                                f"(expected {expected})"
                            )
                        results[variant].append(row)
    except Exception:
        errors.append(traceback.format_exc())

    header = f"{'variant':<8} {'items':>8} {'wall s':>9} {'1st child ms':>13} {'peak RSS MB':>12} {'total ok':>9}"
    print()
    print(header)
    print("-" * len(header))
    summary: dict[str, dict[str, float | None]] = {}
    for variant in VARIANTS:
        rows = results[variant]
        wall = median_of(rows, "wall")
        first = median_of(rows, "first_child")
        peak = median_of(rows, "peak_rss")
        summary[variant] = {"wall": wall, "first": first, "peak": peak}
        total_ok = bool(rows) and all(
            r["total"] == expected and r["status"] == "completed" for r in rows
        )
        print(
            f"{variant:<8} {n:>8,} {fmt(wall, 1, 3):>9} {fmt(first, 1000, 1):>13} "
            f"{fmt(peak, 1 / 2**20, 1):>12} {'yes' if total_ok else 'NO':>9}"
        )
    how = next((r["how"] for rows in results.values() for r in rows), "?")
    print(f"(runs through {how}; peak RSS = ru_maxrss growth over the pre-run baseline)")

    s, b = summary["stream"], summary["batch"]
    print()
    print("targets")
    print_target(
        "peak memory",
        div(s["peak"], b["peak"]),
        MEMORY_RATIO_TARGET,
        lambda ratio: (
            f"stream {fmt(s['peak'], 1 / 2**20, 1)} MB = {ratio:.4f} of "
            f"batch {fmt(b['peak'], 1 / 2**20, 1)} MB (target <= {MEMORY_RATIO_TARGET})"
        ),
    )
    print_target(
        "time to first completed child",
        div(s["first"], b["wall"]),
        FIRST_CHILD_TARGET,
        lambda share: (
            f"stream {fmt(s['first'], 1000, 1)} ms = {share:.2%} of batch total "
            f"{fmt(b['wall'], 1, 3)} s (target <= {FIRST_CHILD_TARGET:.0%})"
        ),
    )
    print_target(
        "total time",
        sub(s["wall"], b["wall"]),  # stream's time minus batch's: at most 0 passes
        0.0,
        lambda _: (
            f"stream {fmt(s['wall'], 1, 3)} s vs batch "
            f"{fmt(b['wall'], 1, 3)} s (target: stream <= batch)"
        ),
    )
    if errors:
        print()
        print("errors:")
        for error in errors:
            print("  " + error.replace("\n", "\n  "))
    return 0


if __name__ == "__main__":
    try:
        main()
    except Exception:  # benchmarks inform, they do not gate
        traceback.print_exc()
    sys.exit(0)
