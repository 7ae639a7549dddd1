"""The browser side ships inside the package and speaks the widget's message protocol."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cells

from mage_nb.widget import RunTree, instance_detail
from mage_nb.widget.feed import WidgetFeed

STATIC = resources.files("mage_nb.widget") / "static"
HARNESS = Path(__file__).with_name("dom_harness.mjs")
NODE = shutil.which("node")


def js() -> str:
    return (STATIC / "run_tree.js").read_text(encoding="utf-8")


def test_the_js_and_css_are_files_of_the_package() -> None:
    assert (STATIC / "run_tree.js").is_file() and (STATIC / "run_tree.css").is_file()
    assert str(RunTree._esm) == js()
    assert str(RunTree._css) == (STATIC / "run_tree.css").read_text(encoding="utf-8")
    assert re.search(r"export default \{ render \}", js())


def test_the_js_sends_only_messages_the_widget_handles_and_all_the_protocol_ones() -> None:
    sent = set(re.findall(r'model\.send\(\{ type: "(\w+)"', js()))
    assert sent == {"detail", "page", "stop"}
    assert sent <= set(RunTree._handlers)
    for trait in ("filter", "search", "selected"):
        assert f'model.set("{trait}"' in js()
    for trait in ("run", "blocks", "tree", "detail", "selected", "filter", "search"):
        assert f'"change:{trait}"' in js()


def test_theme_variables_always_have_fallbacks() -> None:
    css = (STATIC / "run_tree.css").read_text(encoding="utf-8")
    assert "--jp-layout-color1" in css and "--jp-error-color1" in css
    assert not re.findall(r"var\(--jp-[\w-]+\)", css)


@pytest.fixture
def module(tmp_path: Path) -> Path:
    if NODE is None:
        pytest.skip("node is not installed")
    target = tmp_path / "run_tree.mjs"
    target.write_text(js(), encoding="utf-8")
    check = subprocess.run([NODE, "--check", str(target)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    return target


def test_the_view_renders_a_real_state_and_sends_the_protocol(module: Path, tmp_path: Path) -> None:
    widget = RunTree()
    run = run_cells(
        "%%loader a --dynamic\nlist(range(30))",
        "%%transformer t\nif a == 25:\n    raise ValueError('bad')\n'<b>' + str(a) + '</b>'",
        listeners=[WidgetFeed(widget, interval=0.01)],
    )
    state: dict[str, Any] = widget.synced_state()
    fixture = instance_detail(run.block_runs["a"])
    fixture["output"] = {
        "data": {"text/html": "<i>x</i><script>bad()</script>"},
        "truncated": False,
    }
    state["detail_fixture"] = fixture
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state), encoding="utf-8")
    proc = subprocess.run(
        [NODE or "node", str(HARNESS), str(module), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["blockRows"] == 2
    assert report["instanceRows"] == 1 + 20 + 1  # a, the first 20 items' t, and the failed t:25
    assert report["moreButtons"] == ["… 9 more a items"]
    assert report["stopDisabled"] is True
    assert f"run {run.run_id}" in report["header"] and "31/31" in report["header"]
    assert report["filterAfterClick"] == "failed" and report["pressed"] == ["failed"]
    assert report["detailPanels"] == 1 and "attempts 1" in report["detailText"]
    assert len(report["htmlBoxes"]) == 1  # output HTML goes into its own container
    assert report["stopEnabledWhenRunning"] is True
    assert report["sent"] == [
        {"type": "detail", "uuid": "a"},
        {"type": "page", "node": widget.tree[0]["id"], "offset": 21},
        {"type": "stop"},
    ]
    assert report["rowsForBigTree"] <= 1501
    assert report["listenersLeft"] == 0
