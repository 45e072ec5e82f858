"""The dashboard page in headless Chromium (Debian's /usr/bin/chromium, driven by playwright).

Without chromium or playwright these tests are skipped, unless
QUEUECTL_REQUIRE_BROWSER=1 (set by CI), which makes them fail instead.
QUEUECTL_TEST_CHROMIUM names another chromium binary. Screenshots go to
the test's tmp_path.
"""

from __future__ import annotations

import os

import pytest
from support import wait_until
from support.browser import XSS, expect
from support.dashboard import exists, live_worker, place, running_dashboard

pytestmark = pytest.mark.browser


@pytest.fixture
def queue(spool):
    """A spool with a job in every state, one of them carrying markup in its command."""
    place(spool, "pending", "p1")
    place(spool, "pending", "p2")
    place(spool, "pending", "p3", command="sleep 60", priority=5)
    place(spool, "processing", "r1", command="make report")
    place(spool, "completed", "c1", last_duration=1.2, history=[{"attempt": 1, "exit_code": 0}])
    with open(spool.log_path("c1"), "w") as handle:
        handle.write("=== attempt 1 ===\nbuilding the report\ndone\n")
    place(spool, "failed", "f1", command="curl http://example.invalid", attempts=1, last_error="exit code 6")
    place(spool, "dead", "dead-xss", command=XSS, attempts=4, last_error="exit code 1")
    place(spool, "dead", "dead-backup", command="tar czf /backup.tgz /home", attempts=4, last_error="exit code 2")
    place(spool, "dead", "dead-invalid", command=None)
    return spool


@pytest.fixture
def dashboard(queue):
    with live_worker(queue, "worker-1", "r1"), running_dashboard(queue) as server:
        yield server


def test_page_shows_counts_workers_and_escaped_jobs(page, tmp_path):
    expect(page.locator('[data-count="pending"]')).to_have_text("3")
    expect(page.locator('[data-count="processing"]')).to_have_text("1")
    expect(page.locator('[data-count="completed"]')).to_have_text("1")
    expect(page.locator('[data-count="failed"]')).to_have_text("1")
    expect(page.locator('[data-count="dead"]')).to_have_text("3")
    expect(page.locator("#worker-count")).to_have_text("1")
    expect(page.locator("#workers tbody")).to_contain_text("worker-1")
    expect(page.locator("#workers tbody")).to_contain_text("r1")
    # The markup is shown as text, not run: no script element, no alert dialog (the fixture checks).
    expect(page.locator("#jobs tbody")).to_contain_text(XSS)
    expect(page.locator("#dlq tbody")).to_contain_text("dead-xss")
    assert page.locator("#jobs tbody script, #dlq tbody script").count() == 0
    expect(page.locator("#connection")).to_contain_text("live")
    assert page.locator("#chart").bounding_box()["height"] > 100
    page.screenshot(path=str(tmp_path / "dashboard-light.png"), full_page=True)


def test_schedules_show_their_next_run_as_text(page, queue, tmp_path):
    from queuectl.features import schedules
    expect(page.locator("#schedules-empty")).to_be_visible()
    schedules.add(queue, "xss", {"every": "1h", "job": {"command": XSS}})
    schedules.add(queue, "nightly", {"cron": "30 2 * * *", "tz": "Europe/Berlin", "paused": True,
                                     "job": {"command": "backup"}})
    rows = page.locator("#schedules tbody tr")
    expect(rows).to_have_count(2, timeout=15_000)
    expect(rows.nth(0)).to_contain_text("xss")
    expect(rows.nth(0)).to_contain_text("every 3600s")
    expect(rows.nth(0)).to_contain_text("in ")
    expect(rows.nth(0)).to_contain_text(XSS)
    expect(rows.nth(1)).to_contain_text("30 2 * * * (Europe/Berlin)")
    expect(rows.nth(1)).to_contain_text("paused")
    assert page.locator("#schedules tbody script").count() == 0
    page.screenshot(path=str(tmp_path / "dashboard-schedules.png"), full_page=True)


def test_the_page_follows_the_spool_without_a_click(page, queue):
    """SPEC section 7: live refresh. Jobs arriving and leaving outside the page show up by themselves."""
    expect(page.locator('[data-count="pending"]')).to_have_text("3")
    place(queue, "pending", "arrived", command="echo from elsewhere")
    os.rename(os.path.join(queue.dir("failed"), "f1.json"), os.path.join(queue.dir("dead"), "f1.json"))
    expect(page.locator('[data-count="pending"]')).to_have_text("4", timeout=15_000)
    expect(page.locator('[data-count="failed"]')).to_have_text("0", timeout=15_000)
    expect(page.locator("#jobs tbody")).to_contain_text("echo from elsewhere", timeout=15_000)


def test_retry_button_moves_a_dead_job_back_to_pending(page, queue):
    page.locator('[data-retry="dead-backup"]').click()
    wait_until(lambda: exists(queue, "pending", "dead-backup"), timeout=10, message="dead-backup in pending/")
    assert not exists(queue, "dead", "dead-backup")
    expect(page.locator("#toast")).to_contain_text("dead-backup is pending again")
    expect(page.locator('[data-count="dead"]')).to_have_text("2")
    expect(page.locator('[data-count="pending"]')).to_have_text("4")
    expect(page.locator('[data-retry="dead-backup"]')).to_have_count(0)
    # A job that was never valid has no retry button.
    expect(page.locator("#dlq tbody tr", has_text="dead-invalid")).to_contain_text("invalid")
    expect(page.locator('[data-retry="dead-invalid"]')).to_have_count(0)


def test_retry_all_after_confirming(page, queue):
    page.locator("#retry-all").click()
    wait_until(lambda: queue.counts()["dead"] == 1, timeout=10, message="the valid dead jobs retried")
    expect(page.locator("#toast")).to_contain_text("Retried 2; skipped 1")
    expect(page.locator('[data-count="dead"]')).to_have_text("1")


def test_job_detail_shows_the_log(page, tmp_path):
    page.locator("#jobs tbody a.link", has_text="c1").click()  # ids are links to the job page now
    drawer = page.locator("#detail")
    expect(drawer).to_be_visible()
    expect(page.locator("#detail-title")).to_have_text("c1")
    expect(page.locator("#detail-log")).to_contain_text("building the report")
    expect(page.locator("#detail-fields")).to_contain_text("1.2 s")
    page.screenshot(path=str(tmp_path / "dashboard-detail.png"))
    page.keyboard.press("Escape")
    expect(drawer).to_be_hidden()


def test_filter_search_and_paging(page):
    page.locator("#state-filter button", has_text="dead").click()
    expect(page.locator("#jobs tbody tr")).to_have_count(3)
    page.locator("#search").fill("BACKUP")
    expect(page.locator("#jobs tbody tr")).to_have_count(1)
    expect(page.locator("#page-info")).to_have_text("1–1 of 1")
    page.locator('.card[data-state="pending"]').click()
    page.locator("#search").fill("")
    expect(page.locator("#jobs tbody tr")).to_have_count(3)
    expect(page.locator('#state-filter button[aria-pressed="true"]')).to_have_text("pending")


def test_theme_toggle_is_remembered(page, tmp_path):
    html = page.locator("html")
    expect(html).to_have_attribute("data-theme", "light")  # the system preference at first
    light_background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    page.locator("#theme-toggle").click()
    expect(html).to_have_attribute("data-theme", "dark")
    assert page.evaluate("localStorage.getItem('queuectl.theme')") == "dark"
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") != light_background
    page.reload()
    expect(html).to_have_attribute("data-theme", "dark")
    expect(page.locator('[data-count="dead"]')).to_have_text("3")
    page.screenshot(path=str(tmp_path / "dashboard-dark.png"), full_page=True)
    page.locator("#theme-toggle").click()
    page.reload()
    expect(html).to_have_attribute("data-theme", "light")
