"""Chromium for the browser tests (Debian's /usr/bin/chromium, driven by playwright).

Without chromium or playwright these tests are skipped, unless
QUEUECTL_REQUIRE_BROWSER=1 (set by CI), which makes them fail instead.
QUEUECTL_TEST_CHROMIUM names another chromium binary.
"""

from __future__ import annotations

import os

import pytest
from support.browser import sync_playwright

CHROMIUM = os.environ.get("QUEUECTL_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

def browser_missing(reason: str) -> None:
    if os.environ.get("QUEUECTL_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}, and QUEUECTL_REQUIRE_BROWSER=1 requires the browser tests")
    pytest.skip(f"{reason}: install Debian's chromium (apt-get install chromium) to run the browser tests")


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        browser_missing(f"no chromium at {CHROMIUM}")
    if sync_playwright is None:
        browser_missing("the playwright package is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def on_dialog(dialog, problems: list) -> None:
    """Retry-all asks for confirmation: say yes. Any other dialog (an injected alert) is a failure."""
    if dialog.type == "confirm":
        dialog.accept()
    else:
        problems.append(f"unexpected {dialog.type}: {dialog.message}")
        dialog.dismiss()


@pytest.fixture
def page(browser, dashboard):
    """The dashboard open in a fresh profile (localStorage starts empty); fails on any page error.

    It depends on `dashboard` so the server outlives the page's last poll.
    """
    context = browser.new_context(viewport={"width": 1360, "height": 1000}, color_scheme="light")
    tab = context.new_page()
    problems = []
    tab.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    tab.on("pageerror", lambda error: problems.append(str(error)))
    tab.on("dialog", lambda dialog: on_dialog(dialog, problems))
    tab.goto(dashboard.url)
    yield tab
    context.close()
    assert problems == [], "the page reported errors (a CSP violation shows up here too)"
