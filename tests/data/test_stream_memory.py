"""Live bytes of a streamed link's batch production against the plan's formula: the shuffle buffer fed by a row
source, and by the model forward of :func:`~saetrack.data.forward.residual_chunks` (a stand-in model), tracked
tensor by tensor with a dispatch mode; the list-and-cat buffer it replaced held about twice as much."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from saetrack.data.forward import residual_chunks
from saetrack.data.shuffle import block_shuffled_batches, shuffle_peak_bytes
from saetrack.data.stream import stream_peak_bytes
from tests.data.test_shuffle import reference_block_shuffled_batches


class LiveBytes(TorchDispatchMode):
    """Bytes of the storages that operators return while active and that are still alive; ``peak`` their maximum."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.now = self.peak = 0

    def _freed(self, key: int) -> None:
        self.now -= self.live.pop(key)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key and key not in self.live:
                self.live[key] = storage.nbytes()
                self.now += storage.nbytes()
                self.peak = max(self.peak, self.now)
                weakref.finalize(storage, self._freed, key)
        return out


def test_the_tracker_counts_allocations_and_frees() -> None:
    with LiveBytes() as tracker:
        a = torch.empty(1000)
        b = a[:10] + 1
        del a
        c = torch.empty(500)
    assert tracker.peak == 4000 + 40 and tracker.now == 40 + 2000
    del b, c


def _source(n_rows: int, chunk_rows: int, d: int, seed: int) -> Callable[[], Iterator[torch.Tensor]]:
    """A fake row source: ``[chunk_rows, d]`` float32 chunks made one at a time (as a model forward would)."""

    def rows() -> Iterator[torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        for begin in range(0, n_rows, chunk_rows):
            yield torch.randn(min(chunk_rows, n_rows - begin), d, generator=generator)

    return rows


def _peak(batches: Iterator[torch.Tensor], n: int) -> int:
    """Peak live bytes while ``n`` batches are drawn, each kept until the next arrives (as a training loop does)."""
    with LiveBytes() as tracker:
        for _ in range(n):
            batch = next(batches)
        del batch
    return tracker.peak


@pytest.mark.parametrize(("buffer_rows", "chunk_rows", "batch_size"), [(4096, 512, 256), (3000, 700, 128)])
def test_shuffle_peak_is_within_the_formula(buffer_rows: int, chunk_rows: int, batch_size: int) -> None:
    d, n_rows = 64, 10_000
    kwargs: dict[str, Any] = dict(buffer_rows=buffer_rows, seed=0)
    n = 2 * n_rows // batch_size + 3  # two passes and more
    peak = _peak(block_shuffled_batches(_source(n_rows, chunk_rows, d, 1), batch_size, **kwargs), n)
    formula = shuffle_peak_bytes(buffer_rows, d, torch.float32, chunk_rows, batch_size)
    assert buffer_rows * d * 4 < peak <= 1.1 * formula, (peak, formula)
    old = _peak(reference_block_shuffled_batches(_source(n_rows, chunk_rows, d, 1), batch_size, **kwargs), n)
    assert old > 1.9 * buffer_rows * d * 4 and old > 1.5 * peak, (old, peak)


class _StandIn(torch.nn.Module):
    """A model whose forward returns a fixed-width residual: what residual_chunks needs, at no compute."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.d = d

    def forward(self, tokens: torch.Tensor, stop_at_layer: int) -> torch.Tensor:
        return tokens[..., None].float().expand(*tokens.shape, self.d) * 0.5


def test_streamed_batch_production_is_within_the_formula() -> None:
    d, ctx, batch_contexts, buffer_rows, batch_size = 64, 32, 8, 2048, 128
    tokens = np.random.default_rng(0).integers(0, 1000, size=(300, ctx))
    model = _StandIn(d)

    def rows() -> Iterator[torch.Tensor]:
        return residual_chunks(model, tokens, 1, batch_contexts=batch_contexts, device="cpu")

    batches = block_shuffled_batches(rows, batch_size, buffer_rows=buffer_rows, seed=3)
    peak = _peak(batches, 2 * tokens.size // batch_size + 1)
    formula = stream_peak_bytes(buffer_rows, d, torch.float32, batch_contexts * ctx, batch_size)
    assert buffer_rows * d * 4 < peak <= 1.1 * formula, (peak, formula)
