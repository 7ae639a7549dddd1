"""Kernel benchmark: what a block cell costs in a real Jupyter kernel, with the run tree shown.

Two measurements, both through a real IPython kernel started with ``jupyter_client`` and
timed from the client (execute request sent → kernel idle again), the way a person waits:

* **magic overhead**: a trivial block cell (``%%loader x`` / ``1``: parse, plan, run, bind,
  widget) against the plain cell ``1``; the difference is what mage_nb adds. Target ≤ 30 ms.
* **widget cost at scale**: ``%pipeline run`` of a 100,000-instance fan-out (loader →
  transformer with ``--reduce sum`` → exporter) with the live widget shown, against the same
  run with the widget off. Target ≤ 1.2×. The widget messages the client receives are
  counted too (the feed throttles to ≤ 10 updates a second).

Each measurement is repeated; medians are printed. Usage: ``python bench/kernel.py [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from harness import verdict_at_most
from jupyter_client.manager import start_new_kernel

FANOUT_CELLS = (
    "%%loader items --dynamic\nlist(range({n}))",
    "%%transformer work --reduce sum\nitems * 2 + 1",
    "%%exporter total\nwork",
)


def execute(client: Any, code: str, timeout: float = 600) -> tuple[float, int]:
    """Run a cell; return (seconds until idle, widget comm messages received)."""
    comm_messages = 0

    def on_output(msg: dict[str, Any]) -> None:
        nonlocal comm_messages
        if msg["header"]["msg_type"].startswith("comm_"):
            comm_messages += 1

    start = time.perf_counter()
    reply = client.execute_interactive(code, timeout=timeout, output_hook=on_output)
    elapsed = time.perf_counter() - start
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"cell failed: {reply['content'].get('evalue')}\n{code}")
    return elapsed, comm_messages


def measure_magic(client: Any, repeats: int) -> tuple[float, float]:
    plain, block = [], []
    for i in range(repeats):
        plain.append(execute(client, "1")[0])
        block.append(execute(client, f"%%loader trivial_{i % 3}\n1")[0])
    return statistics.median(plain), statistics.median(block)


def measure_fanout(client: Any, n: int, widget: bool, repeats: int) -> tuple[float, int]:
    execute(
        client, f"get_ipython().magics_manager.registry['PipelineMagics'].show_widget = {widget}"
    )
    times, messages = [], []
    for _ in range(repeats):
        elapsed, comms = execute(client, "%pipeline run")
        times.append(elapsed)
        messages.append(comms)
    return statistics.median(times), max(messages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 10,000 and fewer repeats")
    args = parser.parse_args()
    n = 10_000 if args.quick else 100_000
    repeats = 3 if args.quick else 5
    manager, client = start_new_kernel(kernel_name="python3")
    try:
        execute(client, "%load_ext mage_nb")
        plain, block = measure_magic(client, 10 if args.quick else 30)
        print("magic overhead (client round trip, median)")
        print(f"  plain cell `1`            {plain * 1000:8.1f} ms")
        print(f"  trivial block cell        {block * 1000:8.1f} ms")
        overhead = (block - plain) * 1000
        print(
            f"  overhead                  {overhead:8.1f} ms   target ≤ 30 ms: "
            f"{verdict_at_most(overhead, 30)}"
        )
        execute(client, "%pipeline reset")
        for cell in FANOUT_CELLS:
            execute(client, cell.replace("{n}", str(n)))
        off, off_msgs = measure_fanout(client, n, widget=False, repeats=repeats)
        on, on_msgs = measure_fanout(client, n, widget=True, repeats=repeats)
        ratio = on / off
        print(f"\n%pipeline run, {n:,} instances (median of {repeats})")
        print(f"  widget off                {off:8.3f} s   comm messages {off_msgs}")
        print(f"  widget on                 {on:8.3f} s   comm messages {on_msgs}")
        print(
            f"  ratio                     {ratio:8.2f} ×   target ≤ 1.2×: "
            f"{verdict_at_most(ratio, 1.2)}"
        )
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


if __name__ == "__main__":
    main()
