"""The training buffer: block shuffle on known inputs, and equality with the global shuffle when one block."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from saetrack.data.shuffle import block_shuffled_batches, blocks_of, full_batches
from saetrack.sae.training import shuffled_batches


def _chunks(x: torch.Tensor, size: int):
    return lambda: iter(x.split(size))


def test_blocks_of_regroups_rows_in_order_whatever_the_chunking() -> None:
    x = torch.arange(23, dtype=torch.float32).reshape(23, 1)
    blocks = list(blocks_of(iter(x.split(4)), 10))
    assert [len(b) for b in blocks] == [10, 10, 3]
    assert torch.equal(torch.cat(blocks), x)
    with pytest.raises(ValueError, match="block_rows = 0"):
        list(blocks_of(iter(x.split(4)), 0))


def test_one_pass_uses_every_row_once_and_blocks_do_not_mix() -> None:
    x = torch.arange(40, dtype=torch.float32).reshape(40, 1)
    batches = list(itertools.islice(block_shuffled_batches(_chunks(x, 7), 5, buffer_rows=10, seed=3), 8))
    rows = torch.cat(batches).reshape(-1)
    assert sorted(rows.tolist()) == list(range(40))
    for block in range(4):  # rows 10b..10b+9 come out together, in the b-th group of 10
        assert sorted(rows[10 * block : 10 * block + 10].tolist()) == list(range(10 * block, 10 * block + 10))
    assert rows.tolist() != list(range(40))


def test_order_depends_on_rows_seed_and_buffer_not_on_chunking() -> None:
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    a = list(itertools.islice(block_shuffled_batches(_chunks(x, 5), 8, buffer_rows=16, seed=1), 8))
    b = list(itertools.islice(block_shuffled_batches(_chunks(x, 64), 8, buffer_rows=16, seed=1), 8))
    c = list(itertools.islice(block_shuffled_batches(_chunks(x, 5), 8, buffer_rows=16, seed=2), 8))
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a, c, strict=True))


def test_one_block_is_the_global_shuffle_of_shuffled_batches_across_passes() -> None:
    x = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    ours = block_shuffled_batches(_chunks(torch.from_numpy(x), 9), 16, buffer_rows=50, seed=7)
    reference = shuffled_batches(x, 16, seed=7)
    for _ in range(10):  # past the end of the first pass: leftovers and the second permutation agree too
        assert torch.equal(next(ours), next(reference))


def test_full_batches_carries_the_leftover_rows() -> None:
    x = torch.arange(7, dtype=torch.float32).reshape(7, 1)
    batches, leftover = full_batches(x, None, 3)
    assert [b.reshape(-1).tolist() for b in batches] == [[0, 1, 2], [3, 4, 5]] and leftover.reshape(-1).tolist() == [6]
    batches, leftover = full_batches(x[:2], leftover, 3)
    assert [b.reshape(-1).tolist() for b in batches] == [[6, 0, 1]] and leftover is None


def test_an_empty_link_is_refused() -> None:
    with pytest.raises(ValueError, match="no rows"):
        next(block_shuffled_batches(lambda: iter(()), 4, buffer_rows=8, seed=0))
