"""Fan-out benchmark: what one dynamic instance costs in mage_nb, in time and in memory.

Workload (SPEC §2, §4): a dynamic loader of ``n`` small ints, a per-item transformer that
carries ``--reduce sum`` (so it has ``n`` instances), and an exporter that returns the sum::

    N = n                                   (plain cell: the prelude)
    %%block loader items --dynamic          list(range(N))
    %%transformer work --reduce sum         items * 2 + 1
    %%exporter total                        work

for n = 1,000 / 10,000 / 100,000, against baselines doing the same work in the same run:

* ``loop``: a plain Python loop calling ``work(x)`` per item and summing the results;
* ``ThreadPool``: ``concurrent.futures.ThreadPoolExecutor`` (default workers), one
  ``submit`` per item, then the sum of the results;
* ``Dask``: ``dask.threaded.get`` on a hand-built dict graph ``{("w", i): (work, i)}`` plus a
  ``sum`` task (graph construction included in the time).

Method:

* Every measurement runs in a **fresh subprocess** (this file with ``--worker``), so no run
  sees another's heap, caches or threads. Each is repeated (3 times, 1 with ``--quick``) in
  round-robin order over the cases, and the **median** is reported: the machine is shared.
* ``mage-nb run NB --no-progress`` is timed from outside (wall time of the whole process).
  The same is done for a trivial one-block notebook (process start-up, imports, notebook
  reading, summary) right before every such run (the median of all those is the start-up
  time; one discarded run warms the disk cache first), and the table shows both the raw time
  and the start-up-corrected one.
  Overhead per instance is ``(t_mage - t_startup - t_loop) / n``.
* ``run_notebook(path, executor="threads" | "sync")`` is timed inside its subprocess, after a
  warm-up run of a tiny notebook of the same shape (so lazy imports are not counted): that is
  the engine's own cost.
* **Memory**: in a fresh subprocess, after the same warm-up, ``tracemalloc`` is started and
  ``run_notebook`` runs at the largest n. The traced memory *after* the run, while the
  returned ``PipelineRun`` is still alive, is what the run keeps; the peak is reported too.
  The plain loop holding the same data (the items and the outputs) is measured the same way;
  the difference divided by n is the bookkeeping per instance. ``ru_maxrss`` growth is shown
  for reference (it includes allocator slack and the tracemalloc overhead itself).
* **Nested**: a dynamic loader of 300, a dynamic transformer making 300 items each, a leaf
  transformer (90,000 instances) with ``--reduce sum``, a second ``--reduce sum`` block and an
  exporter, against the equivalent nested loop; overhead is per leaf.
* **Sleep**: a 100,000-wide fan-out whose instances ``time.sleep(0.001)``, on the thread
  executor with the default worker count, against a ThreadPoolExecutor with the same count.
  Achieved concurrency = n × 1 ms / wall time (the ceiling is the worker count, a little less
  because ``sleep(0.001)`` really sleeps a bit longer; the measured length is printed).

Targets at n = 100,000 (from the issue): overhead ≤ 10 µs per instance over the plain loop,
bookkeeping ≤ 1 KiB per instance. The targets section prints PASS/FAIL; the exit status is 0
whatever the outcome (benchmarks inform, they do not gate).

Usage::

    .venv/bin/python bench/fanout.py [--quick] [--smoke] [--repeats K] [--json OUT]

``--quick``: n up to 10,000, one repeat, a 100 × 100 nested case and a 20,000-wide sleep case.
``--smoke``: n = 1,000 only, one repeat, 30 × 30 nested, no sleep case (for the test suite).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
from harness import (
    SLEEP_SECONDS,
    STARTUP_CELLS,
    WORKER_TIMEOUT,
    Measurements,
    default_workers,
    div,
    flat_cells,
    fmt,
    maxrss_bytes,
    python_and_cpus,
    sleep_cells,
    sub,
    time_cli,
    verdict_at_most,
    write_notebook,
)

OVERHEAD_TARGET_US = 10.0
MEMORY_TARGET_BYTES = 1024
TARGET_N = 100_000


# --------------------------------------------------------------------------- notebooks


def nested_cells(outer: int, inner: int) -> list[str]:
    return [
        f"OUTER = {outer}\nINNER = {inner}",
        "%%loader outer --dynamic\nlist(range(OUTER))",
        "%%transformer inner --dynamic\n[outer * INNER + j for j in range(INNER)]",
        "%%transformer leaf --reduce sum\ninner * 2 + 1",
        "%%transformer part --reduce sum\nleaf",
        "%%exporter total\npart",
    ]


# --------------------------------------------------------------------------- the worker
# Everything below ``worker_*`` runs in a fresh subprocess and returns a JSON-able dict.


def work(x: int) -> int:
    return x * 2 + 1


def sleepy_work(x: int) -> int:
    time.sleep(SLEEP_SECONDS)
    return x * 2 + 1


def worker_loop(n: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    items = list(range(n))
    outputs = []
    for x in items:
        outputs.append(work(x))
    total = sum(outputs)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "ok": total == n * n}


def worker_threadpool(n: int, workers: int | None = None, sleep: bool = False) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    fn = sleepy_work if sleep else work
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(fn, x) for x in range(n)]
        total = sum(f.result() for f in futures)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "ok": total == n * n}


def worker_dask(n: int) -> dict[str, Any]:
    import dask.threaded

    dask.threaded.get({("w", 0): (work, 0), "total": (sum, [("w", 0)])}, "total")  # warm-up
    t0 = time.perf_counter()
    graph: dict[Any, Any] = {("w", i): (work, i) for i in range(n)}
    graph["total"] = (sum, [("w", i) for i in range(n)])
    total = dask.threaded.get(graph, "total")
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "ok": total == n * n}


def worker_loop_nested(outer: int, inner: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    parts = []
    for i in range(outer):
        items = [i * inner + j for j in range(inner)]
        leaves = []
        for x in items:
            leaves.append(work(x))
        parts.append(sum(leaves))
    total = sum(parts)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "ok": total == (outer * inner) ** 2}


def _warm_up(warm: str) -> None:
    """Run a tiny notebook of the same shape so lazy imports and caches are not measured."""
    import gc

    import mage_nb

    mage_nb.run_notebook(warm, executor="sync")
    gc.collect()


def worker_api(path: str, warm: str, executor: str, expected: int) -> dict[str, Any]:
    import mage_nb

    _warm_up(warm)
    t0 = time.perf_counter()
    run = mage_nb.run_notebook(path, executor=executor)
    seconds = time.perf_counter() - t0
    ok = run.status == "completed" and run.block_runs["total"].output == expected
    return {"seconds": seconds, "ok": ok, "instances": len(run.block_runs)}


def worker_mem_mage(path: str, warm: str, executor: str, n: int) -> dict[str, Any]:
    import gc
    import tracemalloc

    import mage_nb

    _warm_up(warm)
    rss0 = maxrss_bytes()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    run = mage_nb.run_notebook(path, executor=executor)
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = maxrss_bytes()
    ok = run.status == "completed" and run.block_runs["total"].output == n * n
    return {"kept": current - base, "peak": peak - base, "rss": rss1 - rss0, "ok": ok}


def worker_mem_loop(n: int) -> dict[str, Any]:
    import gc
    import tracemalloc

    rss0 = maxrss_bytes()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    items = list(range(n))
    outputs = []
    for x in items:
        outputs.append(work(x))
    total = sum(outputs)
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = maxrss_bytes()
    return {"kept": current - base, "peak": peak - base, "rss": rss1 - rss0, "ok": total == n * n}


def worker_sleep_length() -> dict[str, Any]:
    t0 = time.perf_counter()
    for _ in range(200):
        time.sleep(SLEEP_SECONDS)
    return {"seconds": (time.perf_counter() - t0) / 200, "ok": True}


WORKERS: dict[str, Callable[..., dict[str, Any]]] = {
    "loop": worker_loop,
    "threadpool": worker_threadpool,
    "dask": worker_dask,
    "loop_nested": worker_loop_nested,
    "api": worker_api,
    "mem_mage": worker_mem_mage,
    "mem_loop": worker_mem_loop,
    "sleep_length": worker_sleep_length,
}


# --------------------------------------------------------------------------- the driver


def in_subprocess(kind: str, **kwargs: Any) -> dict[str, Any]:
    return harness.in_subprocess(__file__, kind, WORKER_TIMEOUT, **kwargs)


def plan(args: argparse.Namespace) -> dict[str, Any]:
    if args.smoke:
        return {"sizes": [1_000], "repeats": 1, "nested": (30, 30), "sleep_n": None}
    if args.quick:
        return {"sizes": [1_000, 10_000], "repeats": 1, "nested": (100, 100), "sleep_n": 20_000}
    return {
        "sizes": [1_000, 10_000, 100_000],
        "repeats": 3,
        "nested": (300, 300),
        "sleep_n": 100_000,
    }


def run_all(cfg: dict[str, Any], tmp: Path) -> Measurements:
    m = Measurements()
    sizes: list[int] = cfg["sizes"]
    outer, inner = cfg["nested"]
    leaves = outer * inner
    sleep_n: int | None = cfg["sleep_n"]
    workers = default_workers()

    startup_nb = write_notebook(tmp / "startup.ipynb", STARTUP_CELLS)
    flat = {n: write_notebook(tmp / f"flat_{n}.ipynb", flat_cells(n)) for n in sizes}
    flat_warm = write_notebook(tmp / "flat_warm.ipynb", flat_cells(10))
    nested = write_notebook(tmp / "nested.ipynb", nested_cells(outer, inner))
    nested_warm = write_notebook(tmp / "nested_warm.ipynb", nested_cells(3, 3))
    sleep_nb = write_notebook(tmp / "sleep.ipynb", sleep_cells(sleep_n)) if sleep_n else None
    sleep_warm = write_notebook(tmp / "sleep_warm.ipynb", sleep_cells(10))

    def api(path: Path, warm: Path, executor: str, expected: int) -> dict[str, Any]:
        return in_subprocess(
            "api", path=str(path), warm=str(warm), executor=executor, expected=expected
        )

    time_cli(startup_nb)  # warm the disk cache; not counted
    for rep in range(cfg["repeats"]):
        print(f"repeat {rep + 1}/{cfg['repeats']}", file=sys.stderr)
        for n in sizes:
            print(f"  flat n={n:,}", file=sys.stderr)
            m.add("loop", n, in_subprocess("loop", n=n))
            m.add("threadpool", n, in_subprocess("threadpool", n=n))
            m.add("dask", n, in_subprocess("dask", n=n))
            m.add("startup", 0, time_cli(startup_nb))  # next to each CLI run: same noise
            m.add("cli", n, time_cli(flat[n]))
            m.add("api_threads", n, api(flat[n], flat_warm, "threads", n * n))
            m.add("api_sync", n, api(flat[n], flat_warm, "sync", n * n))
        print(f"  nested {outer}x{inner}", file=sys.stderr)
        m.add("loop_nested", leaves, in_subprocess("loop_nested", outer=outer, inner=inner))
        m.add("startup", 0, time_cli(startup_nb))
        m.add("cli_nested", leaves, time_cli(nested))
        m.add("api_nested", leaves, api(nested, nested_warm, "threads", leaves * leaves))
        big = sizes[-1]
        print(f"  memory n={big:,}", file=sys.stderr)
        m.add("mem_loop", big, in_subprocess("mem_loop", n=big))
        for executor in ("threads", "sync"):
            sample = in_subprocess(
                "mem_mage", path=str(flat[big]), warm=str(flat_warm), executor=executor, n=big
            )
            m.add(f"mem_{executor}", big, sample)
        if sleep_nb is not None and sleep_n is not None:
            print(f"  sleep n={sleep_n:,}", file=sys.stderr)
            m.add("sleep_length", 0, in_subprocess("sleep_length"))
            m.add("sleep_api", sleep_n, api(sleep_nb, sleep_warm, "threads", sleep_n * sleep_n))
            sample = in_subprocess("threadpool", n=sleep_n, workers=workers, sleep=True)
            m.add("sleep_threadpool", sleep_n, sample)
    return m


# --------------------------------------------------------------------------- the report


def report(m: Measurements, cfg: dict[str, Any]) -> dict[str, Any]:
    """Print the tables and return the summary (what ``--json`` saves, with the samples)."""
    rows: list[dict[str, Any]] = []
    startup = m.median("startup", 0)
    labels = {
        "loop": "plain loop",
        "threadpool": "ThreadPool submit/item",
        "dask": "dask.threaded.get",
        "cli": "mage-nb run (raw)",
        "cli_corrected": "mage-nb run (- start-up)",
        "api_threads": "run_notebook threads",
        "api_sync": "run_notebook sync",
        "loop_nested": "nested: plain loop",
        "cli_nested": "nested: mage-nb run (raw)",
        "cli_nested_corrected": "nested: mage-nb (- start-up)",
        "api_nested": "nested: run_notebook threads",
    }

    def row(case: str, n: int, seconds: float | None, loop: float | None) -> None:
        nested = case.endswith(("_nested", "_nested_corrected"))
        tpe, dask = (None, None) if nested else (m.median("threadpool", n), m.median("dask", n))
        rows.append(
            {
                "case": case,
                "group": f"nested {n}" if nested else f"flat {n}",
                "label": labels[case],
                "n": n,
                "seconds": seconds,
                "per_item_us": None if seconds is None else seconds / n * 1e6,
                "overhead_us": None
                if seconds is None or loop is None
                else (seconds - loop) / n * 1e6,
                "x_threadpool": div(seconds, tpe),
                "x_dask": div(seconds, dask),
            }
        )

    for n in cfg["sizes"]:
        loop = m.median("loop", n)
        for case in ("loop", "threadpool", "dask", "cli"):
            row(case, n, m.median(case, n), loop)
        row("cli_corrected", n, sub(m.median("cli", n), startup), loop)
        row("api_threads", n, m.median("api_threads", n), loop)
        row("api_sync", n, m.median("api_sync", n), loop)
    outer, inner = cfg["nested"]
    leaves = outer * inner
    loop = m.median("loop_nested", leaves)
    row("loop_nested", leaves, loop, loop)
    row("cli_nested", leaves, m.median("cli_nested", leaves), loop)
    row("cli_nested_corrected", leaves, sub(m.median("cli_nested", leaves), startup), loop)
    row("api_nested", leaves, m.median("api_nested", leaves), loop)

    print()
    print(
        f"mage_nb fan-out benchmark — {python_and_cpus()}, median of {cfg['repeats']} "
        f"(start-up of a 1-block `mage-nb run`: {fmt(startup, '.3f')} s)"
    )
    header = (
        f"{'case':<30} {'n':>8} {'time (s)':>9} {'µs/item':>9} {'ovh vs loop µs':>15} "
        f"{'× ThreadPool':>12} {'× Dask':>8}"
    )
    print(header)
    print("-" * len(header))
    previous = None
    for r in rows:
        if previous is not None and r["group"] != previous:
            print()
        previous = r["group"]
        print(
            f"{r['label']:<30} {r['n']:>8,} {fmt(r['seconds'], '.3f'):>9} "
            f"{fmt(r['per_item_us'], '.2f'):>9} {fmt(r['overhead_us'], '.2f'):>15} "
            f"{fmt(r['x_threadpool'], '.2f'):>12} {fmt(r['x_dask'], '.2f'):>8}"
        )
    print("(× columns: time ÷ the ThreadPool / Dask time at the same n; nested rows: per leaf)")

    big = cfg["sizes"][-1]
    memory: dict[str, Any] = {"n": big}
    print()
    print(f"memory at n = {big:,} (tracemalloc; per instance, minus the plain loop)")
    mem_header = f"{'case':<22} {'kept B/inst':>12} {'peak B/inst':>12} {'maxrss Δ MiB':>13}"
    print(mem_header)
    print("-" * len(mem_header))
    loop_kept, loop_peak = m.median("mem_loop", big, "kept"), m.median("mem_loop", big, "peak")
    for case, label in (
        ("mem_loop", "plain loop (absolute)"),
        ("mem_threads", "run_notebook threads"),
        ("mem_sync", "run_notebook sync"),
    ):
        kept, peak = m.median(case, big, "kept"), m.median(case, big, "peak")
        rss = m.median(case, big, "rss")
        if case != "mem_loop":
            kept, peak = sub(kept, loop_kept), sub(peak, loop_peak)
        per_kept, per_peak = div(kept, big), div(peak, big)
        memory[case] = {"kept_per_instance": per_kept, "peak_per_instance": per_peak, "rss": rss}
        print(
            f"{label:<22} {fmt(per_kept, ',.0f'):>12} {fmt(per_peak, ',.0f'):>12} "
            f"{fmt(div(rss, 2**20), '.1f'):>13}"
        )

    sleep: dict[str, Any] = {}
    sleep_n = cfg["sleep_n"]
    if sleep_n:
        workers = default_workers()
        real = m.median("sleep_length", 0)
        ceiling = div(workers * SLEEP_SECONDS, real)
        print()
        print(
            f"sleep {SLEEP_SECONDS * 1e3:g} ms per instance, n = {sleep_n:,}, {workers} workers "
            f"(sleep({SLEEP_SECONDS}) really takes {fmt(div(real, 1e-3), '.3f')} ms here, "
            f"so the ceiling is ≈ {fmt(ceiling, '.1f')})"
        )
        sleep_header = f"{'case':<22} {'time (s)':>9} {'concurrency':>12} {'of workers':>11}"
        print(sleep_header)
        print("-" * len(sleep_header))
        for case, label in (
            ("sleep_api", "run_notebook threads"),
            ("sleep_threadpool", "ThreadPool submit/item"),
        ):
            seconds = m.median(case, sleep_n)
            concurrency = div(sleep_n * SLEEP_SECONDS, seconds)
            sleep[case] = {"seconds": seconds, "concurrency": concurrency}
            print(
                f"{label:<22} {fmt(seconds, '.2f'):>9} {fmt(concurrency, '.2f'):>12} "
                f"{fmt(div(concurrency, workers), '.0%'):>11}"
            )
        sleep.update({"n": sleep_n, "workers": workers, "real_sleep_seconds": real})

    by_case = {(r["case"], r["n"]): r for r in rows}
    overhead = by_case[("cli_corrected", big)]["overhead_us"]
    overhead_api = by_case[("api_threads", big)]["overhead_us"]
    kept = memory["mem_threads"]["kept_per_instance"]
    note = (
        "" if big == TARGET_N else f"  [measured at n = {big:,}, not the target n = {TARGET_N:,}]"
    )

    print()
    print("targets")
    print(
        f"  {verdict_at_most(overhead, OVERHEAD_TARGET_US)}  overhead per instance over the "
        f"plain loop (mage-nb run, start-up corrected): {fmt(overhead, '.2f')} µs ≤ "
        f"{OVERHEAD_TARGET_US:g} µs{note}"
    )
    print(
        f"        (in-process run_notebook threads: {fmt(overhead_api, '.2f')} µs; "
        f"raw mage-nb run: {fmt(by_case[('cli', big)]['overhead_us'], '.2f')} µs)"
    )
    print(
        f"  {verdict_at_most(kept, MEMORY_TARGET_BYTES)}  bookkeeping memory per instance "
        f"(kept while the run is alive): {fmt(kept, ',.0f')} B ≤ {MEMORY_TARGET_BYTES:,} B{note}"
    )
    m.print_errors()
    return {
        "rows": rows,
        "memory": memory,
        "sleep": sleep,
        "startup_seconds": startup,
        "targets": {
            "overhead_us": overhead,
            "overhead_pass": overhead is not None and overhead <= OVERHEAD_TARGET_US,
            "memory_bytes_per_instance": kept,
            "memory_pass": kept is not None and kept <= MEMORY_TARGET_BYTES,
            "at_n": big,
        },
        "errors": m.errors,
    }


def main(argv: list[str] | None = None) -> int:
    return harness.main(
        argv,
        __doc__,
        quick_help="n up to 10,000, one repeat",
        smoke_help="n = 1,000 only, one repeat, no sleep case",
        workers=WORKERS,
        plan=plan,
        run=run_all,
        report=report,
    )


if __name__ == "__main__":
    sys.exit(main())
