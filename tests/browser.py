"""Headless Chromium for the tests of what a reviewer looks at (the map page, diff's Mermaid chart):
Debian's ``chromium`` driven by playwright, offline. A page records its console errors, page errors
and every request it makes, so a test can assert that it loaded nothing and broke nothing.

Screenshots are kept under build/artifacts/ for a person to look at.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "build" / "artifacts"


def skip(reason: str) -> None:
    print(f"skipped: {reason}")
    pytest.skip(reason)


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched Chromium; the test is skipped, with the reason printed, only where it cannot run."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as exc:
        skip(f"playwright is not installed ({exc}); `make .venv/.installed` installs it")
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; `make debs` does)")
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        except Error as exc:
            skip(f"Chromium cannot start here: {str(exc).splitlines()[0]}")
        try:
            yield launched
        finally:
            launched.close()


class Page:
    """A page at 1400x900, recording console errors, page errors and every request; opened from a
    file when ``path`` is given, else blank (for a test that injects its own content)."""

    def __init__(self, browser: Any, path: Path | None = None) -> None:
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page = browser.new_page(viewport={"width": 1400, "height": 900})
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.url = path.resolve().as_uri() if path is not None else "about:blank"
        if path is not None:
            self.page.goto(self.url, wait_until="load")

    def attributes(self, selector: str, name: str) -> list[str]:
        values: list[str] = self.page.eval_on_selector_all(
            selector, f"els => els.map(e => e.getAttribute('{name}'))")
        return values

    def screenshot(self, name: str, full_page: bool = False) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def close(self) -> None:
        self.page.close()
