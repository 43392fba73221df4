"""The browser harness itself: a real headless Chromium runs a local page's script from file://, and console
errors, uncaught exceptions, missing local files and network requests all land in ``page.saetrack_errors``."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.explorer.browser import NETWORK_URL, chromium_path, file_url

BUTTON_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>harness</title></head>
<body>
<p id="out">before</p>
<button id="go">go</button>
<script>
document.getElementById("go").addEventListener("click", () => {
  const item = document.createElement("li");
  item.className = "added";
  item.textContent = "added " + (2 + 3);
  document.body.appendChild(item);
  document.getElementById("out").textContent = "after";
});
</script>
</body></html>
"""


def _write(tmp_path: Path, name: str, html: str) -> str:
    path = tmp_path / name
    path.write_text(html, encoding="utf-8")
    return file_url(path)


def test_click_changes_the_dom_and_a_clean_page_has_no_errors(browser_page: Any, tmp_path: Path) -> None:
    browser_page.goto(_write(tmp_path, "button.html", BUTTON_PAGE))
    assert browser_page.text_content("#out") == "before"
    assert browser_page.locator("li.added").count() == 0
    browser_page.click("#go")
    assert browser_page.text_content("#out") == "after"
    assert browser_page.locator("li.added").all_text_contents() == ["added 5"]
    assert browser_page.saetrack_errors == []


def test_console_error_is_recorded(browser_page: Any, tmp_path: Path) -> None:
    browser_page.goto(_write(tmp_path, "console.html", '<script>console.log("fine"); console.error("x")</script>'))
    browser_page.wait_for_load_state("load")
    assert browser_page.saetrack_errors == ["console.error: x"]


def test_uncaught_exception_is_recorded(browser_page: Any, tmp_path: Path) -> None:
    browser_page.goto(_write(tmp_path, "throw.html", '<script>throw new Error("boom")</script>'))
    browser_page.wait_for_load_state("load")
    assert len(browser_page.saetrack_errors) == 1
    assert "pageerror" in browser_page.saetrack_errors[0] and "boom" in browser_page.saetrack_errors[0]


def test_missing_local_script_is_recorded(browser_page: Any, tmp_path: Path) -> None:
    browser_page.goto(_write(tmp_path, "missing.html", '<script src="vendor/not-there.js"></script>'))
    browser_page.wait_for_load_state("load")
    assert any("not-there.js" in error for error in browser_page.saetrack_errors), browser_page.saetrack_errors


def test_network_request_is_blocked_and_recorded(browser_page: Any, tmp_path: Path) -> None:
    html = '<script src="https://cdn.example.invalid/lib.js"></script><p id="p">ok</p>'
    browser_page.goto(_write(tmp_path, "network.html", html))
    browser_page.wait_for_load_state("load")
    assert browser_page.text_content("#p") == "ok"
    assert "network request: https://cdn.example.invalid/lib.js" in browser_page.saetrack_errors


@pytest.fixture
def local_server(tmp_path: Path) -> Iterator[str]:
    """A stdlib HTTP server on 127.0.0.1 serving ``tmp_path``, as ``python -m saetrack.explorer`` does; its URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_loopback_server_is_allowed(browser_page: Any, tmp_path: Path, local_server: str) -> None:
    (tmp_path / "lib.js").write_text('document.getElementById("p").textContent = "loaded";')
    (tmp_path / "index.html").write_text('<p id="p">waiting</p><script src="lib.js"></script>')
    browser_page.goto(f"{local_server}/index.html")
    assert browser_page.text_content("#p") == "loaded"
    assert browser_page.saetrack_errors == []


@pytest.mark.parametrize(
    ("url", "blocked"),
    [
        ("https://cdn.jsdelivr.net/npm/plotly.js", True),
        ("http://localhost.example.com/x.js", True),
        ("http://127.0.0.1.nip.io/x.js", True),
        ("wss://example.org/socket", True),
        ("http://localhost:8000/explorer/index.html", False),
        ("http://127.0.0.1/x.js", False),
        ("http://[::1]:9000/", False),
        ("file:///tmp/x.html", False),
    ],
)
def test_network_pattern_spares_only_the_loopback(url: str, blocked: bool) -> None:
    assert bool(NETWORK_URL.match(url)) is blocked


def test_chromium_path_prefers_the_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "my-chromium"
    fake.write_text("#!/bin/sh\n")
    monkeypatch.setenv("SAETRACK_CHROMIUM", str(fake))
    assert chromium_path() == str(fake)
    monkeypatch.setenv("SAETRACK_CHROMIUM", str(tmp_path / "absent"))
    assert chromium_path() is None


def test_chromium_path_searches_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAETRACK_CHROMIUM", raising=False)
    fake = tmp_path / "chromium-browser"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert chromium_path() == str(fake)
    monkeypatch.setenv("PATH", str(tmp_path / "empty") + os.pathsep)
    assert chromium_path() is None
