"""A process killed with SIGKILL during suite training, caching or the SAE chain resumes to the same hashes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from saetrack import paths, store
from saetrack.config import get_preset

pytestmark = pytest.mark.slow

_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from saetrack.config import get_preset
    from saetrack.data.corpus import prepare_corpus
    from saetrack.data.suite import train_suite
    from saetrack.stages.cache import cache_activations
    from saetrack.stages.chain import train_chain

    run, run_dir, kill_in, kill_at = get_preset("smoke"), Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])

    def die(step, *_):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    prepare_corpus(run, run_dir)
    train_suite(run, run_dir, progress=False, threads=1, on_checkpoint=die if kill_in == "suite" else None)
    cache_activations(run, run_dir, progress=False, after_step=die if kill_in == "cache" else None)
    train_chain(run, run_dir, progress=False, after_link=die if kill_in == "chain" else None)
    """
)


def _run(run_dir: Path, kill_in: str, kill_at: int) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(run_dir), kill_in, str(kill_at)], env=env, check=False)
    return proc.returncode


def _hashes(run_dir: Path) -> dict[str, object]:
    model = store.read_manifest(run_dir / paths.MODEL_DIR)
    cache = store.read_manifest(run_dir / paths.CACHE_DIR)
    steps = {
        step: store.read_manifest(run_dir / paths.CACHE_DIR / paths.step_dir_name(step))["files"]
        for step in cache["steps"]
    }
    chain = store.read_manifest(run_dir / paths.CHAIN_DIR)
    links = {
        step: store.read_manifest(run_dir / paths.CHAIN_DIR / paths.step_dir_name(step))["files"]
        for step in chain["steps"]
    }
    return {"model": [(c["step"], c["sha256"]) for c in model["checkpoints"]], "cache": steps, "chain": links}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    run_dir = tmp_path_factory.mktemp("straight")
    assert _run(run_dir, "none", -1) == 0
    return _hashes(run_dir)


@pytest.mark.parametrize(("kill_in", "kill_at"), [("suite", 8), ("cache", 4), ("chain", 8)])
def test_sigkill_then_resume_gives_identical_hashes(reference, tmp_path: Path, kill_in: str, kill_at: int) -> None:
    steps = get_preset("smoke").model.checkpoint_steps
    assert kill_at in steps
    assert _run(tmp_path, kill_in, kill_at) == -9  # really killed, mid-run
    assert _run(tmp_path, "none", -1) == 0  # started again: resumes
    assert _hashes(tmp_path) == reference
