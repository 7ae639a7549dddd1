"""Executor benchmark: mage_nb's ``threads``, ``processes`` and ``dask`` executors compared.

A sibling of ``bench/fanout.py`` (same method, same style). Two workloads:

**Tiny instances** (the fan-out notebook, ``n`` = 100,000)::

    N = n                                   (plain cell: the prelude)
    %%loader items --dynamic                list(range(N))
    %%transformer work --reduce sum         items * 2 + 1
    %%exporter total                        work

run with ``run_notebook(path, executor=..., keep_outputs="none")`` on ``threads`` (default
workers), ``processes`` (2 workers) and ``dask`` (``address=`` a real local cluster: one
``dask scheduler`` and two ``dask worker --nthreads 1`` processes on 127.0.0.1, started by
this script on free ports and stopped by PID at the end). Baselines: a plain Python loop, and
the same work submitted as one Dask task per item on the same cluster,
``client.map(work, range(n))`` + ``client.gather`` + ``sum``.

**CPU-bound instances** (``n`` = 400, each ~10 ms of pure Python): a loop count is
calibrated once, in a fresh subprocess, so that ``spin(x)`` takes ~10 ms here; ``spin`` is
defined in the notebook's plain cell and the transformer's body is ``spin(items)``. Run on
``threads`` (default workers), ``processes`` (2 workers) and ``dask`` (the 2-worker cluster),
plus the plain serial loop for reference. Throughput ratio = threads' time ÷ the executor's.

Method:

* Every measurement runs in a **fresh subprocess** (this file with ``--worker``). Each is
  repeated (3 times, 1 with ``--quick`` / ``--smoke``) in round-robin order over the cases
  and the **median** is reported: the machine has 2 cores and may be shared.
* ``run_notebook`` is timed inside its subprocess after a warm-up run of a 10-instance
  notebook of the same shape on the same executor (imports, the forkserver, the first
  connection to the scheduler are not counted). The timed run includes everything a run
  pays each time: building the executor (starting the process pool; connecting a Dask client),
  running the prelude in every worker, the instances, closing the executor. The "10-inst run"
  column is a second run of the 10-instance notebook right after: the executor's fixed cost
  per run.
* The ``client.map`` baseline is timed after its client has connected and run a 10-item
  warm-up map (the connection is *not* counted, unlike for ``run_notebook``).
* The result is checked (the exporter's output must be ``n²``) with a listener that looks at
  the exporter's instance, since ``keep_outputs="none"`` drops outputs from the record.
* The Dask cluster stays up (idle) while the other executors are measured.

Targets (from the issue): (1) 100,000 tiny instances on the Dask cluster ≥ 10× faster than
``client.map`` with one task per item; (2) on the CPU-bound workload, ``processes`` and Dask
reach ≥ 1.7× the thread executor's throughput on 2 cores. The targets section prints
PASS/FAIL; the exit status is 0 whatever the outcome (benchmarks inform, they do not gate).

Usage::

    .venv/bin/python bench/executors.py [--quick] [--smoke] [--repeats K] [--json OUT]

``--quick``: n = 20,000 tiny and 200 CPU-bound instances, one repeat.
``--smoke``: n = 2,000 tiny and 20 CPU-bound instances, one repeat (for the test suite).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
from harness import (
    WORKER_TIMEOUT,
    Measurements,
    default_workers,
    div,
    fmt,
    python_and_cpus,
    verdict_at_least,
    write_notebook,
)

TINY_TARGET_N = 100_000
CPU_TARGET_N = 400
MAP_SPEEDUP_TARGET = 10.0
CPU_RATIO_TARGET = 1.7
SPIN_SECONDS = 0.010
PROCESS_WORKERS = 2
DASK_WORKERS = 2
WARM_N = 10

EXECUTORS = ("threads", "processes", "dask")

# The CPU-bound body, defined in the notebook's plain cell (and exec'd the same way here to
# calibrate it): ~10 ms of pure-Python arithmetic, then the same value as the tiny workload.
SPIN_SOURCE = """\
def spin(x):
    total = 0
    for i in range(LOOPS):
        total += i ^ x
    return x * 2 + 1
"""


def executor_workers(executor: str) -> int | None:
    return PROCESS_WORKERS if executor == "processes" else None


# --------------------------------------------------------------------------- notebooks


def tiny_cells(n: int) -> list[str]:
    return [
        f"N = {n}",
        "%%loader items --dynamic\nlist(range(N))",
        "%%transformer work --reduce sum\nitems * 2 + 1",
        "%%exporter total\nwork",
    ]


def cpu_cells(n: int, loops: int) -> list[str]:
    return [
        f"N = {n}\nLOOPS = {loops}\n\n\n{SPIN_SOURCE}",
        "%%loader items --dynamic\nlist(range(N))",
        "%%transformer work --reduce sum\nspin(items)",
        "%%exporter total\nwork",
    ]


# --------------------------------------------------------------------------- the cluster


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """``dask scheduler`` + ``dask worker`` processes on 127.0.0.1, each in its own session
    (so that stopping one by its PID also stops the worker's nanny child)."""

    def __init__(self, tmp: Path, workers: int = DASK_WORKERS):
        self.tmp = tmp
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen[bytes]] = []
        dask = Path(sys.executable).parent / "dask"
        self._dask = str(dask) if dask.exists() else "dask"
        self._spawn("scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard")
        for _ in range(workers):
            self._spawn(
                "worker",
                self.address,
                "--nthreads",
                "1",
                "--nworkers",
                "1",
                "--no-dashboard",
                "--host",
                "127.0.0.1",
            )
        self._wait(workers)

    def _spawn(self, *args: str) -> None:
        log = (self.tmp / f"dask-{args[0]}-{len(self.processes)}.log").open("wb")
        self.processes.append(
            subprocess.Popen(
                [self._dask, *args], stdout=log, stderr=log, cwd=self.tmp, start_new_session=True
            )
        )

    def _wait(self, count: int, timeout: float = 60) -> None:
        from distributed import Client

        with Client(self.address, timeout="30s", set_as_default=False) as client:
            client.wait_for_workers(count, timeout=timeout)

    def stop(self) -> None:
        for process in reversed(self.processes):  # workers first, then the scheduler
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


# --------------------------------------------------------------------------- the worker
# Everything below ``worker_*`` runs in a fresh subprocess and returns a JSON-able dict.


def tiny(x: int) -> int:
    return x * 2 + 1


def spin_function(loops: int) -> Callable[[int], int]:
    namespace: dict[str, Any] = {"LOOPS": loops}
    exec(SPIN_SOURCE, namespace)
    spin: Callable[[int], int] = namespace["spin"]
    return spin


def worker_calibrate(seconds: float) -> dict[str, Any]:
    """The loop count for which ``spin`` takes ``seconds`` here, and what it really takes."""
    probe = 100_000
    spin = spin_function(probe)
    spin(0)
    samples = []
    for _ in range(7):
        t0 = time.perf_counter()
        spin(1)
        samples.append(time.perf_counter() - t0)
    loops = max(1, round(probe * seconds / statistics.median(samples)))
    spin = spin_function(loops)
    samples = []
    for i in range(21):
        t0 = time.perf_counter()
        spin(i)
        samples.append(time.perf_counter() - t0)
    return {"loops": loops, "seconds": statistics.median(samples), "ok": True}


def worker_loop(n: int, loops: int | None = None) -> dict[str, Any]:
    fn = tiny if loops is None else spin_function(loops)
    t0 = time.perf_counter()
    items = list(range(n))
    outputs = []
    for x in items:
        outputs.append(fn(x))
    total = sum(outputs)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "ok": total == n * n}


def worker_api(
    path: str, warm: str, executor: str, n: int, address: str | None = None
) -> dict[str, Any]:
    import gc

    import mage_nb
    from mage_nb.engine.events import RunListener

    class Total(RunListener):
        value: Any = None

        def instance_finished(self, *, run: Any, instance: Any) -> None:
            if instance.block == "total":
                self.value = instance.output

    kwargs: dict[str, Any] = {
        "executor": executor,
        "max_workers": executor_workers(executor),
        "address": address if executor == "dask" else None,
        "keep_outputs": "none",
    }
    warm_total = Total()
    mage_nb.run_notebook(warm, listeners=[warm_total], **kwargs)
    gc.collect()
    total = Total()
    t0 = time.perf_counter()
    run = mage_nb.run_notebook(path, listeners=[total], **kwargs)
    seconds = time.perf_counter() - t0
    ok = run.status == "completed" and total.value == n * n
    gc.collect()
    t0 = time.perf_counter()
    run = mage_nb.run_notebook(warm, listeners=[warm_total], **kwargs)
    fixed = time.perf_counter() - t0
    ok = ok and run.status == "completed" and warm_total.value == WARM_N * WARM_N
    return {"seconds": seconds, "fixed": fixed, "ok": ok}


def worker_client_map(address: str, n: int) -> dict[str, Any]:
    from distributed import Client

    with Client(address, timeout="30s", set_as_default=False) as client:
        warm = sum(client.gather(client.map(tiny, range(WARM_N))))
        t0 = time.perf_counter()
        futures = client.map(tiny, range(n))
        total = sum(client.gather(futures))
        seconds = time.perf_counter() - t0
        del futures
    return {"seconds": seconds, "ok": total == n * n and warm == WARM_N * WARM_N}


WORKERS: dict[str, Callable[..., dict[str, Any]]] = {
    "calibrate": worker_calibrate,
    "loop": worker_loop,
    "api": worker_api,
    "client_map": worker_client_map,
}


# --------------------------------------------------------------------------- the driver


def in_subprocess(kind: str, **kwargs: Any) -> dict[str, Any]:
    return harness.in_subprocess(__file__, kind, WORKER_TIMEOUT, **kwargs)


def plan(args: argparse.Namespace) -> dict[str, Any]:
    if args.smoke:
        return {"tiny_n": 2_000, "cpu_n": 20, "repeats": 1, "loops": None}
    if args.quick:
        return {"tiny_n": 20_000, "cpu_n": 200, "repeats": 1, "loops": None}
    return {"tiny_n": TINY_TARGET_N, "cpu_n": CPU_TARGET_N, "repeats": 3, "loops": None}


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def run_all(cfg: dict[str, Any], tmp: Path) -> Measurements:
    m = Measurements(name_errors=True)  # one "api" worker measures every executor's cases
    tiny_n: int = cfg["tiny_n"]
    cpu_n: int = cfg["cpu_n"]
    cfg["load_before"] = load_average()

    print("calibrating the CPU-bound body", file=sys.stderr)
    calibration = in_subprocess("calibrate", seconds=SPIN_SECONDS)
    if "error" in calibration:
        m.add("calibrate", 0, calibration)
        loops = 200_000  # a guess, so the rest still runs
    else:
        loops = int(calibration["loops"])
        m.add("calibrate", 0, calibration)
    cfg["loops"] = loops

    tiny_nb = write_notebook(tmp / "tiny.ipynb", tiny_cells(tiny_n))
    tiny_warm = write_notebook(tmp / "tiny_warm.ipynb", tiny_cells(WARM_N))
    cpu_nb = write_notebook(tmp / "cpu.ipynb", cpu_cells(cpu_n, loops))
    cpu_warm = write_notebook(tmp / "cpu_warm.ipynb", cpu_cells(WARM_N, loops))

    print(f"starting a Dask cluster ({DASK_WORKERS} workers × 1 thread)", file=sys.stderr)
    cluster: Cluster | None = None
    try:
        cluster = Cluster(tmp)
    except Exception as exc:
        m.errors.append(f"dask cluster: {type(exc).__name__}: {exc}")
        print(f"  ! dask cluster: {exc}", file=sys.stderr)
    address = cluster.address if cluster is not None else None
    cfg["address"] = address

    def api(case: str, path: Path, warm: Path, executor: str, n: int) -> None:
        if executor == "dask" and address is None:
            return
        sample = in_subprocess(
            "api", path=str(path), warm=str(warm), executor=executor, n=n, address=address
        )
        m.add(case, n, sample)

    try:
        for rep in range(cfg["repeats"]):
            print(f"repeat {rep + 1}/{cfg['repeats']}", file=sys.stderr)
            print(f"  tiny n={tiny_n:,}", file=sys.stderr)
            m.add("tiny_loop", tiny_n, in_subprocess("loop", n=tiny_n))
            for executor in EXECUTORS:
                api(f"tiny_{executor}", tiny_nb, tiny_warm, executor, tiny_n)
            if address is not None:
                m.add("tiny_map", tiny_n, in_subprocess("client_map", address=address, n=tiny_n))
            print(f"  cpu-bound n={cpu_n:,}", file=sys.stderr)
            m.add("cpu_loop", cpu_n, in_subprocess("loop", n=cpu_n, loops=loops))
            for executor in EXECUTORS:
                api(f"cpu_{executor}", cpu_nb, cpu_warm, executor, cpu_n)
    finally:
        if cluster is not None:
            cluster.stop()
        cfg["load_after"] = load_average()
    return m


# --------------------------------------------------------------------------- the report


def repeat_ratios(m: Measurements, case: str, n: int) -> list[float]:
    """Threads' time ÷ this case's, repeat by repeat (each pair ran minutes apart at most:
    on a shared machine their spread shows how much the median can be trusted)."""
    threads = [s["seconds"] for s in m.samples.get(("cpu_threads", n), [])]
    other = [s["seconds"] for s in m.samples.get((case, n), [])]
    if len(threads) != len(other):
        return []
    return [t / o for t, o in zip(threads, other) if o]


def spread(m: Measurements, case: str, n: int) -> str:
    ratios = repeat_ratios(m, case, n)
    if len(ratios) < 2:
        return ""
    return f" (per repeat {min(ratios):.2f}–{max(ratios):.2f}×)"


def report(m: Measurements, cfg: dict[str, Any]) -> dict[str, Any]:
    """Print the tables and return the summary (what ``--json`` saves, with the samples)."""
    tiny_n: int = cfg["tiny_n"]
    cpu_n: int = cfg["cpu_n"]
    threads = default_workers()
    labels = {
        "loop": "plain loop",
        "threads": f"run_notebook threads ({threads})",
        "processes": f"run_notebook processes ({PROCESS_WORKERS})",
        "dask": f"run_notebook dask ({DASK_WORKERS}×1)",
        "map": "client.map/item + gather",
    }

    def row_head(prefix: str, key: str, n: int) -> dict[str, Any]:
        """The columns every row starts with: the case, its label, n and its median time."""
        case = f"{prefix}_{key}"
        return {"case": case, "label": labels[key], "n": n, "seconds": m.median(case, n)}

    print()
    print(
        f"mage_nb executor benchmark — {python_and_cpus()}, median of {cfg['repeats']}; "
        f"Dask cluster: 1 scheduler + {DASK_WORKERS} workers × 1 thread on 127.0.0.1"
    )
    print(
        f"1-min load average before / after: {fmt(cfg.get('load_before'), '.2f')} / "
        f"{fmt(cfg.get('load_after'), '.2f')} (the machine may be shared)"
    )

    # tiny instances
    map_seconds = m.median("tiny_map", tiny_n)
    tiny_rows: list[dict[str, Any]] = []
    print()
    print(f"tiny instances: n = {tiny_n:,} (items * 2 + 1, --reduce sum), keep_outputs='none'")
    header = (
        f"{'case':<34} {'time (s)':>9} {'µs/inst':>9} {'10-inst run (s)':>16} "
        f"{'speed-up vs map':>16}"
    )
    print(header)
    print("-" * len(header))
    for key in ("loop", *EXECUTORS, "map"):
        r = row_head("tiny", key, tiny_n)
        r["per_instance_us"] = div(r["seconds"], tiny_n / 1e6)
        r["fixed_seconds"] = m.median(r["case"], tiny_n, "fixed")
        r["speedup_vs_map"] = div(map_seconds, r["seconds"])
        tiny_rows.append(r)
        print(
            f"{r['label']:<34} {fmt(r['seconds'], '.3f'):>9} {fmt(r['per_instance_us'], '.2f'):>9} "
            f"{fmt(r['fixed_seconds'], '.3f'):>16} {fmt(r['speedup_vs_map'], '.1f'):>16}"
        )
    print(
        "(speed-up vs map: client.map time ÷ this time; 10-inst run: the executor's fixed cost "
        "per run)"
    )

    # CPU-bound instances
    calibrated = m.median("calibrate", 0)
    threads_seconds = m.median("cpu_threads", cpu_n)
    cpu_rows: list[dict[str, Any]] = []
    print()
    print(
        f"CPU-bound instances: n = {cpu_n:,}, each spin() = {fmt(div(calibrated, 1e-3), '.2f')} "
        f"ms of pure Python (LOOPS = {cfg['loops']:,}, calibrated here)"
    )
    header = (
        f"{'case':<34} {'time (s)':>9} {'ms/inst':>9} {'inst/s':>8} {'10-inst run (s)':>16} "
        f"{'× threads':>10}"
    )
    print(header)
    print("-" * len(header))
    for key in ("loop", *EXECUTORS):
        r = row_head("cpu", key, cpu_n)
        r["per_instance_ms"] = div(r["seconds"], cpu_n / 1e3)
        r["throughput"] = div(cpu_n, r["seconds"])
        r["fixed_seconds"] = m.median(r["case"], cpu_n, "fixed")
        r["x_threads"] = div(threads_seconds, r["seconds"])
        cpu_rows.append(r)
        print(
            f"{r['label']:<34} {fmt(r['seconds'], '.3f'):>9} {fmt(r['per_instance_ms'], '.2f'):>9} "
            f"{fmt(r['throughput'], '.0f'):>8} {fmt(r['fixed_seconds'], '.3f'):>16} "
            f"{fmt(r['x_threads'], '.2f'):>10}"
        )
    print("(× threads: throughput ÷ the thread executor's, i.e. threads' time ÷ this time)")

    dask_speedup = div(map_seconds, m.median("tiny_dask", tiny_n))
    proc_ratio = div(threads_seconds, m.median("cpu_processes", cpu_n))
    dask_ratio = div(threads_seconds, m.median("cpu_dask", cpu_n))
    tiny_note = (
        "" if tiny_n == TINY_TARGET_N else f"  [n = {tiny_n:,}, not the target {TINY_TARGET_N:,}]"
    )
    cpu_note = (
        "" if cpu_n == CPU_TARGET_N else f"  [n = {cpu_n:,}, not the target {CPU_TARGET_N:,}]"
    )
    print()
    print("targets")
    print(
        f"  {verdict_at_least(dask_speedup, MAP_SPEEDUP_TARGET)}  tiny instances, "
        f"run_notebook dask vs client.map per item: {fmt(dask_speedup, '.1f')}× ≥ "
        f"{MAP_SPEEDUP_TARGET:g}×{tiny_note}"
    )
    print(
        f"  {verdict_at_least(proc_ratio, CPU_RATIO_TARGET)}  CPU-bound, processes throughput "
        f"vs threads: {fmt(proc_ratio, '.2f')}× ≥ {CPU_RATIO_TARGET:g}×{cpu_note}"
        f"{spread(m, 'cpu_processes', cpu_n)}"
    )
    print(
        f"  {verdict_at_least(dask_ratio, CPU_RATIO_TARGET)}  CPU-bound, dask throughput "
        f"vs threads: {fmt(dask_ratio, '.2f')}× ≥ {CPU_RATIO_TARGET:g}×{cpu_note}"
        f"{spread(m, 'cpu_dask', cpu_n)}"
    )
    m.print_errors()
    return {
        "tiny": tiny_rows,
        "cpu": cpu_rows,
        "calibration": {"loops": cfg["loops"], "seconds": calibrated},
        "targets": {
            "dask_vs_map": dask_speedup,
            "dask_vs_map_pass": dask_speedup is not None and dask_speedup >= MAP_SPEEDUP_TARGET,
            "processes_vs_threads": proc_ratio,
            "processes_pass": proc_ratio is not None and proc_ratio >= CPU_RATIO_TARGET,
            "dask_vs_threads": dask_ratio,
            "dask_pass": dask_ratio is not None and dask_ratio >= CPU_RATIO_TARGET,
            "processes_per_repeat": repeat_ratios(m, "cpu_processes", cpu_n),
            "dask_per_repeat": repeat_ratios(m, "cpu_dask", cpu_n),
            "tiny_n": tiny_n,
            "cpu_n": cpu_n,
        },
        "errors": m.errors,
    }


def main(argv: list[str] | None = None) -> int:
    return harness.main(
        argv,
        __doc__,
        quick_help="20,000 tiny / 200 CPU-bound, once",
        smoke_help="2,000 tiny / 20 CPU-bound, once",
        workers=WORKERS,
        plan=plan,
        run=run_all,
        report=report,
    )


if __name__ == "__main__":
    sys.exit(main())
