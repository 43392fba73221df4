"""Killing the smoke pipeline with SIGKILL during suite training, caching or the SAE chain, then resuming it.

Used by the interruption tests of ``data/test_suite.py``, ``stages/test_cache.py`` and ``stages/test_chain.py``;
the uninterrupted reference run is the session fixture ``sigkill_reference`` (``tests/conftest.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from saetrack import paths, store
from saetrack.config import get_preset

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


def run_pipeline(run_dir: Path, kill_in: str, kill_at: int) -> int:
    """Run the smoke pipeline up to the chain in a subprocess that SIGKILLs itself after ``kill_at`` of ``kill_in``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(run_dir), kill_in, str(kill_at)], env=env, check=False)
    return proc.returncode


def artifact_hashes(run_dir: Path) -> dict[str, object]:
    """Weight hashes of the model suite and file hashes of every cached checkpoint and chain link."""
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


def assert_resumes_after_sigkill(run_dir: Path, kill_in: str, kill_at: int, reference: dict[str, object]) -> None:
    """Kill the pipeline in ``kill_in`` after step ``kill_at``, start it again, and compare with ``reference``."""
    steps = get_preset("smoke").model.checkpoint_steps
    assert kill_at in steps
    assert run_pipeline(run_dir, kill_in, kill_at) == -9  # really killed, mid-run
    assert run_pipeline(run_dir, "none", -1) == 0  # started again: resumes
    assert artifact_hashes(run_dir) == reference
