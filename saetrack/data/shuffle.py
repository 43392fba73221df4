"""The training buffer: SAE batches drawn from a link's rows in token order, shuffled one block at a time.

A link's rows arrive in token order - read from the cache, or computed by its checkpoint's model on the fly. They are
cut into consecutive blocks of ``buffer_rows`` rows; each block is permuted with ``numpy.random.default_rng(seed)``
(one generator for the whole link, drawing one permutation per block) and the batches are consecutive slices of the
permuted blocks, rows left at a block's end starting the next batch. The order depends only on the rows, the seed
and ``buffer_rows`` - never on where the rows came from - so the cached and the streamed path train the same SAE.
With one block holding the whole link this is exactly the global shuffle of
:func:`saetrack.sae.training.shuffled_batches` (the same permutation of the same generator).

Unlike SAELens' mixing buffer (refilled by halves, so a row can wait any number of refills; its size is the store's
``n_batches_in_buffer * context_size`` tokens, see SAELens PR #692), every row here is used exactly once per pass and
the order is reproducible from the seed alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

__all__ = [
    "block_shuffled_batches",
    "blocks_of",
    "full_batches",
]


def blocks_of(chunks: Iterator[torch.Tensor], block_rows: int) -> Iterator[torch.Tensor]:
    """Regroup ``[n_i, d]`` row chunks into consecutive ``[block_rows, d]`` blocks (the last may be short)."""
    if block_rows <= 0:
        raise ValueError(f"block_rows = {block_rows} is invalid: must be > 0.")
    pending: list[torch.Tensor] = []
    n_pending = 0
    for chunk in chunks:
        while chunk.shape[0]:
            take = min(block_rows - n_pending, chunk.shape[0])
            pending.append(chunk[:take])
            n_pending += take
            chunk = chunk[take:]
            if n_pending == block_rows:
                yield pending[0] if len(pending) == 1 else torch.cat(pending)
                pending, n_pending = [], 0
    if n_pending:
        yield pending[0] if len(pending) == 1 else torch.cat(pending)


def full_batches(
    rows: torch.Tensor, leftover: torch.Tensor | None, batch_size: int
) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """``leftover`` then ``rows`` cut into whole ``[batch_size, d]`` batches, and the rows left for the next batch."""
    if leftover is not None:
        rows = torch.cat([leftover, rows])
    n_full = rows.shape[0] // batch_size
    batches = [rows[b * batch_size : (b + 1) * batch_size] for b in range(n_full)]
    return batches, (rows[n_full * batch_size :] if rows.shape[0] % batch_size else None)


def block_shuffled_batches(
    rows: Callable[[], Iterator[torch.Tensor]],
    batch_size: int,
    *,
    buffer_rows: int,
    seed: int,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> Iterator[torch.Tensor]:
    """An endless iterator of ``[batch_size, d]`` batches: ``rows()`` shuffled ``buffer_rows`` at a time (module doc).

    ``rows`` is called once per pass over the link and yields its rows in token order as ``[n_i, d]`` chunks (on any
    device); a pass that ends mid-batch continues with the next pass (a new permutation of each block), as
    :func:`~saetrack.sae.training.shuffled_batches` does. Blocks are permuted on their own device, so a buffer on the
    GPU stays there.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size = {batch_size} is invalid: must be > 0.")
    rng = np.random.default_rng(seed)
    leftover: torch.Tensor | None = None
    while True:
        n_seen = 0
        for block in blocks_of(rows(), buffer_rows):
            n_seen += block.shape[0]
            order = torch.as_tensor(rng.permutation(block.shape[0]), device=block.device)
            batches, leftover = full_batches(block[order].to(device=device, dtype=dtype), leftover, batch_size)
            yield from batches
        if n_seen == 0:
            raise ValueError("the link has no rows to train on (its row stream is empty).")
