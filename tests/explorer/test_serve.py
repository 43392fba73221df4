"""Finding a run's explorer (its own folder, or the published copy under figures/ with the same run data) and serving
it on 127.0.0.1."""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from saetrack import paths
from saetrack.explorer.serve import ExplorerNotFoundError, make_server, site_root


def _site(folder: Path, run_data: str = 'saetrack.receive("run",{"preset":"demo"});\n') -> Path:
    """A finished explorer folder: its page and its run data."""
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "index.html").write_text("<!doctype html><title>explorer</title>\n", encoding="utf-8")
    (folder / "data" / "run.js").write_text(run_data, encoding="utf-8")
    return folder


def test_site_root_of_an_explorer_folder(tmp_path: Path) -> None:
    site = _site(tmp_path / "figures" / "demo" / "explorer")
    assert site_root(site) == (site.parent.resolve(), "explorer/index.html")
    other = _site(tmp_path / "copied_site")  # a site under another name is served as it is
    assert site_root(str(other)) == (other.resolve(), "index.html")
    own = _site(tmp_path / "runs" / "demo" / "explorer")  # a run's own explorer (it holds the stage manifest)
    (own / "manifest.json").write_text("{}")
    assert site_root(own) == (own.resolve(), "index.html")  # served alone, never the run directory above it


def test_site_root_of_a_run_directory_prefers_the_identical_published_copy(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "demo"
    built = _site(run_dir / "explorer")
    published = paths.figures_dir("demo") / "explorer"  # $SAETRACK_FIGURES/demo/explorer (a temp dir)
    assert published.is_relative_to(Path(os.environ["SAETRACK_FIGURES"]).resolve())
    # no published copy: the run's own explorer
    assert site_root(run_dir) == (built.resolve(), "index.html")
    # a published copy of another build (different run data): still the run's own
    _site(published, 'saetrack.receive("run",{"preset":"other"});\n')
    assert site_root(run_dir) == (built.resolve(), "index.html")
    # the same run data: the figures folder, so the page's links to figures and notebooks resolve
    _site(published)
    assert site_root(run_dir) == (published.parent, "explorer/index.html")


def test_site_root_without_an_explorer_names_the_command(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "demo"
    run_dir.mkdir(parents=True)
    for missing in (run_dir, tmp_path / "nowhere"):
        with pytest.raises(ExplorerNotFoundError, match=r"saetrack run --preset \w+ --only explorer"):
            site_root(missing)
    (run_dir / "explorer").mkdir()
    (run_dir / "explorer" / "index.html").write_text("<html></html>")  # unfinished: no data/run.js
    with pytest.raises(ExplorerNotFoundError, match="`saetrack run --preset demo --only explorer`"):
        site_root(run_dir)
    assert issubclass(ExplorerNotFoundError, FileNotFoundError)


def test_make_server_serves_the_files_on_localhost(tmp_path: Path) -> None:
    site = _site(tmp_path / "explorer")
    server = make_server(site, 0)
    host, port = server.server_address[:2]
    assert host == "127.0.0.1" and port > 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    try:
        with opener.open(f"http://127.0.0.1:{port}/index.html", timeout=10) as response:
            assert response.status == 200
            assert response.read() == (site / "index.html").read_bytes()
        with opener.open(f"http://127.0.0.1:{port}/data/run.js", timeout=10) as response:
            assert response.read() == (site / "data" / "run.js").read_bytes()
        with pytest.raises(urllib.error.HTTPError) as missing:
            opener.open(f"http://127.0.0.1:{port}/absent.js", timeout=10)
        assert missing.value.code == 404
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
