"""Messages from the browser: instance details (bounded mime bundles), stop, filter, search."""

from __future__ import annotations

import base64
from types import SimpleNamespace
from typing import Any

import pytest
from helpers import run_cells

from mage_nb.engine import PipelineRun
from mage_nb.widget import (
    MAX_DISPLAYS,
    MAX_ENTRY_BYTES,
    MAX_STREAM_BYTES,
    RunTree,
    mime_bundle,
)


class Picture:
    def _repr_png_(self) -> bytes:
        return b"\x89PNG\r\n\x1a\nfake"


class HugeHtml:
    def _repr_html_(self) -> str:
        return "<p>" + "x" * (MAX_ENTRY_BYTES + 10) + "</p>"

    def __repr__(self) -> str:
        return "HugeHtml()"


@pytest.fixture(scope="module")
def run() -> PipelineRun:
    return run_cells(
        "%%loader record\n{'a': 1, 'b': [1, 2]}",
        "%%loader frame\nimport pandas as pd\npd.DataFrame({'x': [1, 2, 3], 'y': ['p', 'q', 'r']})",
        "%%loader long\n'x' * 300_000",
        "%%loader broken\nraise KeyError('missing')",
        "%%transformer after\nbroken",
    )


def detail_of(run: PipelineRun, uuid: str) -> dict[str, Any]:
    widget = RunTree()
    widget.attach(run)
    widget.handle_message({"type": "detail", "uuid": uuid})
    assert widget.selected == uuid
    return dict(widget.detail)


def test_a_dict_output_is_shown_as_plain_text(run: PipelineRun) -> None:
    detail = detail_of(run, "record")
    assert detail["status"] == "completed" and detail["attempts"] == 1
    assert detail["output"] == {
        "data": {"text/plain": "{'a': 1, 'b': [1, 2]}"},
        "truncated": False,
        "note": None,
    }
    assert detail["error"] is None and detail["truncated"] is False


def test_a_dataframe_output_is_an_html_table(run: PipelineRun) -> None:
    output = detail_of(run, "frame")["output"]
    assert list(output["data"]) == ["text/html"]
    assert "<table" in output["data"]["text/html"] and "<td>q</td>" in output["data"]["text/html"]


def test_a_long_output_is_cut_with_a_note(run: PipelineRun) -> None:
    detail = detail_of(run, "long")
    output = detail["output"]
    assert output["truncated"] is True and "200 kB" in output["note"]
    assert len(output["data"]["text/plain"].encode()) <= MAX_ENTRY_BYTES
    assert detail["truncated"] is True and detail["notes"]


def test_a_failed_instance_shows_its_error_and_traceback(run: PipelineRun) -> None:
    detail = detail_of(run, "broken")
    assert detail["output"] is None
    assert detail["error"]["type"] == "KeyError"
    assert "missing" in detail["error"]["message"]
    assert "raise KeyError('missing')" in detail["error"]["traceback"]
    after = detail_of(run, "after")
    assert after["status"] == "upstream_failed" and after["error"]["type"] == "UpstreamFailed"


def test_captured_stdout_stderr_and_displays_are_shown(run: PipelineRun) -> None:
    inst = run.block_runs["record"]
    inst.captured = SimpleNamespace(
        stdout="hello\n",
        stderr="careful\n",
        displays=[({"text/plain": "hi", "text/html": "<b>hi</b>"}, {}), ({"text/plain": "x"}, {})],
    )
    try:
        detail = detail_of(run, "record")
    finally:
        inst.captured = None
    assert (detail["stdout"], detail["stderr"]) == ("hello\n", "careful\n")
    assert [d["data"] for d in detail["displays"]] == [
        {"text/html": "<b>hi</b>"},
        {"text/plain": "x"},
    ]


def test_long_captured_output_is_cut_to_fifty_kilobytes(run: PipelineRun) -> None:
    inst = run.block_runs["record"]
    many = [({"text/plain": str(i)}, {}) for i in range(MAX_DISPLAYS + 5)]
    inst.captured = SimpleNamespace(stdout="y" * 60_000, stderr="", displays=many)
    try:
        detail = detail_of(run, "record")
    finally:
        inst.captured = None
    assert len(detail["stdout"]) == MAX_STREAM_BYTES
    assert len(detail["displays"]) == MAX_DISPLAYS
    assert detail["truncated"] is True
    assert any("stdout" in n for n in detail["notes"])
    assert any("displays" in n for n in detail["notes"])


def test_images_are_base64_png_and_oversized_html_falls_back_to_text() -> None:
    png = mime_bundle(Picture())
    assert base64.b64decode(png["data"]["image/png"]) == b"\x89PNG\r\n\x1a\nfake"
    huge = mime_bundle(HugeHtml())
    assert huge["data"] == {"text/plain": "HugeHtml()"}
    assert huge["truncated"] is True and "HTML" in huge["note"]


def test_an_unknown_uuid_clears_the_detail(run: PipelineRun) -> None:
    assert detail_of(run, "no such instance") == {}


def test_stop_calls_the_stop_callback_through_the_widget_message_path() -> None:
    widget = RunTree()
    calls: list[str] = []
    widget.handle_message({"type": "stop"})  # no callback: nothing happens
    widget.stop_callback = lambda: calls.append("stop")
    widget._handle_custom_msg({"type": "stop"}, [])  # how ipywidgets delivers model.send
    assert calls == ["stop"]


def test_filter_and_search_messages_set_the_traits() -> None:
    widget = RunTree()
    widget.handle_message({"type": "filter", "status": "failed"})
    widget.handle_message({"type": "search", "text": "t:1"})
    assert (widget.filter, widget.search) == ("failed", "t:1")
    widget.handle_message({"type": "filter", "status": "bogus"})
    widget.handle_message({"type": "nonsense"})
    widget.handle_message(["not", "a", "dict"])
    assert widget.filter == ""
