"""The training buffer: SAE batches drawn from a link's rows in token order, shuffled one block at a time.

A link's rows arrive in token order - read from the cache, or computed by its checkpoint's model on the fly. They are
cut into consecutive blocks of ``buffer_rows`` rows; each block is permuted with ``numpy.random.default_rng(seed)``
(one generator for the whole link, drawing one permutation per block) and the batches are consecutive slices of the
permuted blocks, rows left at a block's end starting the next batch. The order depends only on the rows, the seed
and ``buffer_rows`` - never on where the rows came from - so the cached and the streamed path train the same SAE.
With one block holding the whole link this is exactly the global shuffle of
:func:`saetrack.sae.training.shuffled_batches` (the same permutation of the same generator).

Memory: one ``[buffer_rows, d]`` buffer of the SAE's dtype is allocated on the SAE's device when the first rows
arrive and reused for every block and pass. Each incoming chunk is copied straight into it (from pinned host memory,
without blocking, when it comes from the host to a CUDA device); when the block is full its permutation is uploaded
and each batch is gathered from the buffer by its slice of the permutation (``index_select``), so the permuted
block is never materialised: the peak is one buffer, its permutation, one incoming chunk and a batch or two
(:func:`shuffle_peak_bytes`). The batches are new tensors, never views of the buffer, so a consumer may keep them.
A second buffer would only help if the next block were filled concurrently (another thread or CUDA stream); here
the fill and the SAE steps are queued on one stream in order, which the single buffer keeps exactly.

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
    "copy_rows",
    "full_batches",
    "shuffle_peak_bytes",
    "to_device",
]


def _pinned_upload(source: torch.Tensor, device: torch.device) -> bool:
    """Whether moving ``source`` to ``device`` is a host-to-CUDA upload (then pinned and non-blocking)."""
    return device.type == "cuda" and source.device.type == "cpu"


def to_device(tensor: torch.Tensor, device: str | torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``tensor`` on ``device`` (in ``dtype`` if given): a host tensor bound for CUDA is pinned first and uploaded
    with ``non_blocking=True`` (the host goes on at once); any other move is a plain ``Tensor.to``."""
    device = torch.device(device)
    if _pinned_upload(tensor, device):
        pinned = tensor if tensor.is_pinned() else tensor.pin_memory()
        return pinned.to(device=device, dtype=dtype, non_blocking=True)
    return tensor.to(device=device, dtype=dtype)


def copy_rows(destination: torch.Tensor, source: torch.Tensor) -> None:
    """Copy ``source`` into ``destination`` (same shape; cast to its dtype), pinned and non-blocking when the copy
    is a host-to-CUDA upload (see :func:`to_device`)."""
    if _pinned_upload(source, destination.device):
        destination.copy_(source if source.is_pinned() else source.pin_memory(), non_blocking=True)
    else:
        destination.copy_(source)


def shuffle_peak_bytes(
    buffer_rows: int, d: int, dtype: torch.dtype = torch.float32, chunk_rows: int = 0, batch_size: int = 0
) -> int:
    """Peak bytes :func:`block_shuffled_batches` holds on its device: the ``[buffer_rows, d]`` buffer of ``dtype``,
    its int64 permutation, one incoming float32 ``[chunk_rows, d]`` chunk (the row source's, counted here as it
    lands) and three ``[batch_size, d]`` batches (the one the consumer still holds while asking for the next, and
    the leftover rows of a block with the batch they complete).

    ``buffer_rows * (d * itemsize + 8) + chunk_rows * d * 4 + 3 * batch_size * d * itemsize``.
    """
    item = torch.empty((), dtype=dtype, device="meta").element_size()
    return buffer_rows * (d * item + 8) + chunk_rows * d * 4 + 3 * batch_size * d * item


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


class _Buffer:
    """The block buffer: ``[buffer_rows, d]`` of ``dtype`` on ``device``, allocated at the first chunk, reused."""

    def __init__(self, buffer_rows: int, dtype: torch.dtype, device: torch.device) -> None:
        if buffer_rows <= 0:
            raise ValueError(f"buffer_rows = {buffer_rows} is invalid: must be > 0.")
        self.rows, self.dtype, self.device = buffer_rows, dtype, device
        self.data: torch.Tensor | None = None

    def blocks(self, chunks: Iterator[torch.Tensor]) -> Iterator[tuple[torch.Tensor, int]]:
        """Fill the buffer from ``chunks`` in token order; yield it with its row count per full block and at the end."""
        filled = 0
        for chunk in chunks:
            if self.data is None:
                self.data = torch.empty((self.rows, chunk.shape[1]), dtype=self.dtype, device=self.device)
            begin = 0
            while begin < chunk.shape[0]:
                take = min(self.rows - filled, chunk.shape[0] - begin)
                copy_rows(self.data[filled : filled + take], chunk[begin : begin + take])
                filled, begin = filled + take, begin + take
                if filled == self.rows:
                    yield self.data, filled
                    filled = 0
            del chunk  # the next chunk is made only after this one is let go
        if filled and self.data is not None:
            yield self.data, filled


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
    :func:`~saetrack.sae.training.shuffled_batches` does. The block buffer lives on ``device`` in ``dtype``; no value
    is ever read back to the host (the permutations are drawn on the host and uploaded).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size = {batch_size} is invalid: must be > 0.")
    rng = np.random.default_rng(seed)
    buffer = _Buffer(buffer_rows, dtype, torch.device(device))
    leftover: torch.Tensor | None = None
    while True:
        n_seen = 0
        for data, n in buffer.blocks(rows()):
            n_seen += n
            order = to_device(torch.from_numpy(rng.permutation(n)), buffer.device)
            begin = 0
            if leftover is not None:  # the batch that straddles two blocks (or passes)
                begin = min(batch_size - leftover.shape[0], n)
                leftover = torch.cat([leftover, data.index_select(0, order[:begin])])
                if leftover.shape[0] == batch_size:
                    yield leftover
                    leftover = None
            while begin + batch_size <= n:
                yield data.index_select(0, order[begin : begin + batch_size])
                begin += batch_size
            if begin < n:
                leftover = data.index_select(0, order[begin:n])
            del order  # not kept while the next block fills
        if n_seen == 0:
            raise ValueError("the link has no rows to train on (its row stream is empty).")
