"""``run_notebook`` as a user sees it: output streamed while cells run, progress bars as a few lines, IPC kernels."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import nbformat
import pytest

from saetrack.notebooks import run_notebook

LINUX = sys.platform.startswith("linux")

# Run inside the kernel: its transport, and the listening sockets it owns (TCP from /proc/net/tcp*, Unix sockets
# from /proc/net/unix), found through the socket inodes among its open file descriptors.
SOCKETS_CELL = """\
import os
from ipykernel.kernelapp import IPKernelApp

print("transport", IPKernelApp.instance().transport)
if os.path.exists("/proc/self/fd"):
    owned = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            owned.add(target[len("socket:["):-1])

    def listening(table, state_column, inode_column, is_listening):
        if not os.path.exists(table):
            return []
        with open(table) as rows:
            fields = [row.split() for row in list(rows)[1:]]
        return [f for f in fields if is_listening(f[state_column]) and f[inode_column] in owned]

    tcp = [r[1] for t in ("/proc/net/tcp", "/proc/net/tcp6") for r in listening(t, 3, 9, lambda s: s == "0A")]
    unix = listening("/proc/net/unix", 3, 6, lambda flags: int(flags, 16) & 0x10000)
    print("tcp listeners", len(tcp), tcp)
    print("unix listeners", len(unix))
"""

# Prints, then waits (up to a minute) for the file the test's stream creates when it sees that line: "pong" proves
# the output reached the stream while the cell was still running.
PING_CELL = """\
import time
from pathlib import Path

print("ping", flush=True)
deadline = time.monotonic() + 60
while not Path(GO).exists() and time.monotonic() < deadline:
    time.sleep(0.05)
print("pong" if Path(GO).exists() else "timeout: the output was not streamed while the cell ran")
"""

BAR_CELL = """\
import time
from tqdm import tqdm

for _ in tqdm(range(120), desc="tiny bar", mininterval=0, miniters=1):
    time.sleep(0.002)
print("bar finished")
"""


def _notebook(folder: Path, name: str, *cells: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / name)


class _Watching(io.StringIO):
    """A text stream that creates ``go`` as soon as the word "ping" is written to it."""

    def __init__(self, go: Path) -> None:
        super().__init__()
        self.go = go

    def write(self, text: str) -> int:
        if "ping" in text:
            self.go.touch()
        return super().write(text)


def test_output_streams_while_the_notebook_runs_over_ipc_without_tcp(tmp_path: Path, monkeypatch, capfd) -> None:
    notebooks = tmp_path / "notebooks"
    go = tmp_path / "go"
    _notebook(notebooks, "90_ping.ipynb", f"GO = {str(go)!r}", SOCKETS_CELL, PING_CELL)
    monkeypatch.setattr("saetrack.notebooks.NOTEBOOK_DIR", notebooks)
    stream = _Watching(go)
    result = run_notebook("90_ping.ipynb", {}, tmp_path / "run", echo=stream, label="test:ping")
    echoed = stream.getvalue()
    assert "  test:ping | ping\n" in echoed and "  test:ping | pong\n" in echoed, echoed
    assert "  test:ping | transport ipc\n" in echoed
    if LINUX:
        assert "  test:ping | tcp listeners 0 []\n" in echoed, echoed
        unix = int(echoed.split("unix listeners ")[1].split()[0])
        assert unix >= 5  # shell, iopub, stdin, control, heartbeat (and the forked-output pipe)
    assert result.output.exists()
    captured = capfd.readouterr()  # the kernel process writes its own log to the inherited stderr
    for text in (echoed, captured.out, captured.err):
        assert "running over TCP" not in text and "without encryption" not in text and "IPKernelApp" not in text


def test_progress_bars_become_a_few_lines_and_kernel_chatter_is_dropped(tmp_path: Path, monkeypatch) -> None:
    notebooks = tmp_path / "notebooks"
    _notebook(notebooks, "91_bar.ipynb", BAR_CELL)
    monkeypatch.setattr("saetrack.notebooks.NOTEBOOK_DIR", notebooks)
    stream = io.StringIO()
    run_notebook("91_bar.ipynb", {}, tmp_path / "run", echo=stream, label="test:bar", progress_every=3600)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()
    bars = [line for line in lines if "tiny bar" in line]
    assert len(bars) == 1 and bars[0].startswith("  test:bar | tiny bar:   0%"), lines  # 120 redraws -> one line
    assert lines[-1] == "  test:bar | bar finished"
    assert not any("IProgress" in line or "autonotebook" in line for line in lines), lines


@pytest.mark.skipif(not LINUX, reason="reads /proc")
def test_no_kernel_is_left_behind(tmp_path: Path, monkeypatch) -> None:
    notebooks = tmp_path / "notebooks"
    _notebook(notebooks, "92_pid.ipynb", "import os\nprint(os.getpid())")
    monkeypatch.setattr("saetrack.notebooks.NOTEBOOK_DIR", notebooks)
    stream = io.StringIO()
    run_notebook("92_pid.ipynb", {}, tmp_path / "run", echo=stream)
    pid = int(stream.getvalue().split("|")[1])
    assert "92_pid" in stream.getvalue()  # the default label is the notebook's name
    status = Path(f"/proc/{pid}/status")
    assert not status.exists() or "zombie" in status.read_text()
