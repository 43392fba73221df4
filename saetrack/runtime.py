"""Seeding, device choice and the run a notebook works on — the one place these are decided."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from saetrack import paths
from saetrack.config.presets import get_preset
from saetrack.config.run import RunConfig

__all__ = [
    "keep_freed_memory",
    "resolve_device",
    "resolve_run",
    "seed_everything",
    "torch_threads",
]


log = logging.getLogger("saetrack")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (UMAP gets ``random_state`` explicitly)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


#: glibc ``mallopt`` parameters (malloc.h) and the values :func:`keep_freed_memory` sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 * 2**20
_TRIM_THRESHOLD = 2**30


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the kernel (training loops).

    By default glibc serves every allocation above a dynamic threshold with fresh ``mmap``'d pages and returns
    them on ``free``, and trims the heap's top: a training step that allocates and frees the same large tensors
    each iteration then page-faults on all of them again (measured on the nano suite: 35k minor faults and a fifth
    of the step's CPU time in the kernel). This fixes the mmap threshold at its maximum (32 MiB) and the trim
    threshold at 1 GiB for the rest of the process. Returns whether it applied (``False`` off glibc).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return False
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` picks ``"cuda"`` when a GPU is visible, else ``"cpu"``; anything else is checked and returned."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but no CUDA GPU is visible; use 'cpu' or 'auto'.")
    if device.startswith("cuda:"):
        index, count = device.partition(":")[2], torch.cuda.device_count()
        if not index.isdigit() or int(index) >= count:
            raise ValueError(f"device={device!r} is not there: this machine has {count} CUDA GPU(s), 'cuda:0' to "
                             f"'cuda:{count - 1}'.")  # fmt: skip
    elif device == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device='mps' was asked for but no Apple GPU is available; use 'cpu' or 'auto'.")
    elif device not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={device!r} is invalid: use 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.")
    return device


def resolve_run(preset: str, config_json: str = "", run_dir: str = "") -> tuple[RunConfig, Path]:
    """The validated config and run directory a notebook works on.

    ``config_json`` (set by ``run_all.py`` from a validated :class:`RunConfig`) wins over ``preset``;
    it is validated again here, so a hand-edited parameter cannot slip an invalid value through.
    """
    run = RunConfig.from_dict(json.loads(config_json)) if config_json else get_preset(preset)
    folder = Path(run_dir).resolve() if run_dir else paths.run_dir(run.preset)
    folder.mkdir(parents=True, exist_ok=True)
    seed_everything(run.seed)
    log.info(
        "preset %s, run directory %s, torch %s, threads %d",
        run.preset,
        folder,
        torch.__version__,
        torch.get_num_threads(),
    )
    return run, folder


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads (``None``: unchanged), restoring the old value.

    Tiny shapes run faster on one thread (no OpenMP overhead); bit-identical resumption of training needs the same
    thread count.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads = {threads} is invalid: must be >= 1 (or None to keep {previous}).")
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
