"""Two-rank jobs started by the tests themselves: ``gloo`` on the CPU, a file store in the test's temporary folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from saetrack.distributed.ranks import Ranks, init_ranks


def _rank_main(rank: int, world: int, folder: str, work: Callable[[Ranks, Path], None], args: tuple[Any, ...]) -> None:
    """One rank: join the group through a file store, run ``work(ranks, folder, *args)``, leave the group."""
    torch.set_num_threads(1)
    environ = {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)}
    os.environ.update(environ)
    ranks, _ = init_ranks("cpu", environ, init_method=f"file://{folder}/rendezvous")
    try:
        work(ranks, Path(folder), *args)
    finally:
        dist.destroy_process_group()


def run_ranks(work: Callable[..., None], folder: Path, *args: Any, world: int = 2) -> None:
    """Run ``work(ranks, folder, *args)`` on ``world`` CPU ranks (new processes, ``gloo``); re-raise a rank's error."""
    folder.mkdir(parents=True, exist_ok=True)
    mp.start_processes(_rank_main, args=(world, str(folder), work, args), nprocs=world, start_method="spawn")
