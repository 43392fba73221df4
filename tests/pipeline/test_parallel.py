"""The scale study's pool of processes: one run_all.py process per size (stage lines echoed, a failing size raises),
and jobs that wait for others (the seed study's variants), a limited number at a time."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from saetrack import paths
from saetrack.config import get_preset
from saetrack.notebooks import NotebookFailed
from saetrack.pipeline.parallel import SIZE_STAGES, Job, run_jobs, run_parallel, size_job

FAKE_RUN_ALL = textwrap.dedent(
    """
    import os, sys
    args = sys.argv[1:]
    preset = args[args.index("--preset") + 1]
    print(f"[{preset}:cache] running 01_cache_activations.ipynb", flush=True)
    print("[IPKernelApp] WARNING | kernel chatter", flush=True)
    print("a line that is not a stage line", flush=True)
    print("threads", os.environ["OMP_NUM_THREADS"], " ".join(args), flush=True)
    sys.exit(3 if preset == "smoke-m" else 0)
    """
)


def test_sizes_run_as_child_processes_and_a_failing_one_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "run_all.py").write_text(FAKE_RUN_ALL)
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)  # run_parallel starts <REPO_ROOT>/run_all.py
    sizes = [get_preset("smoke-s"), get_preset("smoke-m")]
    folders = {size.preset: tmp_path / size.preset for size in sizes}
    for folder in folders.values():
        folder.mkdir()
    lines: list[str] = []
    with pytest.raises(NotebookFailed, match=r"failed for smoke-m \(exit 3; log .*smoke-m/run_all\.log\)$"):
        run_parallel(sizes, folders, 2, force=True, device="cpu", log=lines.append)
    assert "    (smoke-s) [smoke-s:cache] running 01_cache_activations.ipynb" in lines
    assert not any("IPKernelApp" in line or "not a stage line" in line for line in lines)
    assert any(line.startswith("[scale] smoke-s: pipeline current after") for line in lines)
    assert not any(line.startswith("[scale] smoke-m: pipeline current") for line in lines)
    log = (folders["smoke-s"] / "run_all.log").read_text()  # the child's whole output, one thread, its arguments
    assert "a line that is not a stage line" in log
    assert f"threads 1 --preset smoke-s --run-dir {folders['smoke-s']} --device cpu" in log
    assert log.rstrip().endswith("--only cache chain formation drift --force")


def test_size_job_runs_notebooks_01_to_04_of_one_size(tmp_path: Path) -> None:
    size = get_preset("smoke-s")
    job = size_job(size, tmp_path / "smoke-s", force=False, device="cuda")
    run_all = str(paths.REPO_ROOT / "run_all.py")
    assert job == Job(
        "smoke-s",
        (
            sys.executable,
            run_all,
            "--preset",
            "smoke-s",
            "--run-dir",
            str(tmp_path / "smoke-s"),
            "--device",
            "cuda",
            "--only",
            *SIZE_STAGES,
        ),
        tmp_path / "smoke-s" / "run_all.log",
    )
    assert job.after == ()
    assert size_job(size, tmp_path, force=True, device="cpu").command[-1] == "--force"


#: A fake job: appends "start <time>" and "end <time>" to argv[1] around sleeping argv[2] seconds, prints a stage
#: line, exits with argv[3].
FAKE_JOB = (
    "import sys, time; path, wait, code = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]); "
    "open(path, 'a').write(f'start {time.time()}\\n'); time.sleep(wait); "
    "open(path, 'a').write(f'end {time.time()}\\n'); print(f'[{path}] done', flush=True); sys.exit(code)"
)


def _job(tmp: Path, name: str, *, after: tuple[str, ...] = (), wait: float = 0.0, code: int = 0) -> Job:
    command = (sys.executable, "-c", FAKE_JOB, str(tmp / f"{name}.times"), str(wait), str(code))
    return Job(name, command, tmp / "logs" / f"{name}.log", after)


def _times(tmp: Path, name: str) -> tuple[float, float] | None:
    """(start, end) of a fake job, None if it never ran."""
    path = tmp / f"{name}.times"
    if not path.exists():
        return None
    stamps = dict(line.split() for line in path.read_text().splitlines())
    return float(stamps["start"]), float(stamps["end"])


def test_a_job_starts_once_the_jobs_it_waits_for_finished(tmp_path: Path) -> None:
    jobs = [_job(tmp_path, "b", after=("a",)), _job(tmp_path, "a", wait=0.5), _job(tmp_path, "c", wait=0.5)]
    lines: list[str] = []
    run_jobs(jobs, 2, log=lines.append)
    a, b, c = (_times(tmp_path, n) for n in "abc")
    assert a and b and c
    assert b[0] >= a[1]  # b waited for a
    assert c[0] < a[1] and a[0] < c[1]  # a and c (no dependency) ran at once
    assert lines[0] == f"[scale] a: pipeline started (one thread; log {tmp_path / 'logs' / 'a.log'})"
    assert [line.split(":")[0] for line in lines if "pipeline current" in line][-1] == "[scale] b"
    assert f"    (b) [{tmp_path / 'b.times'}] done" in lines  # stage lines echoed with the job's name
    assert (tmp_path / "logs" / "b.log").read_text().strip() == f"[{tmp_path / 'b.times'}] done"


@pytest.mark.parametrize("parallel", [1, 2])
def test_no_more_jobs_run_at_once_than_allowed(tmp_path: Path, parallel: int) -> None:
    names = ["a", "b", "c"]
    run_jobs([_job(tmp_path, n, wait=0.4) for n in names], parallel, log=lambda line: None)
    spans = [_times(tmp_path, n) for n in names]
    assert all(spans)
    stamps = sorted([(t0, 1) for t0, _ in spans] + [(t1, -1) for _, t1 in spans])  # type: ignore[misc]
    running = [sum(step for _, step in stamps[: i + 1]) for i in range(len(stamps))]
    assert max(running) == parallel


def test_jobs_waiting_for_a_failed_job_are_not_run_and_are_reported(tmp_path: Path) -> None:
    jobs = [
        _job(tmp_path, "bad", code=3),
        _job(tmp_path, "child", after=("bad",)),
        _job(tmp_path, "grandchild", after=("child",)),
        _job(tmp_path, "fine"),
    ]
    lines: list[str] = []
    with pytest.raises(NotebookFailed) as failure:
        run_jobs(jobs, 2, log=lines.append)
    message = str(failure.value)
    assert f"bad (exit 3; log {tmp_path / 'logs' / 'bad.log'})" in message
    assert "child (not run: it waits for a failed job)" in message
    assert "grandchild (not run: it waits for a failed job)" in message and "fine" not in message
    assert _times(tmp_path, "fine") is not None  # the others still ran
    assert _times(tmp_path, "child") is None and _times(tmp_path, "grandchild") is None
    assert not any(line.startswith(("[scale] child:", "[scale] grandchild:")) for line in lines)


def test_unknown_dependencies_duplicate_names_and_cycles_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown: \['nobody'\]"):
        run_jobs([_job(tmp_path, "a", after=("nobody",))], 2, log=lambda line: None)
    with pytest.raises(ValueError, match="names must be distinct"):
        run_jobs([_job(tmp_path, "a"), _job(tmp_path, "a")], 2, log=lambda line: None)
    assert _times(tmp_path, "a") is None  # refused before anything ran
    cycle = [_job(tmp_path, "x", after=("y",)), _job(tmp_path, "y", after=("x",)), _job(tmp_path, "free")]
    with pytest.raises(ValueError, match=r"jobs \['x', 'y'\] wait for each other in a cycle"):
        run_jobs(cycle, 2, log=lambda line: None)
    assert _times(tmp_path, "free") is not None and _times(tmp_path, "x") is None
    with pytest.raises(ValueError, match="cycle"):
        run_jobs([_job(tmp_path, "self", after=("self",))], 1, log=lambda line: None)
