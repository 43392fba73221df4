"""The scale study's parallel runner: one run_all.py process per size, stage lines echoed, a failing size raises."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from saetrack import paths
from saetrack.config import get_preset
from saetrack.notebooks import NotebookFailed
from saetrack.pipeline.parallel import run_parallel

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
    assert any(line.startswith("[scale] size smoke-s: pipeline current after") for line in lines)
    assert not any(line.startswith("[scale] size smoke-m: pipeline current") for line in lines)
    log = (folders["smoke-s"] / "run_all.log").read_text()  # the child's whole output, one thread, its arguments
    assert "a line that is not a stage line" in log
    assert f"threads 1 --preset smoke-s --run-dir {folders['smoke-s']} --device cpu" in log
    assert log.rstrip().endswith("--only cache chain formation drift --force")
