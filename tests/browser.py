"""Test helpers for the browser test: Debian's Chromium, driven by Playwright.

No browser is downloaded: Playwright's pip wheel carries only its driver, and it launches the
system binary (`apt-get install chromium`, which `.ci/run` does) with a fresh profile.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = os.environ.get("MMPIPE_CHROMIUM", "/usr/bin/chromium")
# Flags that work here: no sandbox (root, containers), no GPU, nothing fetched in the background.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]
PROJECT = Path(__file__).resolve().parent.parent


def artifacts_dir(name: str) -> Path:
    """Where a test keeps its screenshots: $MMPIPE_TEST_ARTIFACTS/<name> or
    tests/artifacts/<name> (gitignored)."""
    root = Path(os.environ.get("MMPIPE_TEST_ARTIFACTS") or PROJECT / "tests" / "artifacts")
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def chromium_page(width: int = 1440, height: int = 1000, timeout_ms: int = 60_000):
    """One page of a fresh headless Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(timeout_ms)
            yield page
        finally:
            browser.close()
