"""A page per job (/jobs/<id>) and the dashboard at a phone's width, in headless Chromium."""

from __future__ import annotations

import json

import pytest
from support import wait_until
from support.browser import expect
from support.dashboard import place, running_dashboard

pytestmark = pytest.mark.browser


@pytest.fixture
def queue(spool):
    place(spool, "pending", "waiting-one", command="sleep 60")
    place(spool, "completed", "done-one", last_duration=1.5,
          history=[{"attempt": 1, "exit_code": 0, "started_at": "2026-11-25T10:30:00.000Z"}])
    with open(spool.log_path("done-one"), "w") as handle:
        handle.write("=== attempt 1 ===\nthe build log\n")
    return spool


@pytest.fixture
def dashboard(queue):
    with running_dashboard(queue) as server:
        yield server


def test_a_job_has_its_own_address_with_fields_history_log_and_actions(page, dashboard, queue):
    page.goto(dashboard.url.rstrip("/") + "/jobs/done-one")
    expect(page.locator("#detail")).to_be_visible()
    expect(page.locator("#detail-title")).to_have_text("done-one")
    expect(page.locator("#detail-log")).to_contain_text("the build log")
    expect(page.locator("#history tbody tr")).to_have_count(1)
    expect(page.locator("#detail-cancel")).to_be_hidden()  # a completed job has nothing to cancel
    # Every id in the listing links to its page; following one changes the address.
    page.goto(dashboard.url)
    link = page.locator("#jobs tbody a.link", has_text="waiting-one")
    assert link.get_attribute("href") == "/jobs/waiting-one"
    link.click()
    expect(page.locator("#detail-title")).to_have_text("waiting-one")
    assert page.url.endswith("/jobs/waiting-one")
    page.locator("#detail-cancel").click()  # the action posts with the page's token
    wait_until(lambda: queue.find("waiting-one") == "dead", timeout=10)


def test_at_420_pixels_the_chart_labels_do_not_overlap(browser, dashboard):
    context = browser.new_context(viewport={"width": 420, "height": 900})
    tab = context.new_page()
    try:
        tab.goto(dashboard.url)
        chart = tab.locator("#chart")
        wait_until(lambda: chart.get_attribute("data-labels") is not None, timeout=10)
        boxes = json.loads(chart.get_attribute("data-labels"))
        assert len(boxes) >= 2  # "now" and at least one time
        ordered = sorted(boxes, key=lambda box: box["left"])
        for before, after in zip(ordered, ordered[1:]):
            assert before["right"] <= after["left"], (before, after)
        width = tab.evaluate("document.querySelector('#chart').clientWidth")
        assert all(0 <= box["left"] and box["right"] <= width for box in boxes)
        assert tab.evaluate("document.documentElement.scrollWidth") <= 420  # no sideways scrolling
    finally:
        context.close()
