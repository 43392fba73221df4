"""The headless-browser harness of the explorer tests: find a Chromium, launch it with Playwright, record errors.

Playwright drives the system's Chromium (Debian's ``chromium`` package) through ``executable_path``; no browser is
ever downloaded (never run ``playwright install``). The browser's console errors, uncaught page errors, failed
requests and any attempt to reach the network (any host but the loopback) are collected as text in
``page.saetrack_errors`` (a ``list[str]``), so a test can assert that a page ran cleanly with
``assert not page.saetrack_errors``.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

# names of the Chromium executable tried on PATH, in order, after $SAETRACK_CHROMIUM
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# flags every launch needs: root in a container has no user namespace sandbox, and /dev/shm may be 64 MB there
CHROMIUM_ARGS = ("--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu")
NO_CHROMIUM = "no Chromium found: install Debian's chromium (apt-get install chromium) or set SAETRACK_CHROMIUM"
NO_PLAYWRIGHT = "playwright is not installed: pip install -r requirements.txt (never `playwright install`)"
# a request to another host than this machine's loopback is an error: the explorer works from file:// (or from
# ``python -m saetrack.explorer`` on 127.0.0.1) with no network
NETWORK_URL = re.compile(r"^(https?|wss?|ftp)://(?!(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?(/|$))")


def chromium_path() -> str | None:
    """The Chromium executable to drive: ``$SAETRACK_CHROMIUM`` if set, else the first of ``CHROMIUM_NAMES`` on
    PATH (``/usr/bin/chromium`` on Debian), else None."""
    chosen = os.environ.get("SAETRACK_CHROMIUM")
    if chosen:
        return chosen if Path(chosen).is_file() else shutil.which(chosen)
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def file_url(path: Path) -> str:
    """The ``file://`` URL of a local file, as the explorer is opened (no server)."""
    return Path(path).resolve().as_uri()


def launch(playwright: Any, executable: str) -> Any:
    """A headless Chromium browser at ``executable``, launched by a started ``sync_playwright()`` object."""
    return playwright.chromium.launch(executable_path=executable, headless=True, args=list(CHROMIUM_ARGS))


def watch_errors(page: Any) -> list[str]:
    """Attach listeners to a Playwright page that append every console error, uncaught exception and failed
    request to a list, store that list as ``page.saetrack_errors`` and return it."""
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(f"console.error: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("requestfailed", lambda req: errors.append(f"requestfailed: {req.url} ({req.failure})"))
    page.saetrack_errors = errors
    return errors


def block_network(context: Any, errors: list[str]) -> None:
    """Abort every http(s)/ws(s)/ftp request of a browser context to a host other than the loopback (localhost,
    127.x.x.x, [::1]) and record it in ``errors``: the explorer must not reach the network."""

    def refuse(route: Any) -> None:
        errors.append(f"network request: {route.request.url}")
        route.abort()

    context.route(NETWORK_URL, refuse)
