"""SQL benchmark: 10,000 SQL child instances, each a small parameterised DuckDB query.

Workload: a table of 20,000 rows in DuckDB's default in-process database; a dynamic loader of
n ids; a SQL block below it, ``select count(*) as n, sum(value) as total from facts where
id = {{ ids }}`` (one instance per id, the id a bind parameter); a ``count`` reduce.

Baseline, in the same process and run: a plain Python loop that executes the same query with
the same parameter on one DuckDB connection and turns each result into a DataFrame (as a SQL
block's output is). Target: the pipeline takes ≤ 1.5× the loop.

Each case runs ``--repeats`` times (default 3) after a warm-up, interleaved; medians are
printed. Usage: ``python bench/sql.py [--n 10000] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import duckdb
from harness import verdict_at_most, write_notebook

from mage_nb import run_notebook

QUERY = "select count(*) as n, sum(value) as total from facts where id = {param}"


def make_table(rows: int) -> None:
    duckdb.sql(
        f"create or replace table facts as select (i % {rows // 20}) as id, i * 0.5 as value "
        f"from range({rows}) t(i)"
    )


def notebook(folder: Path, n: int) -> Path:
    return write_notebook(
        folder / f"sql_{n}.ipynb",
        [
            f"%%block loader ids --dynamic\nlist(range({n}))",
            "%%block sql per_id --reduce count\n" + QUERY.format(param="{{ ids }}"),
            "%%exporter done\nper_id",
        ],
    )


def plain_loop(n: int) -> float:
    con = duckdb.default_connection()
    sql = QUERY.format(param="?")
    start = time.perf_counter()
    for i in range(n):
        con.execute(sql, [i]).df()
    return time.perf_counter() - start


def pipeline(path: Path, executor: str) -> float:
    start = time.perf_counter()
    run = run_notebook(path, executor=executor)
    elapsed = time.perf_counter() - start
    assert run.status == "completed", run.status
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    make_table(20_000)
    with tempfile.TemporaryDirectory() as tmp:
        path = notebook(Path(tmp), args.n)
        warm = notebook(Path(tmp), 50)
        pipeline(warm, "threads")
        plain_loop(50)
        times: dict[str, list[float]] = {"loop": [], "threads": [], "sync": []}
        for _ in range(args.repeats):
            times["loop"].append(plain_loop(args.n))
            times["threads"].append(pipeline(path, "threads"))
            times["sync"].append(pipeline(path, "sync"))
    loop = statistics.median(times["loop"])
    print(f"{args.n:,} parameterised DuckDB queries (median of {args.repeats})")
    print(f"  {'case':<34}{'time (s)':>10}{'µs/query':>10}{'× loop':>9}")
    for name, label in (
        ("loop", "plain loop, one connection"),
        ("threads", "SQL block instances, threads"),
        ("sync", "SQL block instances, sync"),
    ):
        median = statistics.median(times[name])
        print(f"  {label:<34}{median:>10.3f}{median / args.n * 1e6:>10.1f}{median / loop:>9.2f}")
    ratio = statistics.median(times["threads"]) / loop
    print(f"\ntarget: default executor ≤ 1.5× the loop: {ratio:.2f}× {verdict_at_most(ratio, 1.5)}")


if __name__ == "__main__":
    main()
