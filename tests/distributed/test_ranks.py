"""A process's place among a torchrun job's ranks, read from torchrun's environment variables."""

from __future__ import annotations

import pytest

from saetrack.distributed.ranks import SINGLE, Ranks, backend_for, init_ranks, ranks_from_environment


def test_torchrun_variables_give_the_rank() -> None:
    ranks = ranks_from_environment({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"})
    assert ranks == Ranks(3, 8, 1) and ranks.distributed and not ranks.writer
    assert ranks_from_environment({}) == SINGLE and SINGLE.writer and not SINGLE.distributed


def test_a_malformed_variable_is_named() -> None:
    with pytest.raises(ValueError, match=r"WORLD_SIZE='two' is not an integer"):
        ranks_from_environment({"WORLD_SIZE": "two"})
    with pytest.raises(ValueError, match="0 <= rank < world size"):
        ranks_from_environment({"RANK": "2", "WORLD_SIZE": "2"})


def test_shards_split_rows_evenly() -> None:
    assert [Ranks(r, 4).shard(8) for r in range(4)] == [slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8)]
    with pytest.raises(ValueError, match="do not split evenly over 4 ranks"):
        Ranks(0, 4).shard(10)


def test_backend_follows_the_device() -> None:
    assert backend_for("cuda:1") == "nccl" and backend_for("cpu") == "gloo"


def test_one_rank_joins_no_group() -> None:
    assert init_ranks("cpu", {}) == (SINGLE, "cpu")
