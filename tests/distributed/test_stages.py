"""The smoke chain and baselines over two ``gloo`` ranks: the writer's chain equals one process's within the float
tolerance of data-parallel training, and a job with a rank killed mid-chain, started again, ends with the same
weights as a job never killed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.multiprocessing.spawn import ProcessException

from saetrack import paths, store
from saetrack.config import get_preset
from saetrack.distributed.ranks import SINGLE, Ranks
from saetrack.distributed.stages import written_manifest
from saetrack.stages.chain import train_baselines, train_chain
from tests.distributed.helpers import run_ranks

#: Largest weight difference allowed between the chain trained on 2 ranks and on 1 process: each of the 8 links'
#: data-parallel training differs from one process only in the order of float32 sums (see
#: ``tests/distributed/test_data_parallel.py``), and each link starts from the previous one. Measured on this machine:
#: 1.1e-6 (chain), 6.6e-7 (baselines).
TOLERANCE = 1e-5


def _inputs(smoke_run_dir: Path, folder: Path) -> Path:
    """A copy of the smoke run's corpus, model and activation cache (no chain yet)."""
    for name in (paths.CORPUS_DIR, paths.MODEL_DIR, paths.CACHE_DIR):
        shutil.copytree(smoke_run_dir / name, folder / name)
    return folder


def _chain_and_baselines(ranks: Ranks, folder: Path, run_dir: str, kill_after: int | None = None) -> None:
    """Every rank trains the smoke chain and baselines into ``run_dir``; rank 1 dies after step ``kill_after``."""

    def after_link(step: int) -> None:
        if ranks.rank == 1 and step == kill_after:
            os._exit(9)  # as a SIGKILL would: no cleanup, mid-chain

    run = get_preset("smoke")
    train_chain(run, Path(run_dir), progress=False, after_link=after_link, ranks=ranks)
    train_baselines(run, Path(run_dir), progress=False, ranks=ranks)


def _weights(run_dir: Path, folder: str) -> dict[str, torch.Tensor]:
    """Every SAE weight under ``run_dir/folder`` keyed ``step{N}/name``."""
    manifest = store.read_manifest(run_dir / folder)
    assert manifest is not None, f"{folder} did not finish"
    out = {}
    for step in manifest["steps"]:
        for name, value in load_file(run_dir / folder / f"step{step}" / "sae_weights.safetensors").items():
            out[f"step{step}/{name}"] = value
    return out


@pytest.fixture(scope="module")
def two_ranks(smoke_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke chain and baselines trained by a 2-rank job."""
    run_dir = _inputs(smoke_run_dir, tmp_path_factory.mktemp("ranked"))
    run_ranks(_chain_and_baselines, tmp_path_factory.mktemp("ranked_store"), str(run_dir))
    return run_dir


def test_two_ranks_train_the_single_process_chain(two_ranks: Path, smoke_run_dir: Path, tmp_path: Path) -> None:
    single = _inputs(smoke_run_dir, tmp_path / "single")
    _chain_and_baselines(SINGLE, tmp_path, str(single))
    for folder in (paths.CHAIN_DIR, paths.BASELINE_DIR):
        ranked, reference = _weights(two_ranks, folder), _weights(single, folder)
        assert ranked.keys() == reference.keys()
        worst = max(float((ranked[k] - reference[k]).abs().max()) for k in ranked)
        print(f"{folder}: 2 ranks vs 1 process, largest weight difference {worst:.3g}")
        assert worst < TOLERANCE, f"{folder}: 2 ranks vs 1 process differ by {worst:.3g}"
    ranked_links = store.read_manifest(two_ranks / paths.CHAIN_DIR)["links"]  # type: ignore[index]
    single_links = store.read_manifest(single / paths.CHAIN_DIR)["links"]  # type: ignore[index]
    for a, b in zip(ranked_links, single_links, strict=True):
        assert a["training"]["n_tokens"] == b["training"]["n_tokens"]
        assert abs(a["metrics"]["explained_variance"] - b["metrics"]["explained_variance"]) < 1e-4


def test_a_rank_killed_mid_chain_and_the_job_restarted_gives_the_same_weights(
    two_ranks: Path, smoke_run_dir: Path, tmp_path: Path
) -> None:
    run_dir = _inputs(smoke_run_dir, tmp_path / "killed")
    with pytest.raises(ProcessException):  # the job fails with rank 1
        run_ranks(_chain_and_baselines, tmp_path / "store1", str(run_dir), 4)
    finished = sorted(p.parent.name for p in (run_dir / paths.CHAIN_DIR).glob("step*/manifest.json"))
    assert finished and len(finished) < len(get_preset("smoke").sae_steps)  # killed mid-chain
    run_ranks(_chain_and_baselines, tmp_path / "store2", str(run_dir))  # the same job, started again
    for folder in (paths.CHAIN_DIR, paths.BASELINE_DIR):
        restarted, uninterrupted = _weights(run_dir, folder), _weights(two_ranks, folder)
        assert all(torch.equal(restarted[k], uninterrupted[k]) for k in uninterrupted), folder


def test_a_manifest_the_writer_did_not_leave_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="must be on a file system every rank shares"):
        written_manifest(tmp_path, SINGLE)
