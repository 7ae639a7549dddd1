"""The stream benchmark still runs end to end (``bench/stream.py --smoke``)."""

from __future__ import annotations

import re

from bench_support import run_bench


def test_stream_bench_smoke() -> None:
    out = run_bench("stream.py", "--smoke", timeout=60)
    assert "variant" in out and "1st child ms" in out and "peak RSS MB" in out
    for variant in ("stream", "batch"):
        row = re.search(rf"^{variant}\s+200\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$", out, re.M)
        assert row is not None, out
        assert row.group(4) == "yes", out  # the reduced total is right
        assert "-" not in row.groups()[:3], out  # everything was measured
    assert "targets" in out
    assert len(re.findall(r"^(PASS|FAIL) ", out, re.M)) == 3, out
    assert "errors:" not in out, out
