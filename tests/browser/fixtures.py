"""Fixtures of the browser tests, a pytest plugin of tests/conftest.py (tests/browser and tests/keycloak
share them): a real headless Chromium (Debian's `chromium`, driven by Playwright from PyPI: nothing is
downloaded at run time), one per test session, and a fresh browser context (cookies, 1366x768 viewport)
per test.

Screenshots go to OUTBOUND_SCIM_SCREENSHOTS (default build/screenshots); `make screenshots` copies them
into docs/images/ when the docs' copies should change.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from tests.support import ROOT

CHROMIUM = Path(os.environ.get("OUTBOUND_SCIM_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1366, "height": 768}  # a laptop screen: the pages must fit it without horizontal scroll
SCREENSHOTS = Path(os.environ.get("OUTBOUND_SCIM_SCREENSHOTS", ROOT / "build" / "screenshots"))


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (or set OUTBOUND_SCIM_CHROMIUM)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    opened = await browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    opened.set_default_timeout(15_000)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def page(context: BrowserContext) -> Page:
    return await context.new_page()


async def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
