"""The example notebook in a real JupyterLab, in headless Chromium.

Opens ``dynamic_users.ipynb``, runs all cells from the Run menu, waits for the run tree of the
last block cell to show the finished run with its instances, clicks one and checks that its
output appears inline. Screenshots of the page and of the widget are kept in
``artifacts/browser/`` (and, on failure, a screenshot and the browser console log).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest

NOTEBOOK = "dynamic_users.ipynb"
LAST_BLOCK = "%%exporter engagement_report"
INSTANCE = "anonymize_user_data:for_user_1"
USERS = ("for_user_1", "for_user_2", "for_user_3")
SECOND = 1000  # Playwright waits are in milliseconds


@pytest.mark.timeout(120)
def test_run_tree_in_jupyterlab(
    open_notebook: Callable[[str], None],
    kernel_idle: Callable[..., None],
    fail: Callable[[str, Exception], NoReturn],
    page: Any,
    console_log: list[str],
    artifacts: Path,
) -> None:
    from playwright.sync_api import expect

    open_notebook(NOTEBOOK)

    # Run → Run All Cells, as a user would.
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()

    cell = page.locator(".jp-CodeCell", has_text=LAST_BLOCK)
    tree = cell.locator(".mnb-root")
    try:
        expect(tree.locator(".mnb-status")).to_have_text("completed", timeout=60 * SECOND)
    except AssertionError as exc:
        fail("the run tree of the last block cell did not show a completed run", exc)
    kernel_idle()
    prompts = page.locator(".jp-CodeCell .jp-InputPrompt")
    expect(prompts).to_have_text([re.compile(r"^\[\d+\]:$")] * prompts.count())
    # JupyterLab renders tracebacks (and stderr) with this mime type; the notebook prints neither.
    stderr = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    assert stderr.count() == 0, "cells wrote errors:\n" + "\n".join(stderr.all_inner_texts())

    buttons = tree.locator(".mnb-inst-button")
    for user in USERS:
        expect(buttons.filter(has_text=f"anonymize_user_data:{user}")).to_have_count(1)
    expect(tree.locator(".mnb-block-name")).to_contain_text(
        ["users", "anonymize_user_data", "engagement_report"]
    )

    instance = buttons.filter(has=page.locator(".mnb-uuid", has_text=re.compile(f"^{INSTANCE}$")))
    instance.click()
    detail = tree.locator(f'.mnb-detail[aria-label="details of {INSTANCE}"]')
    try:
        expect(detail).to_be_visible(timeout=15 * SECOND)
        expect(detail.locator(".mnb-section", has_text="Output")).to_contain_text("'sessions': 12")
    except AssertionError as exc:
        fail(f"clicking {INSTANCE} did not show its output", exc)
    expect(detail.locator(".mnb-detail-head")).to_contain_text("completed")

    detail.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "jupyterlab-page.png"))
    tree.screenshot(path=str(artifacts / "run-tree-widget.png"))
    errors = [line for line in console_log if line.startswith("[pageerror]")]
    assert not errors, "uncaught errors in the page:\n" + "\n".join(errors)
