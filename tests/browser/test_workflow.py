"""The dashboard's workflow parts in headless Chromium: groups, pause buttons, waiting jobs (README, "Workflows")."""

from __future__ import annotations

import pytest
from support.browser import XSS, expect
from support.dashboard import running_dashboard

from queuectl.features import workflow

pytestmark = pytest.mark.browser


@pytest.fixture
def dashboard(spool):
    workflow.set_limit(spool, "gpu", 2)
    spool.enqueue({"id": "train", "command": "true", "group": "gpu"})
    spool.enqueue({"id": "report", "command": f"echo {XSS}", "after": ["train"]})
    with running_dashboard(spool) as server:
        yield server


def test_groups_waiting_jobs_and_the_pause_buttons(page, spool):  # noqa: F811 - the imported fixture
    expect(page.locator("#groups tbody")).to_contain_text("gpu")
    expect(page.locator("#groups tbody tr", has_text="gpu")).to_contain_text("2")
    row = page.locator("#jobs tbody tr", has_text="report")
    expect(row).to_contain_text("waiting")
    expect(row).to_contain_text("waits for train (pending)")
    expect(row).to_contain_text(XSS)  # shown as text, never run (the fixture fails on a dialog)

    page.locator("#pause-toggle").click()
    expect(page.locator("#paused-badge")).to_be_visible()
    expect(page.locator("#pause-toggle")).to_have_text("Resume")
    assert workflow.is_paused(spool)
    page.locator("#pause-toggle").click()
    expect(page.locator("#paused-badge")).to_be_hidden()
    assert not workflow.is_paused(spool)

    page.locator('[data-group="gpu"]').click()
    expect(page.locator("#groups tbody tr", has_text="gpu")).to_contain_text("paused")
    assert workflow.is_paused(spool, "gpu")
    page.locator('[data-group="gpu"]').click()
    expect(page.locator('[data-group="gpu"]')).to_have_text("Pause")
    assert not workflow.is_paused(spool, "gpu")
