"""The mage_nb JupyterLab extension in a real JupyterLab, in headless Chromium.

Opens ``dynamic_users.ipynb`` and checks, as a user sees them: a badge on every block cell
(kind, NAME, flags) before anything runs; a header edited into a malformed one and then a
valid one, with the badge following; "Run pipeline" from the notebook toolbar showing the run
tree in the Pipeline panel and every block there coloured completed with its instance counts;
a block in the panel taking the notebook to its cell; "Export pipeline…" from the context menu
writing the folder and saying so; the panel in the dark theme. Screenshots go to
``artifacts/browser/`` (lab-*.png).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest

NOTEBOOK = "dynamic_users.ipynb"
SECOND = 1000  # Playwright waits are in milliseconds
BLOCKS = [
    ("loader", "users"),
    ("transformer", "anonymize_user_data"),
    ("transformer", "clean_column_names"),
    ("transformer", "compute_engagement_score"),
    ("exporter", "engagement_report"),
]


def _cell_index(cells: Any, first_line: str) -> int:
    sources = cells.evaluate_all(
        "cells => cells.map(c => c.querySelector('.cm-content')?.textContent ?? '')"
    )
    return next(i for i, source in enumerate(sources) if source.startswith(first_line))


def _replace_first_line(page: Any, cell: Any, text: str) -> None:
    """Click into a cell's editor and type over its first line, as a user would."""
    cell.locator(".cm-content").click()
    page.keyboard.press("Control+Home")
    page.keyboard.press("Shift+End")
    page.keyboard.type(text)


@pytest.mark.timeout(240)
def test_badges_commands_and_panel(
    open_notebook: Callable[[str], None],
    kernel_idle: Callable[..., None],
    fail: Callable[[str, Exception], NoReturn],
    lab_server: Any,
    page: Any,
    console_log: list[str],
    artifacts: Path,
) -> None:
    from playwright.sync_api import expect

    open_notebook(NOTEBOOK)

    # -- badges, before anything ran ----------------------------------------------------------
    badges = page.locator(".jp-Notebook .mnb-badge")
    try:
        expect(badges).to_have_count(len(BLOCKS), timeout=20 * SECOND)
    except AssertionError as exc:
        fail("no badge on every block cell", exc)
    for badge, (kind, name) in zip(badges.all(), BLOCKS):
        expect(badge).to_have_attribute("data-kind", kind)
        expect(badge).to_have_attribute("data-name", name)
        expect(badge.locator(".mnb-badge-kind")).to_have_text(kind)
        expect(badge.locator(".mnb-badge-name")).to_have_text(name)
    expect(badges.nth(0).locator(".mnb-flag-dynamic")).to_have_text("dynamic")
    expect(badges.nth(3).locator(".mnb-flag-reduce")).to_have_text("reduce")
    expect(badges.nth(4).locator(".mnb-flag-upstream")).to_have_text("↑1")
    for cell in page.locator(".jp-CodeCell").all():
        prompt = cell.locator(".jp-InputPrompt").inner_text().strip()
        assert prompt in ("[ ]:", ""), f"a cell ran before the test ran one: {prompt}"

    # -- editing a header: a warning, then a new name ------------------------------------------
    cells = page.locator(".jp-Notebook .jp-CodeCell")
    index = _cell_index(cells, "%%transformer clean_column_names")
    cell = cells.nth(index)  # by position: its text is about to change
    _replace_first_line(page, cell, "%%transformer clean_columns --retries x")
    warning = cell.locator(".mnb-badge.mnb-badge-warning")
    expect(warning).to_contain_text("argument --retries: invalid non-negative integer value: 'x'")
    page.keyboard.press("End")
    for _ in range(len("x")):
        page.keyboard.press("Backspace")
    page.keyboard.type("2")
    badge = cell.locator(".mnb-badge")
    expect(badge).not_to_have_class(re.compile("mnb-badge-warning"))
    expect(badge).to_have_attribute("data-name", "clean_columns")
    expect(badge.locator(".mnb-flag-upstream")).to_have_text("↑1")
    page.keyboard.press("Escape")
    page.screenshot(path=str(artifacts / "lab-badges.png"))

    # -- the setup cells (imports, helpers), then "Run pipeline" from the toolbar --------------
    page.locator(".jp-CodeCell", has_text="%load_ext mage_nb").locator(".jp-InputPrompt").click()
    page.keyboard.press("Shift+Enter")
    page.keyboard.press("Shift+Enter")
    kernel_idle()
    toolbar = page.locator(".jp-NotebookPanel-toolbar")
    toolbar.locator('[data-command="mage-nb:run-pipeline"]').click()

    panel = page.locator("#mage-nb-pipeline")
    try:
        expect(panel).to_be_visible()
        expect(panel.locator(".mnb-root .mnb-status")).to_have_text(
            "completed", timeout=60 * SECOND
        )
    except AssertionError as exc:
        fail("Run pipeline did not show a completed run tree in the panel", exc)
    names = [name if name != "clean_column_names" else "clean_columns" for _, name in BLOCKS]
    items = panel.locator(".mnb-block-item")
    try:
        expect(items).to_have_count(len(names))
        for name in names:
            expect(items.filter(has_text=name).first).to_have_attribute(
                "data-status", "completed", timeout=20 * SECOND
            )
    except AssertionError as exc:
        fail("the panel did not show every block completed", exc)
    expect(items.filter(has_text="anonymize_user_data")).to_contain_text("3 ✓")
    expect(items.filter(has_text="engagement_report")).to_contain_text("1 ✓")
    expect(panel.locator(".mnb-status-completed.node, g.node.mnb-status-completed")).to_have_count(
        len(names), timeout=20 * SECOND
    )
    expect(panel.locator(".mnb-panel-status")).to_contain_text("last run completed")
    tree_buttons = panel.locator(".mnb-root .mnb-inst-button")
    expect(tree_buttons.filter(has_text="anonymize_user_data:for_user_1")).to_have_count(1)
    page.screenshot(path=str(artifacts / "lab-run-pipeline.png"))
    panel.screenshot(path=str(artifacts / "lab-pipeline-panel.png"))

    # -- a block in the panel takes the notebook to its cell (keyboard: focus + Enter) ---------
    target = items.filter(has_text="engagement_report")
    target.focus()
    page.keyboard.press("Enter")
    active = page.locator(".jp-Notebook .jp-Cell.jp-mod-active")
    expect(active).to_contain_text("%%exporter engagement_report")

    # -- "Export pipeline…" from the notebook's context menu -----------------------------------
    page.locator(".jp-Notebook .jp-Cell", has_text="%%block loader users").locator(
        ".jp-InputPrompt"
    ).click(button="right")
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Export pipeline…$")).click()
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_contain_text("Export pipeline")
    expect(dialog.locator(".mnb-export-dir")).to_have_value("export/dynamic_users-python")
    dialog.locator(".mnb-export-format").select_option("python")
    page.screenshot(path=str(artifacts / "lab-export-dialog.png"))
    dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
    toast = page.locator(".Toastify__toast", has_text="exported 5 blocks")
    try:
        expect(toast).to_be_visible(timeout=30 * SECOND)
    except AssertionError as exc:
        fail("Export pipeline… did not report the export", exc)
    out = lab_server.root_dir / "export" / "dynamic_users-python"
    assert (out / "pipeline.toml").is_file(), f"no pipeline.toml in {out}"
    assert "clean_columns" in (out / "pipeline.toml").read_text(encoding="utf-8")
    page.screenshot(path=str(artifacts / "lab-export-done.png"))

    # -- the same panel in the dark theme ------------------------------------------------------
    page.evaluate(
        "() => window.jupyterapp.commands.execute('apputils:change-theme',"
        " {theme: 'JupyterLab Dark'})"
    )
    page.wait_for_function(
        "() => document.body.dataset.jpThemeLight === 'false'", timeout=20 * SECOND
    )
    page.wait_for_timeout(500)
    panel.screenshot(path=str(artifacts / "lab-pipeline-panel-dark.png"))
    errors = [line for line in console_log if line.startswith("[pageerror]")]
    assert not errors, "uncaught errors in the page:\n" + "\n".join(errors)
