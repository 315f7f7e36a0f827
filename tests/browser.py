"""A real browser for the chat page: Debian's chromium driven by Playwright (no browser download).

A test module imports the fixtures (`from tests.browser import browser_fixture, page_fixture`);
they are named `browser` and `page`. Chromium starts once per module; each test gets a fresh
context (no shared cookies, cache or storage) and page.
Screenshots go to `test-artifacts/` at the repository root (git-ignored).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Error, Page, sync_playwright

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Every wait on the page fails after this long rather than hanging the suite.
PAGE_TIMEOUT_MS = 10_000


@pytest.fixture(scope="module", name="browser")
def browser_fixture() -> Iterator[Browser]:
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.fail(f"chromium not found at {CHROMIUM}: run scripts/install-system-deps.sh")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(name="page")
def page_fixture(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 960, "height": 720})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    uncaught: list[Error] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda error: uncaught.append(error))
        yield page
    finally:
        context.close()
    # An exception the page's script did not catch fails the test, even if the UI looked right.
    assert not uncaught, f"uncaught errors in the page: {[str(e) for e in uncaught]}"


def save_screenshot(page: Page, name: str) -> Path:
    """Save what the page shows now as `test-artifacts/<name>.png`; returns the path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path
