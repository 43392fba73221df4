"""Running pipelines as parallel one-thread processes that die with their parent: the scale study's other sizes
(``run_all.py`` processes) and the seed study's variants (:mod:`saetrack.pipeline.headless` processes), in one pool
where a job may wait for others (a variant that shares a size's model waits for that size)."""

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
    "Job",
    "run_jobs",
    "run_parallel",
    "size_job",
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


@dataclass(frozen=True)
class Job:
    """One pipeline process of a pool: its name, command line, log file, and the jobs it must wait for."""

    name: str
    command: tuple[str, ...]
    log_path: Path
    after: tuple[str, ...] = ()


def size_job(size: RunConfig, folder: Path, *, force: bool, device: str) -> Job:
    """The job running notebooks 01-04 of one size of the scale study (``run_all.py --only ...``) into ``folder``."""
    command = [sys.executable, str(paths.REPO_ROOT / "run_all.py"), "--preset", size.preset, "--run-dir", str(folder)]
    command += ["--device", device, "--only", *SIZE_STAGES]
    return Job(size.preset, tuple([*command, "--force"] if force else command), folder / "run_all.log")


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
    """A job's process, the thread echoing its output, and when it started."""

    job: Job
    proc: subprocess.Popen[str]
    thread: threading.Thread
    started: float


def _start(job: Job, log: Callable[[str], None], death_signal: Any) -> _Running:
    """Start one job on one thread, its output echoed by a daemon thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    job.log_path.parent.mkdir(parents=True, exist_ok=True)
    log(f"[scale] {job.name}: pipeline started (one thread; log {job.log_path})")
    proc = subprocess.Popen(
        list(job.command),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=death_signal,
    )
    thread = threading.Thread(target=_echo, args=(job.name, proc, job.log_path, log), daemon=True)
    thread.start()
    return _Running(job, proc, thread, time.perf_counter())


def _ready(job: Job, done: set[str], failed: set[str]) -> bool | None:
    """Whether ``job`` can start (True), must wait (False) or can never run because a job it waits for failed."""
    if set(job.after) & failed:
        return None
    return set(job.after) <= done


def run_jobs(jobs: Sequence[Job], parallel: int, *, log: Callable[[str], None]) -> None:
    """Run ``jobs``, ``parallel`` at a time, one thread each, a job starting once the jobs it waits for finished.

    Each process's output goes to its log file; its stage lines are echoed here prefixed with its name, and, to show
    it is alive, one line of its streamed output at most every :data:`STREAM_ECHO_EVERY_S` seconds. A failing job
    (or one waiting for a failed one) raises :class:`NotebookFailed` naming its log, once the others have finished.
    """
    names = [job.name for job in jobs]
    unknown = sorted({a for job in jobs for a in job.after} - set(names))
    if unknown or len(set(names)) != len(names):
        raise ValueError(f"jobs {names}: names must be distinct and every awaited job known (unknown: {unknown}).")
    death_signal = _parent_death_signal()
    pending, running = list(jobs), []
    done: set[str] = set()
    failed: dict[str, str] = {}
    while pending or running:
        while blocked := [j for j in pending if _ready(j, done, set(failed)) is None]:  # a failure's waiters, theirs...
            for job in blocked:
                pending.remove(job)
                failed[job.name] = f"{job.name} (not run: it waits for a failed job)"
        startable = [j for j in pending if _ready(j, done, set(failed))]
        while startable and len(running) < parallel:
            job = startable.pop(0)
            pending.remove(job)
            running.append(_start(job, log, death_signal))
        if not running and pending and not startable:
            raise ValueError(f"jobs {[j.name for j in pending]} wait for each other in a cycle.")
        time.sleep(0.2 if not running else 1.0)
        for item in [r for r in running if r.proc.poll() is not None]:
            item.thread.join()
            running.remove(item)
            if item.proc.returncode:
                failed[item.job.name] = f"{item.job.name} (exit {item.proc.returncode}; log {item.job.log_path})"
            else:
                done.add(item.job.name)
                log(f"[scale] {item.job.name}: pipeline current after {time.perf_counter() - item.started:.1f} s")
    if failed:
        raise NotebookFailed("scale study: the pipeline failed for " + ", ".join(failed.values()))


def run_parallel(
    sizes: Sequence[RunConfig],
    folders: dict[str, Path],
    jobs: int,
    *,
    force: bool,
    device: str,
    log: Callable[[str], None],
) -> None:
    """Run ``run_all.py --only cache chain formation drift`` for each size, ``jobs`` at a time, one thread each
    (:func:`run_jobs` over :func:`size_job`). A failing size raises :class:`NotebookFailed` naming its log."""
    run_jobs([size_job(size, folders[size.preset], force=force, device=device) for size in sizes], jobs, log=log)
