"""The shared header vectors (tests/spec_cases.json) through the Python parser.

The same file is run through the JupyterLab extension's parser (labextension/test/), so a
block badge in the browser and the kernel never read a header differently.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from mage_nb.engine.errors import HeaderError
from mage_nb.engine.spec import parse_header

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).resolve().parents[1] / "spec_cases.json").read_text(encoding="utf-8")
)


def test_the_vectors_cover_both_outcomes() -> None:
    assert sum("spec" in c for c in CASES) >= 20
    assert sum("spec" not in c for c in CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[repr(c["header"]) for c in CASES])
def test_header_vector(case: dict[str, Any]) -> None:
    if "spec" in case:
        fields = dataclasses.asdict(parse_header(case["header"]))
        for key in ("source", "origin", "header"):
            fields.pop(key)
        if fields["upstream"] is not None:
            fields["upstream"] = list(fields["upstream"])
        assert fields == case["spec"]
        return
    with pytest.raises(HeaderError) as info:
        parse_header(case["header"])
    if "error" in case:
        assert str(info.value) == case["error"]
    else:
        assert str(info.value).startswith(case["error_prefix"])
