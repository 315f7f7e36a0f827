"""A real browser for the chat page: Debian's chromium driven by Playwright (no browser download).

`launch_chromium` starts it with the flags this machine needs; the tests' `browser` and `page`
fixtures (tests/conftest.py) use it. Screenshots go to `test-artifacts/` at the repository root
(git-ignored).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from playwright.sync_api import Browser, Page, Playwright

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
# Every wait on a page fails after this long rather than hanging the suite.
PAGE_TIMEOUT_MS = 10_000


def launch_chromium(playwright: Playwright) -> Browser:
    """Debian's chromium, headless. Raises `RuntimeError` naming the install script when it is
    missing (an error, not a skip)."""
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        raise RuntimeError(f"chromium not found at {CHROMIUM}: run scripts/install-system-deps.sh")
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def save_screenshot(page: Page, name: str) -> Path:
    """Save what the page shows now as `test-artifacts/<name>.png`; returns the path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path
