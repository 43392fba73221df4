"""Work dealt out over two ``gloo`` ranks and gathered: every rank gets every item in order; a streamed chain link
trained over two ranks (the forwards dealt out, the SAE data-parallel) equals the single process's link."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from saetrack import paths
from saetrack.config import get_preset
from saetrack.data.activations import open_activations
from saetrack.data.checkpoints import open_source
from saetrack.distributed.gather import dealt_out
from saetrack.distributed.ranks import SINGLE, Ranks
from saetrack.stages.cache import cache_activations
from saetrack.stages.chain.links import train_and_evaluate_link
from tests.distributed.helpers import run_ranks

#: Rows of item ``i`` in the dealt-out test: uneven, one item empty, seven items over two ranks.
ROWS = [3, 1, 4, 0, 5, 2, 6]


def _deal(ranks: Ranks, folder: Path) -> None:
    """Deal out the items of ``ROWS`` (item ``i``: ``rows x 2`` values ``i``) and save what this rank received."""
    computed: list[int] = []

    def compute(i: int) -> torch.Tensor:
        computed.append(i)
        return torch.full((ROWS[i], 2), float(i))

    received = list(dealt_out(range(len(ROWS)), compute, lambda i: ROWS[i], 2, torch.empty(0), ranks))
    torch.save({"received": received, "computed": computed}, folder / f"deal{ranks.rank}.pt")


def test_every_rank_receives_every_item_in_order(two_ranks: Path) -> None:
    expected = [torch.full((rows, 2), float(i)) for i, rows in enumerate(ROWS)]
    for rank in range(2):
        out = torch.load(two_ranks / f"deal{rank}.pt")
        assert len(out["received"]) == len(ROWS)
        assert all(torch.equal(a, b) for a, b in zip(out["received"], expected, strict=True))
        assert out["computed"] == list(range(rank, len(ROWS), 2))  # each item computed by one rank only


#: The smoke run, streamed, with a shuffle buffer smaller than a link (so the buffer's blocks are exercised).
STREAMED = {"cache.mode": "streamed", "cache.buffer_tokens": 8192}


def _links(ranks: Ranks, run_dir: Path) -> dict[str, object]:
    """The streamed smoke chain's first two links (positions 0 and 1), trained by this process as ``ranks``."""
    run = get_preset("smoke", STREAMED)
    activations = open_activations(run, run_dir, open_source(run.model, run_dir), "cpu", ranks=ranks)
    out: dict[str, object] = {}
    previous = None
    for position in (0, 1):
        link = train_and_evaluate_link(run, activations, activations.checkpoints, position, previous, None,
                                       desc=f"link {position}", device="cpu", progress=False, ranks=ranks)  # fmt: skip
        previous = link.result.sae
        out[f"state{position}"] = {k: v.detach().clone() for k, v in previous.state_dict().items()}
        out[f"quality{position}"] = link.quality
        out[f"scale{position}"] = link.scale
    return out


def _rank_work(ranks: Ranks, folder: Path, run_dir: str) -> None:
    """This rank's part of both tests (one job: the ranks start once)."""
    _deal(ranks, folder)
    torch.save(_links(ranks, Path(run_dir)), folder / f"links{ranks.rank}.pt")


@pytest.fixture(scope="module")
def streamed_run_dir(smoke_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke inputs with a streamed token plan (no activations on disk)."""
    run_dir = tmp_path_factory.mktemp("streamed_ranks")
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR):
        shutil.copytree(smoke_run_dir / folder, run_dir / folder)
    cache_activations(get_preset("smoke", STREAMED), run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def two_ranks(streamed_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of what each of 2 ranks dealt out and trained."""
    folder = tmp_path_factory.mktemp("gather")
    run_ranks(_rank_work, folder, str(streamed_run_dir))
    return folder


def test_a_streamed_link_over_two_ranks_equals_one_process(streamed_run_dir: Path, two_ranks: Path) -> None:
    ranks = [torch.load(two_ranks / f"links{r}.pt", weights_only=False) for r in range(2)]
    single = _links(SINGLE, streamed_run_dir)
    for position in (0, 1):
        state = f"state{position}"
        for name, value in ranks[0][state].items():
            assert torch.equal(value, ranks[1][state][name]), (position, name)
            worst = float((value - single[state][name]).abs().max())
            assert worst < 1e-5, f"link {position} {name}: 2 ranks vs 1 process differ by {worst:.3g}"
        assert ranks[0][f"scale{position}"] == single[f"scale{position}"]  # the same activations, bit for bit
        quality, reference = ranks[0][f"quality{position}"], single[f"quality{position}"]
        assert quality.keys() == reference.keys()
        np.testing.assert_allclose([quality[k] for k in quality], [reference[k] for k in quality], rtol=1e-4, atol=1e-5)
