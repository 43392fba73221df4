"""Which process this is among the ranks of a ``torchrun`` job, and the process group they share.

``torchrun --nproc-per-node N [--nnodes M --rdzv-endpoint HOST:PORT] ...`` starts ``N * M`` copies of a command and
gives each its place in environment variables: ``RANK`` (0 .. world size - 1), ``WORLD_SIZE``, ``LOCAL_RANK`` (its
index on its node, the GPU it drives) and the rendezvous address. :func:`ranks_from_environment` reads them (a plain
``python`` process is rank 0 of 1); :func:`init_ranks` joins the process group - ``nccl`` when the ranks train on
CUDA GPUs, ``gloo`` on CPUs - and pins each rank to its GPU. Rank 0 is the writer: the one rank that writes a shared
artifact (:attr:`Ranks.writer`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "GROUP_TIMEOUT",
    "SINGLE",
    "Ranks",
    "backend_for",
    "barrier",
    "init_ranks",
    "rank_device",
    "ranks_from_environment",
]


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks of a job: its rank, the number of ranks, its index on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size or self.local_rank < 0:
            raise ValueError(
                f"rank {self.rank} of world size {self.world_size} (local rank {self.local_rank}) is not a place in a "
                "job: the world size must be >= 1 and 0 <= rank < world size."
            )

    @property
    def distributed(self) -> bool:
        """Whether there is more than one rank (collectives needed)."""
        return self.world_size > 1

    @property
    def writer(self) -> bool:
        """Whether this rank writes shared artifacts (rank 0)."""
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's rows of ``n`` rows split evenly (``n`` must divide by the world size): ``[r n/W, (r+1) n/W)``."""
        if n % self.world_size:
            raise ValueError(f"{n} rows do not split evenly over {self.world_size} ranks.")
        size = n // self.world_size
        return slice(self.rank * size, (self.rank + 1) * size)


#: The single process of a run started without ``torchrun``.
SINGLE = Ranks()

#: How long a rank waits in a collective before the job fails (PyTorch's default is 10 or 30 minutes).
GROUP_TIMEOUT = timedelta(hours=12)


def ranks_from_environment(environ: Mapping[str, str] | None = None) -> Ranks:
    """This process's :class:`Ranks` from ``torchrun``'s variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (absent:
    rank 0 of 1). A malformed value raises ``ValueError`` naming the variable."""
    env = os.environ if environ is None else environ
    values = {}
    for name, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)):
        raw = env.get(name)
        try:
            values[name] = default if raw in (None, "") else int(raw)
        except ValueError:
            raise ValueError(f"environment variable {name}={raw!r} is not an integer (set by torchrun).") from None
    return Ranks(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])


def backend_for(device: str) -> str:
    """The collective backend for ranks training on ``device``: ``"nccl"`` for CUDA, ``"gloo"`` otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init_ranks(device: str = "cpu", environ: Mapping[str, str] | None = None, **init: Any) -> tuple[Ranks, str]:
    """Join the job's process group (when there is more than one rank) and return ``(ranks, device)``.

    The backend is :func:`backend_for` ``device``; on CUDA each rank's device becomes ``cuda:<LOCAL_RANK>``. ``init``
    goes to ``torch.distributed.init_process_group`` (``init_method``, ``store``; by default torchrun's ``env://``),
    with a :data:`GROUP_TIMEOUT` for collectives unless given: the other ranks wait at a barrier while the writer
    builds inputs alone (a nano model suite, a streamed corpus). Called again in a process whose group exists, it
    returns the same answer without joining twice.
    """
    ranks = ranks_from_environment(environ)
    device = rank_device(ranks, device)
    if ranks.distributed and not dist.is_initialized():
        init.setdefault("timeout", GROUP_TIMEOUT)
        dist.init_process_group(backend=backend_for(device), rank=ranks.rank, world_size=ranks.world_size, **init)
    return ranks, device


def rank_device(ranks: Ranks, device: str) -> str:
    """The device this rank computes on: ``cuda:<LOCAL_RANK>`` (made current) for CUDA ranks of a job of several,
    ``device`` otherwise. A local rank beyond the node's GPUs raises ``RuntimeError`` saying so."""
    if torch.device(device).type != "cuda" or not ranks.distributed:
        return device
    if ranks.local_rank >= torch.cuda.device_count():
        raise RuntimeError(
            f"rank {ranks.rank} has local rank {ranks.local_rank}, but this node has {torch.cuda.device_count()} "
            "CUDA devices: start at most one rank per GPU (torchrun --nproc-per-node)."
        )
    device = f"cuda:{ranks.local_rank}"
    torch.cuda.set_device(device)
    return device


def barrier(ranks: Ranks) -> None:
    """Wait until every rank is here (no-op for one rank): after the writer wrote what the others read next."""
    if ranks.distributed:
        dist.barrier()
