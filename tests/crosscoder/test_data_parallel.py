"""The crosscoder trained data-parallel over two ``gloo`` ranks equals the single process on the same global batches,
and a job with a rank killed mid-training, started again, ends with the weights of a job never killed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.multiprocessing.spawn import ProcessException

from saetrack.config.crosscoder import CrosscoderConfig
from saetrack.crosscoder.activations import snapshot_scales
from saetrack.crosscoder.model import Crosscoder
from saetrack.crosscoder.training import STATE_FILE, train_crosscoder
from saetrack.distributed.data_parallel import average_gradients
from saetrack.distributed.ranks import SINGLE, Ranks
from tests.crosscoder.test_training import planted_snapshots
from tests.distributed.helpers import run_ranks

#: 1024 tokens in global batches of 64, 4 epochs: 64 optimiser steps; the state saved every 10 steps.
CONFIG = CrosscoderConfig(epochs=4, batch_size=64, lr=3e-3, save_every=10)
D_SAE, SEED = 16, 5

#: Largest difference allowed between a weight trained on 2 ranks and on 1 process. Each rank sums its 32 rows and
#: the all-reduce sums the 2 partial means, where one process sums 64 rows at once: float32 sums in another order,
#: about 1e-7 relative per step, carried through 64 Adam steps. A JumpReLU feature whose pre-activation sits within
#: such a difference of its threshold could fire on one side and not the other; it did not here. Measured on this
#: machine: 4.5e-8 (sparse step, the CPU default), 2.4e-7 (dense step).
TOLERANCE = 1e-5


def _train(ranks: Ranks, folder: Path, sparse: bool) -> dict[str, Any]:
    """The planted-feature crosscoder trained by this process as rank ``ranks`` (state in ``folder``)."""
    data = planted_snapshots(1024, seed=0)[0]
    trained = train_crosscoder(data, snapshot_scales(data), CONFIG, D_SAE, seed=SEED, state_dir=folder,
                               key="dp", progress=False, sparse=sparse, ranks=ranks)  # fmt: skip
    return {
        "state": {k: v.detach().clone() for k, v in trained.model.state_dict().items()},
        "curve": trained.curve,
        "live": trained.live,
        "norm_records": trained.norm_records,
    }


def _gradients(ranks: Ranks) -> dict[str, Any]:
    """Three parameters averaged over the ranks: one with a gradient on every rank, one on rank 0 only, one on none."""
    both, rank0, neither = (torch.nn.Parameter(torch.zeros(3)) for _ in range(3))
    both.grad = torch.full((3,), float(ranks.rank + 1))
    if ranks.rank == 0:
        rank0.grad = torch.full((3,), 4.0)
    average_gradients([both, rank0, neither])
    return {"both": both.grad, "rank0": rank0.grad, "neither": neither.grad}


def _rank_work(ranks: Ranks, folder: Path) -> None:
    """Train the sparse and the dense crosscoder on this rank; save what each ended with, and the averaged gradients."""
    torch.save(_gradients(ranks), folder / f"gradients-rank{ranks.rank}.pt")
    for sparse in (True, False):
        name = "sparse" if sparse else "dense"
        torch.save(_train(ranks, folder / f"state-{name}", sparse), folder / f"{name}-rank{ranks.rank}.pt")


def _killed_work(ranks: Ranks, _store: Path, folder: Path, kill_at: int | None) -> None:
    """Train the sparse crosscoder into ``folder`` on this rank; rank 1 dies (as by SIGKILL) at its ``kill_at``-th
    optimiser step."""
    if kill_at is not None and ranks.rank == 1:
        original, calls = Crosscoder.loss, {"n": 0}

        def dies(self: Crosscoder, *args: Any, **kwargs: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == kill_at:
                os._exit(9)
            return original(self, *args, **kwargs)

        Crosscoder.loss = dies  # type: ignore[method-assign]  # this rank's own process
    torch.save(_train(ranks, folder / "state", True), folder / f"resumed-rank{ranks.rank}.pt")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of what each of 2 ranks trained."""
    folder = tmp_path_factory.mktemp("crosscoder_data_parallel")
    run_ranks(_rank_work, folder)
    return folder


@pytest.mark.parametrize("name", ["sparse", "dense"])
def test_two_ranks_train_the_single_process_crosscoder(two_ranks: Path, name: str, tmp_path: Path) -> None:
    ranks = [torch.load(two_ranks / f"{name}-rank{r}.pt", weights_only=False) for r in range(2)]
    torch.set_num_threads(1)
    single = _train(SINGLE, tmp_path, name == "sparse")
    for key, value in ranks[0]["state"].items():  # the ranks hold the same crosscoder, bit for bit
        assert torch.equal(value, ranks[1]["state"][key]), key
    worst = max(float((value - single["state"][key]).abs().max()) for key, value in ranks[0]["state"].items())
    print(f"{name}: 2 ranks vs 1 process, largest weight difference {worst:.3g}")
    assert 0 < worst < TOLERANCE  # sums in another order: close, not bit-identical
    assert ranks[0]["curve"] == ranks[1]["curve"]  # every rank records the global batch's losses
    assert ranks[0]["curve"]["step"] == single["curve"]["step"]
    for key in ("mse", "sparsity", "l0", "dead"):
        np.testing.assert_allclose(ranks[0]["curve"][key], single["curve"][key], rtol=1e-4, atol=1e-6, err_msg=key)
    np.testing.assert_array_equal(ranks[0]["live"], single["live"])  # the same features fired in the global batches
    np.testing.assert_allclose(ranks[0]["norm_records"], single["norm_records"], atol=TOLERANCE)


def test_only_the_writer_saves_the_training_state(two_ranks: Path) -> None:
    saved = torch.load(two_ranks / "state-sparse" / STATE_FILE, weights_only=False)
    assert saved["step"] == 60  # the last save before the 64th step
    assert sorted(p.name for p in (two_ranks / "state-sparse").iterdir()) == [STATE_FILE]


def test_gradients_are_averaged_and_a_missing_one_counts_as_zero(two_ranks: Path) -> None:
    for rank in range(2):
        grads = torch.load(two_ranks / f"gradients-rank{rank}.pt")
        torch.testing.assert_close(grads["both"], torch.full((3,), 1.5))
        torch.testing.assert_close(grads["rank0"], torch.full((3,), 2.0))  # rank 0's 4 and rank 1's none (0)
        assert grads["neither"] is None  # no rank had one: Adam skips it on every rank, as one process would


def test_a_rank_killed_mid_training_resumes_to_the_same_weights(two_ranks: Path, tmp_path: Path) -> None:
    with pytest.raises(ProcessException):
        run_ranks(_killed_work, tmp_path / "store1", tmp_path, 25)  # rank 1 dies at step 25: the writer saved 20
    assert torch.load(tmp_path / "state" / STATE_FILE, weights_only=False)["step"] == 20
    run_ranks(_killed_work, tmp_path / "store2", tmp_path, None)  # the same job, started again
    resumed = torch.load(tmp_path / "resumed-rank0.pt", weights_only=False)
    straight = torch.load(two_ranks / "sparse-rank0.pt", weights_only=False)
    for key, value in straight["state"].items():
        assert torch.equal(value, resumed["state"][key]), key
    assert resumed["curve"] == straight["curve"]


def test_a_batch_that_does_not_split_over_the_ranks_is_refused(tmp_path: Path) -> None:
    data = planted_snapshots(256, seed=0)[0]
    with pytest.raises(ValueError, match="does not split over 3 ranks"):
        train_crosscoder(data, snapshot_scales(data), CONFIG, D_SAE, seed=SEED, state_dir=tmp_path, key="k",
                         progress=False, ranks=Ranks(0, 3))  # fmt: skip
