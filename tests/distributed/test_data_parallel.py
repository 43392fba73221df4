"""Data-parallel SAE training over two ``gloo`` ranks equals the single process on the same global batches."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from saetrack.distributed.data_parallel import average_gradients, check_data_parallel, shard_batches
from saetrack.distributed.ranks import SINGLE, Ranks
from saetrack.sae.model import build_sae
from saetrack.sae.training import synthetic_activations, train_sae
from tests.distributed.helpers import run_ranks
from tests.sae.helpers import D_IN, chain_config

#: Tokens, global batch and seed of the compared runs (100 steps).
N_TOKENS, BATCH, SEED = 6400, 64, 3

#: Largest difference allowed between a weight trained on 2 ranks and on 1 process. The ranks sum their 32 rows and
#: then the 2 partial means, where one process sums 64 rows: float32 sums in another order, about 1e-7 relative per
#: step, carried through 100 Adam steps. Measured on this machine: 2.4e-7 (standard, TopK), 3.0e-7 (JumpReLU).
TOLERANCE = 1e-5


def _train(ranks: Ranks, architecture: str) -> dict[str, object]:
    """One SAE of ``architecture`` trained on the synthetic activations by this process as rank ``ranks``."""
    torch.manual_seed(0)
    x, _ = synthetic_activations(4000, D_IN, seed=1)
    chain = chain_config(architecture=architecture, k=4 if architecture == "topk" else None)
    sae = build_sae(D_IN, dataclasses.replace(chain, l1_coefficient=3e-3), seed=SEED)
    result = train_sae(sae, x, n_tokens=N_TOKENS, lr=1e-3, warmup_steps=10, batch_size=BATCH, seed=SEED,
                       progress=False, log_every=5, ranks=ranks)  # fmt: skip
    return {
        "state": {k: v.detach().clone() for k, v in sae.state_dict().items()},
        "curve": result.loss_curve,
        "n_tokens": result.n_tokens,
        "frequency": result.feature_frequency,
        "optimizer": result.optimizer_state,
    }


#: The architectures trained data-parallel (BatchTopK is refused).
ARCHITECTURES = ("standard", "topk", "jumprelu")


def _rank_work(ranks: Ranks, folder: Path) -> None:
    """Train each architecture on this rank and save what it ended with as ``<architecture>-rank<r>.pt``."""
    for architecture in ARCHITECTURES:
        torch.save(_train(ranks, architecture), folder / f"{architecture}-rank{ranks.rank}.pt")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of what each of 2 ranks trained (one job for every architecture)."""
    folder = tmp_path_factory.mktemp("data_parallel")
    run_ranks(_rank_work, folder)
    return folder


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_two_ranks_train_the_single_process_sae(two_ranks: Path, architecture: str) -> None:
    ranks = [torch.load(two_ranks / f"{architecture}-rank{r}.pt", weights_only=False) for r in range(2)]
    single = _train(SINGLE, architecture)
    for name, value in ranks[0]["state"].items():  # the ranks hold the same SAE, bit for bit
        assert torch.equal(value, ranks[1]["state"][name]), name
    worst = max(float((value - single["state"][name]).abs().max()) for name, value in ranks[0]["state"].items())
    print(f"{architecture}: 2 ranks vs 1 process, largest weight difference {worst:.3g}")
    assert worst < TOLERANCE, f"2 ranks vs 1 process: largest weight difference {worst:.3g}"
    assert worst > 0 or architecture != "standard"  # sums in another order: not bit-identical, as the doc says
    assert ranks[0]["n_tokens"] == single["n_tokens"] == N_TOKENS
    assert ranks[0]["curve"]["tokens"] == single["curve"]["tokens"]
    np.testing.assert_allclose(ranks[0]["curve"]["loss"], single["curve"]["loss"], rtol=1e-4)
    assert ranks[0]["curve"]["loss"] == ranks[1]["curve"]["loss"]  # every rank logs the global batch's losses
    torch.testing.assert_close(ranks[0]["frequency"], single["frequency"], atol=1e-3, rtol=0)
    moments = ranks[0]["optimizer"]["state"][0]["exp_avg_sq"], single["optimizer"]["state"][0]["exp_avg_sq"]
    torch.testing.assert_close(moments[0], moments[1], rtol=1e-3, atol=1e-9)


def test_a_rank_takes_its_rows_of_each_batch() -> None:
    batches = iter([torch.arange(12.0).reshape(6, 2), torch.arange(12.0, 24.0).reshape(6, 2)])
    shards = list(shard_batches(batches, Ranks(rank=1, world_size=3)))
    assert [s.tolist() for s in shards] == [[[4.0, 5.0], [6.0, 7.0]], [[16.0, 17.0], [18.0, 19.0]]]


def test_uneven_batches_and_batchtopk_are_refused() -> None:
    with pytest.raises(ValueError, match="multiple of the number of ranks"):
        check_data_parallel("standard", 100, Ranks(0, 3))
    with pytest.raises(ValueError, match=r"batchtopk.*cannot train data-parallel"):
        check_data_parallel("batchtopk", 64, Ranks(0, 2))
    check_data_parallel("batchtopk", 64, SINGLE)  # one rank: anything goes


@pytest.mark.parametrize("fused", [False, True])
def test_averaged_gradients_keep_a_permuted_parameters_layout_for_adam(fused: bool) -> None:
    """The crosscoder's ``W_enc`` is stored permuted; fused Adam reads a gradient in the parameter's memory order, so
    a contiguous averaged gradient would update the wrong elements (it did: 0.2 = 2 lr off after one step)."""
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(3, 4, 5, generator=generator).permute(1, 2, 0)
    gradient = torch.randn(4, 5, 3, generator=generator)
    parameter = torch.nn.Parameter(start.clone())
    assert not parameter.is_contiguous()
    parameter.grad = gradient.clone()
    average_gradients([parameter])  # one process: the same values, laid out as the parameter
    assert parameter.grad.stride() == parameter.stride()
    torch.optim.Adam([parameter], lr=0.1, fused=fused).step()
    torch.testing.assert_close(parameter.detach(), start - 0.1 * gradient.sign(), atol=1e-5, rtol=0)
