"""Run-store benchmark: what recording a run in the store costs (issue 6).

Workload: the fan-out benchmark's flat notebook — a dynamic loader of ``n`` small ints, a
per-item transformer with ``--reduce sum`` (``n`` instances) and an exporter::

    N = n                                   (plain cell: the prelude)
    %%block loader items --dynamic          list(range(N))
    %%transformer work --reduce sum         items * 2 + 1
    %%exporter total                        work

Cases, at n = 100,000:

* ``run_notebook(path, keep_outputs="none", store=False)`` against the same with
  ``store=DIR`` (what ``mage-nb run`` does by default: every instance and its output
  recorded, one chunk per scheduler checkpoint), timed **inside** a fresh subprocess after a
  warm-up run of a 10-item notebook of the same shape (stored too, in another directory, so
  lazy imports and SQLite's first open are not counted);
* the same with what ``mage-nb run`` adds in-process (per-instance output capture and the
  listener that echoes it), no store against store;
* ``mage-nb run NB --no-progress --no-store`` against ``mage-nb run NB --no-progress --store
  DIR``, each timed from outside as a whole process (raw, and minus the start-up of a
  one-block notebook measured next to it);
* **resume** of a completed stored run (``run_notebook(..., resume=RUN_ID)`` in-process, and
  ``mage-nb run --resume`` as a process): every instance is restored from the store, none
  runs;
* **store size**: the run directory on disk (``record.sqlite`` and ``outputs/``) after the
  stored run: bytes, and blocks allocated (many small files cost a block each);
* **slow instances**: the same fan-out whose instances ``time.sleep(0.001)`` (n = 20,000 on
  the default threads), stored and not, in-process: checkpoints come as instances complete,
  so this is where the store writes many small chunk files; their number and size are shown.

Method: every sample runs in a fresh subprocess; the cases run round-robin within each
repeat (5 repeats, 2 with ``--quick``, 1 with ``--smoke``) and the **median** is reported:
the machine is shared. Ratios are against the no-store run measured in the same repeats.

Target (from the issue): recording a 100,000-instance run costs ≤ 20% over the same run with
no store, i.e. stored ÷ no store ≤ 1.20 (judged on the in-process times; the whole-process
ratio is printed beside it). PASS/FAIL is printed; the exit status is 0 whatever the outcome.

Usage::

    .venv/bin/python bench/store.py [--quick] [--smoke] [--repeats K] [--json OUT]

``--quick``: n = 20,000, two repeats. ``--smoke``: n = 2,000, one repeat (for the tests).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import harness
from harness import (
    STARTUP_CELLS,
    WORKER_TIMEOUT,
    Measurements,
    div,
    flat_cells,
    fmt,
    python_and_cpus,
    sleep_cells,
    sub,
    time_cli,
    verdict_at_most,
    write_notebook,
)

RATIO_TARGET = 1.20
TARGET_N = 100_000


# --------------------------------------------------------------------------- the worker
# ``worker_*`` runs in a fresh subprocess and returns a JSON-able dict.


def _size(directory: Path) -> dict[str, int]:
    files = [p for p in directory.rglob("*") if p.is_file()]
    return {
        "bytes": sum(p.stat().st_size for p in files),
        "allocated": sum(p.stat().st_blocks * 512 for p in files),
        "database": sum(p.stat().st_size for p in files if p.name.startswith("record.sqlite")),
        "chunks": sum(1 for p in files if p.suffix == ".pkl"),
        "parquet": sum(1 for p in files if p.suffix == ".parquet"),
    }


def worker_api(
    path: str,
    warm: str,
    n: int,
    store: str | None = None,
    warm_store: str | None = None,
    resume: str | None = None,
    cli: bool = False,
) -> dict[str, Any]:
    import gc

    import mage_nb

    extra: dict[str, Any] = {}
    if cli:  # what `mage-nb run` adds: per-instance output capture and its echo listener
        from mage_nb.cli import _capturing

        capture, echo = _capturing(open(os.devnull, "w"))  # noqa: SIM115 (lives for the run)
        extra = {"capture": capture, "listeners": [echo]}
    mage_nb.run_notebook(warm, keep_outputs="none", store=warm_store or False, **extra)
    gc.collect()
    t0 = time.perf_counter()
    run = mage_nb.run_notebook(
        path, keep_outputs="none", store=store or False, resume=resume, **extra
    )
    seconds = time.perf_counter() - t0
    instances = list(run.block_runs.values())
    ok = (
        run.status == "completed"
        and len(instances) == n + 2
        and all(r.status == "completed" for r in instances)
    )
    result: dict[str, Any] = {"seconds": seconds, "ok": ok, "run_id": run.run_id}
    if resume:
        result["ok"] = ok and all(r.reused for r in instances)  # nothing ran again
    elif store:
        result.update(_size(Path(store) / run.run_id))
    return result


WORKERS = {"api": worker_api}


# --------------------------------------------------------------------------- the driver


def in_subprocess(kind: str, **kwargs: Any) -> dict[str, Any]:
    return harness.in_subprocess(__file__, kind, WORKER_TIMEOUT, **kwargs)


def plan(args: argparse.Namespace) -> dict[str, Any]:
    if args.smoke:
        return {"n": 2_000, "sleep_n": 200, "repeats": 1}
    if args.quick:
        return {"n": 20_000, "sleep_n": 2_000, "repeats": 2}
    return {"n": TARGET_N, "sleep_n": 20_000, "repeats": 5}


def run_all(cfg: dict[str, Any], tmp: Path) -> Measurements:
    m = Measurements()  # every case at one size: n is None
    n = cfg["n"]
    nb = write_notebook(tmp / "flat.ipynb", flat_cells(n))
    warm = write_notebook(tmp / "warm.ipynb", flat_cells(10))
    startup = write_notebook(tmp / "startup.ipynb", STARTUP_CELLS)
    sleepy = write_notebook(tmp / "sleepy.ipynb", sleep_cells(cfg["sleep_n"]))
    sleepy_warm = write_notebook(tmp / "sleepy_warm.ipynb", sleep_cells(10))
    warm_store = str(tmp / "warm-runs")

    def api(**kwargs: Any) -> dict[str, Any]:
        return in_subprocess("api", path=str(nb), warm=str(warm), n=n, **kwargs)

    def api_sleepy(**kwargs: Any) -> dict[str, Any]:
        return in_subprocess(
            "api", path=str(sleepy), warm=str(sleepy_warm), n=cfg["sleep_n"], **kwargs
        )

    time_cli(startup, "--no-store")  # warm the disk cache; not counted
    for rep in range(cfg["repeats"]):
        print(f"repeat {rep + 1}/{cfg['repeats']} (n = {n:,})", file=sys.stderr)
        runs = tmp / f"runs-{rep}"
        m.add("api_nostore", None, api())
        stored = m.add("api_store", None, api(store=str(runs), warm_store=warm_store))
        if "run_id" in stored:
            m.add(
                "api_resume",
                None,
                api(store=str(runs), warm_store=warm_store, resume=stored["run_id"]),
            )
        m.add("api_cli_nostore", None, api(cli=True))
        m.add("api_cli_store", None, api(cli=True, store=str(runs), warm_store=warm_store))
        m.add("startup", None, time_cli(startup, "--no-store"))
        m.add("cli_nostore", None, time_cli(nb, "--no-store"))
        cli_runs = tmp / f"cli-runs-{rep}"
        m.add("cli_store", None, time_cli(nb, "--store", str(cli_runs)))
        ids = [p.name for p in cli_runs.iterdir()] if cli_runs.is_dir() else []
        if ids:
            m.add("cli_resume", None, time_cli(nb, "--store", str(cli_runs), "--resume", ids[0]))
        m.add("sleep_nostore", None, api_sleepy())
        m.add("sleep_store", None, api_sleepy(store=str(runs), warm_store=warm_store))
        shutil.rmtree(runs, ignore_errors=True)
        shutil.rmtree(cli_runs, ignore_errors=True)
    return m


# --------------------------------------------------------------------------- the report


def report(m: Measurements, cfg: dict[str, Any]) -> dict[str, Any]:
    n = cfg["n"]
    startup = m.median("startup")
    api_base = m.median("api_nostore")
    cli_base = m.median("cli_nostore")
    cli_base_corrected = sub(cli_base, startup)
    rows: list[dict[str, Any]] = []

    def row(case: str, label: str, seconds: float | None, base: float | None) -> None:
        rows.append(
            {
                "case": case,
                "label": label,
                "seconds": seconds,
                "per_instance_us": div(seconds, n / 1e6),
                "ratio": div(seconds, base),
            }
        )

    row("api_nostore", "run_notebook, no store", api_base, api_base)
    row("api_store", "run_notebook, store", m.median("api_store"), api_base)
    row("api_resume", "run_notebook, resume (all restored)", m.median("api_resume"), api_base)
    api_cli_base = m.median("api_cli_nostore")
    row("api_cli_nostore", "run_notebook + CLI capture, no store", api_cli_base, api_cli_base)
    row(
        "api_cli_store",
        "run_notebook + CLI capture, store",
        m.median("api_cli_store"),
        api_cli_base,
    )
    row("cli_nostore", "mage-nb run --no-store (raw)", cli_base, cli_base)
    row("cli_store", "mage-nb run, store (raw)", m.median("cli_store"), cli_base)
    row("cli_resume", "mage-nb run --resume (raw)", m.median("cli_resume"), cli_base)
    row(
        "cli_nostore_corrected",
        "mage-nb run --no-store (- start-up)",
        cli_base_corrected,
        cli_base_corrected,
    )
    row(
        "cli_store_corrected",
        "mage-nb run, store (- start-up)",
        sub(m.median("cli_store"), startup),
        cli_base_corrected,
    )

    print()
    print(
        f"mage_nb run store benchmark — n = {n:,} instances, {python_and_cpus()}, "
        f"median of {cfg['repeats']} "
        f"(start-up of a 1-block `mage-nb run`: {fmt(startup, '.3f')} s)"
    )
    header = f"{'case':<38} {'time (s)':>9} {'µs/inst':>8} {'× no store':>11}"
    print(header)
    print("-" * len(header))
    for r in rows:
        if r["case"] in ("api_cli_nostore", "cli_nostore"):
            print()
        print(
            f"{r['label']:<38} {fmt(r['seconds'], '.3f'):>9} "
            f"{fmt(r['per_instance_us'], '.2f'):>8} {fmt(r['ratio'], '.2f'):>11}"
        )
    added = sub(m.median("api_store"), api_base)
    print(
        f"(recording costs {fmt(div(added, n / 1e6), '.2f')} µs per instance in-process; "
        "resume: every instance restored from the store, none runs)"
    )

    fields = ("bytes", "allocated", "database", "chunks", "parquet")
    size = {field: m.median("api_store", field=field) for field in fields}
    print()
    print(
        f"store on disk after the run: {fmt(div(size['bytes'], 2**20), '.2f')} MiB "
        f"({fmt(div(size['bytes'], n), '.1f')} B/instance; "
        f"{fmt(div(size['allocated'], 2**20), '.2f')} MiB allocated): record.sqlite "
        f"{fmt(div(size['database'], 2**10), ',.0f')} KiB, "
        f"{fmt(size['chunks'], ',.0f')} chunk files, {fmt(size['parquet'], ',.0f')} Parquet files"
    )

    sleep_n = cfg["sleep_n"]
    sleep_base, sleep_stored = m.median("sleep_nostore"), m.median("sleep_store")
    sleep = {field: m.median("sleep_store", field=field) for field in fields}
    sleep.update({"n": sleep_n, "nostore": sleep_base, "store": sleep_stored})
    print()
    print(f"slow instances: sleep(0.001) each, n = {sleep_n:,}, run_notebook threads")
    print(
        f"  no store {fmt(sleep_base, '.3f')} s, store {fmt(sleep_stored, '.3f')} s "
        f"({fmt(div(sleep_stored, sleep_base), '.2f')}×); "
        f"{fmt(sleep['chunks'], ',.0f')} chunk files "
        f"({fmt(div(sleep_n, sleep['chunks']), '.1f')} instances per file), "
        f"{fmt(div(sleep['bytes'], 2**20), '.2f')} MiB "
        f"({fmt(div(sleep['allocated'], 2**20), '.2f')} MiB allocated)"
    )

    ratio = div(m.median("api_store"), api_base)
    ratio_api_cli = div(m.median("api_cli_store"), api_cli_base)
    ratio_cli = div(m.median("cli_store"), cli_base)
    ratio_cli_corrected = div(sub(m.median("cli_store"), startup), cli_base_corrected)
    note = "" if n == TARGET_N else f"  [measured at n = {n:,}, not the target n = {TARGET_N:,}]"
    print()
    print("targets")
    print(
        f"  {verdict_at_most(ratio, RATIO_TARGET)}  recording the run in the store: "
        f"{fmt(ratio, '.2f')}× the same run with no store ≤ {RATIO_TARGET:.2f}× "
        f"(run_notebook, in-process){note}"
    )
    print(
        f"        (with the CLI's capture and echo listener, in-process: "
        f"{fmt(ratio_api_cli, '.2f')}×; mage-nb run as a process: {fmt(ratio_cli, '.2f')}× raw, "
        f"{fmt(ratio_cli_corrected, '.2f')}× start-up corrected)"
    )
    m.print_errors()
    return {
        "rows": rows,
        "store": size,
        "sleep": sleep,
        "startup_seconds": startup,
        "target": {
            "ratio": ratio,
            "ratio_api_cli": ratio_api_cli,
            "ratio_cli": ratio_cli,
            "ratio_cli_corrected": ratio_cli_corrected,
            "pass": ratio is not None and ratio <= RATIO_TARGET,
            "at_n": n,
        },
        "errors": m.errors,
    }


def main(argv: list[str] | None = None) -> int:
    return harness.main(
        argv,
        __doc__,
        quick_help="n = 20,000, two repeats",
        smoke_help="n = 2,000, one repeat",
        workers=WORKERS,
        plan=plan,
        run=run_all,
        report=report,
        tmp_prefix="mage_nb_bench_store_",
    )


if __name__ == "__main__":
    sys.exit(main())
