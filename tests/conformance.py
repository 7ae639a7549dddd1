"""A notebook that exercises expansion, reduce, failures and function style: every executor
must give the same record for it."""

from __future__ import annotations

from typing import Any

from mage_nb.engine.record import PipelineRun

PRELUDE = """\
import os
from pathlib import Path

class Box:
    def __init__(self, value):
        self.value = value
    def __repr__(self):
        return f"Box({self.value})"

def square(x):
    return x * x
"""

CONFORMANCE = [
    PRELUDE,
    "%%loader users --dynamic\n"
    "[[{'id': i} for i in range(6)], [{'block_uuid': f'u{i}', 'tier': i % 2} for i in range(6)]]",
    "%%transformer scored\nsquare(users['id']) + context.metadata['tier']",
    "%%transformer boxed\nBox(users['id'])",
    "%%transformer both\n(scored, boxed.value)",
    "%%loader colours --dynamic\n['red', 'blue']",
    "%%transformer pairs\n(users['id'], colours)",
    "%%transformer nested --dynamic\n[scored * 10 + j for j in range(3)]",
    "%%transformer leaf\nnested + 1",
    "%%transformer inner --reduce sum\nleaf",
    "%%transformer outer --reduce\ninner",
    "%%transformer risky\nif users['id'] == 3:\n    raise ValueError('three')\nusers['id']",
    "%%transformer after_risky --reduce --reduce-policy partial\nrisky",
    "%%exporter report\n(outer, after_risky, context.failed)",
    "%%transformer fn_style\n@transformer\ndef f(users, *args, block_uuid=None, tier=None, **kwargs):\n"
    "    return (users['id'], block_uuid, tier, kwargs.get('day'))",
]


def comparable(run: PipelineRun) -> list[tuple[str, str, Any]]:
    return [
        (r["uuid"], r["status"], r["output"] if r["status"] == "completed" else r["error"]["type"])
        for r in run.to_record()["block_runs"]
    ]
