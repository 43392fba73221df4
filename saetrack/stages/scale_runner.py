"""Running the scale study's other sizes as parallel one-thread run_all.py processes that die with their parent."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from saetrack import paths
from saetrack.config.run import RunConfig
from saetrack.notebooks import NotebookFailed

__all__ = [
    "run_parallel",
]


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` making a child process (Linux) receive SIGTERM when its parent dies, so a killed study
    leaves no orphan pipelines; everything it needs is resolved here, before the fork."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig, sigterm = 1, int(signal.SIGTERM)
    return lambda: prctl(pr_set_pdeathsig, sigterm)


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

    Each process's output goes to ``<run dir>/run_all.log``; its stage lines are echoed here prefixed with the size.
    """
    import os
    import subprocess
    import sys
    import threading
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    death_signal = _parent_death_signal()
    pending = list(sizes)
    running: list[tuple[RunConfig, subprocess.Popen[str], threading.Thread, float]] = []
    failures = []

    def echo(size: str, proc: subprocess.Popen[str], log_path: Path) -> None:
        assert proc.stdout is not None
        with log_path.open("w", encoding="utf-8") as sink:
            for line in proc.stdout:
                sink.write(line)
                sink.flush()
                if line.startswith(("[", "saetrack:")) and not line.startswith("[IPKernelApp]"):
                    log(f"    ({size}) {line.rstrip()}")

    while pending or running:
        while pending and len(running) < jobs:
            size = pending.pop(0)
            folder = folders[size.preset]
            command = [
                sys.executable,
                str(paths.REPO_ROOT / "run_all.py"),
                "--preset",
                size.preset,
                "--run-dir",
                str(folder),
                "--device",
                device,
                "--only",
                "cache",
                "chain",
                "formation",
                "drift",
            ]
            if force:
                command.append("--force")
            log(f"[scale] size {size.preset}: pipeline started (one thread; log {folder / 'run_all.log'})")
            proc = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                preexec_fn=death_signal,
            )
            thread = threading.Thread(target=echo, args=(size.preset, proc, folder / "run_all.log"), daemon=True)
            thread.start()
            running.append((size, proc, thread, time.perf_counter()))
        time.sleep(1.0)
        for item in list(running):
            size, proc, thread, started = item
            if proc.poll() is None:
                continue
            thread.join()
            running.remove(item)
            took = time.perf_counter() - started
            if proc.returncode:
                failures.append(f"{size.preset} (exit {proc.returncode}; log {folders[size.preset] / 'run_all.log'})")
            else:
                log(f"[scale] size {size.preset}: pipeline current after {took:.1f} s")
    if failures:
        raise NotebookFailed("scale study: the pipeline failed for " + ", ".join(failures))
