"""The stream benchmark still runs end to end (``bench/stream.py --smoke``)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_stream_bench_smoke() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "stream.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "variant" in out and "1st child ms" in out and "peak RSS MB" in out
    for variant in ("stream", "batch"):
        row = re.search(rf"^{variant}\s+200\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$", out, re.M)
        assert row is not None, out
        assert row.group(4) == "yes", out  # the reduced total is right
        assert "-" not in row.groups()[:3], out  # everything was measured
    assert "targets" in out
    assert len(re.findall(r"^(PASS|FAIL) ", out, re.M)) == 3, out
    assert "errors:" not in out, out
