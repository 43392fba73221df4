"""Fixtures of the explorer tests: one headless Chromium per test module, a fresh page (own context) per test.

``browser_page`` yields a Playwright ``Page`` whose ``saetrack_errors`` attribute is a ``list[str]`` that fills
with console errors, uncaught page errors, failed requests and blocked network requests (see ``browser.py``).
The tests skip, with the reason, where no Chromium or no ``playwright`` package is found.

The browser lives for one module, not the session: while Playwright's sync API is open its asyncio loop counts as
running in the main thread, so ``asyncio.run`` (nbclient, papermill, jupyter_client) would fail in later tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.explorer.browser import NO_CHROMIUM, NO_PLAYWRIGHT, block_network, chromium_path, launch, watch_errors

PAGE_TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def chromium_browser() -> Iterator[Any]:
    """One headless Chromium for a test module (launching costs about a second), closed after its last test."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(NO_PLAYWRIGHT)
    executable = chromium_path()
    if executable is None:
        pytest.skip(NO_CHROMIUM)
    with sync_playwright() as playwright:
        browser = launch(playwright, executable)
        yield browser
        browser.close()


@pytest.fixture
def browser_page(chromium_browser: Any) -> Iterator[Any]:
    """A new page in its own browser context, offline, with its errors collected in ``page.saetrack_errors``."""
    context = chromium_browser.new_context()
    page = context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    block_network(context, watch_errors(page))
    yield page
    context.close()
