"""Work split over ranks and put back together: each rank computes every ``W``-th item, all ranks receive all items.

Used to spread a checkpoint's model forward over the ranks (:func:`saetrack.data.forward.residual_chunks`): the
batches of contexts are dealt out round-robin, each rank runs the model on its own, and an all-gather gives every rank
every batch's activations in the original order - exactly the rows one process would compute, batch for batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import torch
import torch.distributed as dist

from saetrack.distributed.ranks import Ranks

__all__ = ["all_gather_rows", "dealt_out"]

Item = TypeVar("Item")


def all_gather_rows(
    mine: torch.Tensor | None, sizes: Sequence[int], width: int, like: torch.Tensor
) -> list[torch.Tensor]:
    """Every rank's ``[sizes[r], width]`` rows (rank ``r``'s ``mine``; ``None`` or empty where ``sizes[r] == 0``), on
    every rank. Rows are padded to the largest size for the collective and cut back after; ``like`` gives the dtype
    and device of the exchange."""
    longest = max(sizes)
    padded = like.new_zeros((longest, width))
    if mine is not None and len(mine):
        padded[: len(mine)] = mine
    received = [like.new_empty((longest, width)) for _ in sizes]
    dist.all_gather(received, padded)
    return [rows[:size] for rows, size in zip(received, sizes, strict=True)]


def dealt_out(
    items: Sequence[Item],
    compute: Callable[[Item], torch.Tensor],
    rows_of: Callable[[Item], int],
    width: int,
    like: torch.Tensor,
    ranks: Ranks,
) -> Iterator[torch.Tensor]:
    """``compute(item)`` for every item, in order, on every rank: the items dealt out ``W`` at a time (item ``g W + r``
    computed by rank ``r``) and gathered (:func:`all_gather_rows`). ``rows_of(item)`` is the rows ``compute`` returns,
    known to every rank beforehand. With one rank, simply ``compute`` each item in turn."""
    if not ranks.distributed:
        for item in items:
            yield compute(item)
        return
    world = ranks.world_size
    for first in range(0, len(items), world):
        group = items[first : first + world]
        sizes = [rows_of(item) for item in group] + [0] * (world - len(group))
        mine = compute(group[ranks.rank]) if ranks.rank < len(group) else None
        yield from all_gather_rows(mine, sizes, width, like)[: len(group)]
        del mine
