"""Finding a run's explorer and serving it on localhost (the stdlib's HTTP server, bound to 127.0.0.1 only)."""

from __future__ import annotations

import functools
import http.server
import os
from collections.abc import Callable
from pathlib import Path

from saetrack import paths

__all__ = ["ExplorerNotFoundError", "make_server", "serve", "site_root"]

#: The page every explorer folder holds, and the data file that marks a finished one.
INDEX_PAGE = "index.html"
RUN_DATA = "data/run.js"


class ExplorerNotFoundError(FileNotFoundError):
    """No finished explorer at the path given (the message says which command builds one)."""


def _is_site(folder: Path) -> bool:
    return (folder / INDEX_PAGE).is_file() and (folder / RUN_DATA).is_file()


def site_root(path: str | os.PathLike[str]) -> tuple[Path, str]:
    """The folder to serve for ``path`` and the page's address inside it: ``(root, "explorer/index.html")``.

    ``path`` is an explorer folder (``figures/<preset>/explorer``, ``runs/<preset>/explorer``) or a run directory
    (``runs/<preset>``). A published copy (``figures/<preset>/explorer``, no stage manifest) is served with the figures
    folder above it, so the page's links to the figures and notebook renders work; a run's own ``explorer/`` folder (it
    holds the stage manifest) is served alone, never the run directory around it. For a run directory whose published
    copy holds the same run data, that copy is served; otherwise the run's own folder. Raises
    :class:`ExplorerNotFoundError` naming the command that builds it.
    """
    given = Path(path).expanduser().resolve()
    if _is_site(given):
        published = given.name == paths.EXPLORER_DIR and not (given / paths.MANIFEST).exists()
        return (given.parent, f"{given.name}/{INDEX_PAGE}") if published else (given, INDEX_PAGE)
    built = given / paths.EXPLORER_DIR
    if not given.is_dir() or not _is_site(built):
        raise ExplorerNotFoundError(
            f"no explorer at {given}: give a run directory (runs/<preset>) or an explorer folder; build it with "
            f"`saetrack run --preset {given.name} --only explorer`."
        )
    published = paths.figures_dir(given.name) / paths.EXPLORER_DIR
    if _is_site(published) and (published / RUN_DATA).read_bytes() == (built / RUN_DATA).read_bytes():
        return published.parent, f"{paths.EXPLORER_DIR}/{INDEX_PAGE}"
    return built, INDEX_PAGE


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Static files, no request log on stderr (the command prints the address once)."""

    def log_message(self, format: str, *args: object) -> None:
        return


def make_server(root: Path, port: int = 0) -> http.server.ThreadingHTTPServer:
    """An HTTP server of the static files under ``root`` on ``127.0.0.1:port`` (``0``: any free port)."""
    handler: Callable[..., _QuietHandler] = functools.partial(_QuietHandler, directory=str(root))
    return http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), handler)


def serve(path: str | os.PathLike[str], port: int = 8765, open_browser: bool = True) -> None:
    """Serve the explorer of ``path`` (:func:`site_root`) on localhost until interrupted, printing its address and
    opening it in the default browser unless ``open_browser`` is false."""
    root, page = site_root(path)
    server = make_server(root, port)
    url = f"http://127.0.0.1:{server.server_address[1]}/{page}"
    print(f"serving {root} at {url} (Ctrl-C to stop)", flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        server.server_close()
