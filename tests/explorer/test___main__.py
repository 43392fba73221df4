"""``python -m saetrack.explorer``: its arguments reach ``serve``; a missing explorer or a busy port is one line on
stderr and exit code 2, never a traceback."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from saetrack.explorer import __main__ as cli
from saetrack.explorer.serve import make_server


def test_a_missing_explorer_is_one_line_and_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "runs" / "nothing-here"
    assert cli.main([str(missing), "--no-browser"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("saetrack.explorer: no explorer at ")
    assert "saetrack run --preset nothing-here --only explorer" in lines[0]


def test_the_arguments_reach_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(cli, "serve", lambda path, port, open_browser: calls.append((path, port, open_browser)))
    assert cli.main(["runs/demo", "--port", "0", "--no-browser"]) == 0
    assert cli.main(["figures/demo/explorer"]) == 0
    assert calls == [("runs/demo", 0, False), ("figures/demo/explorer", 8765, True)]


def test_a_busy_port_is_one_line_and_exit_code_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def busy(path: str, port: int, open_browser: bool) -> None:
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(cli, "serve", busy)
    assert cli.main(["runs/demo", "--port", "8765", "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert err == "saetrack.explorer: [Errno 98] Address already in use\n"


def test_a_port_in_use_on_a_real_explorer_is_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = tmp_path / "explorer"
    (site / "data").mkdir(parents=True)
    (site / "index.html").write_text("<html></html>", encoding="utf-8")
    (site / "data" / "run.js").write_text('saetrack.receive("run",{});\n', encoding="utf-8")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(OSError):  # checked first: main would otherwise serve until interrupted
            make_server(site, port).server_close()
        assert cli.main([str(site), "--port", str(port), "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("saetrack.explorer: ") and err.count("\n") == 1 and "Traceback" not in err
