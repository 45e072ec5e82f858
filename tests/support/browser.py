"""playwright where it is installed (the browser fixture says why a test cannot run without it)."""

from __future__ import annotations

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    expect = sync_playwright = None

XSS = "<script>alert(1)</script>"
