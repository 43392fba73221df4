"""Running the scale study's other sizes as parallel one-thread run_all.py processes that die with their parent."""

from __future__ import annotations

import ctypes
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saetrack import paths
from saetrack.config.run import RunConfig
from saetrack.notebooks import NotebookFailed

__all__ = [
    "SIZE_STAGES",
    "STREAM_ECHO_EVERY_S",
    "run_parallel",
]

#: A size's streamed notebook output (its cells' prints and progress lines) is echoed at most this often.
STREAM_ECHO_EVERY_S = 30.0


def _echo_line(line: str, now: float, last_streamed: float) -> bool:
    """Whether a child ``run_all.py``'s output line is echoed: its stage and ``saetrack:`` lines always, lines of
    its notebooks' streamed output (indented, ``  <preset>:<stage> | ...``) when ``STREAM_ECHO_EVERY_S`` passed
    since the last one; a kernel's own log lines (``[IPKernelApp] ...``) and anything else never."""
    if line.startswith("[IPKernelApp]"):
        return False
    if line.startswith(("[", "saetrack:")):
        return True
    return line.startswith("  ") and " | " in line and now - last_streamed >= STREAM_ECHO_EVERY_S


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` making a child process (Linux) receive SIGTERM when its parent dies, so a killed study
    leaves no orphan pipelines; everything it needs is resolved here, before the fork."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig, sigterm = 1, int(signal.SIGTERM)
    return lambda: prctl(pr_set_pdeathsig, sigterm)


#: The stages each size of the scale study runs (notebooks 01-04; the crosscoder of notebook 06 is this run's only).
SIZE_STAGES: tuple[str, ...] = ("cache", "chain", "formation", "drift")


def _command(size: RunConfig, folder: Path, *, force: bool, device: str) -> list[str]:
    """The ``run_all.py`` command line that runs notebooks 01-04 of one size into ``folder``."""
    command = [sys.executable, str(paths.REPO_ROOT / "run_all.py"), "--preset", size.preset, "--run-dir", str(folder)]
    command += ["--device", device, "--only", *SIZE_STAGES]
    return [*command, "--force"] if force else command


def _echo(size: str, proc: subprocess.Popen[str], log_path: Path, log: Callable[[str], None]) -> None:
    """Copy a child's output to ``log_path``, echoing the lines :func:`_echo_line` keeps, prefixed with the size."""
    assert proc.stdout is not None
    last_streamed = -math.inf
    with log_path.open("w", encoding="utf-8") as sink:
        for line in proc.stdout:
            sink.write(line)
            sink.flush()
            now = time.monotonic()
            if _echo_line(line, now, last_streamed):
                if line.startswith("  "):
                    last_streamed = now
                log(f"    ({size}) {line.strip()}")


@dataclass
class _Running:
    """A size's pipeline process, the thread echoing its output, and when it started."""

    size: RunConfig
    proc: subprocess.Popen[str]
    thread: threading.Thread
    started: float


def _start(
    size: RunConfig, folder: Path, *, force: bool, device: str, log: Callable[[str], None], death_signal: Any
) -> _Running:
    """Start one size's ``run_all.py`` on one thread, its output echoed by a daemon thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log(f"[scale] size {size.preset}: pipeline started (one thread; log {folder / 'run_all.log'})")
    proc = subprocess.Popen(
        _command(size, folder, force=force, device=device),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=death_signal,
    )
    thread = threading.Thread(target=_echo, args=(size.preset, proc, folder / "run_all.log", log), daemon=True)
    thread.start()
    return _Running(size, proc, thread, time.perf_counter())


def run_parallel(
    sizes: Sequence[RunConfig],
    folders: dict[str, Path],
    jobs: int,
    *,
    force: bool,
    device: str,
    log: Callable[[str], None],
) -> None:
    """Run ``run_all.py --only cache chain formation drift`` for each size, ``jobs`` at a time, one thread each.

    Each process's output goes to ``<run dir>/run_all.log``; its stage lines are echoed here prefixed with the size,
    and, to show it is alive, one line of its notebooks' streamed output (a print or a progress bar's state) at most
    every :data:`STREAM_ECHO_EVERY_S` seconds. A failing size raises :class:`NotebookFailed` naming its log.
    """
    death_signal = _parent_death_signal()
    pending = list(sizes)
    running: list[_Running] = []
    failures = []
    while pending or running:
        while pending and len(running) < jobs:
            size = pending.pop(0)
            running.append(
                _start(size, folders[size.preset], force=force, device=device, log=log, death_signal=death_signal)
            )
        time.sleep(1.0)
        for item in [r for r in running if r.proc.poll() is not None]:
            item.thread.join()
            running.remove(item)
            preset = item.size.preset
            if item.proc.returncode:
                failures.append(f"{preset} (exit {item.proc.returncode}; log {folders[preset] / 'run_all.log'})")
            else:
                log(f"[scale] size {preset}: pipeline current after {time.perf_counter() - item.started:.1f} s")
    if failures:
        raise NotebookFailed("scale study: the pipeline failed for " + ", ".join(failures))
