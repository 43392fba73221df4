"""Seeding, device choice and the run a notebook works on — the one place these are decided."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from saetrack import paths
from saetrack.config import RunConfig, get_preset

__all__ = ["resolve_device", "resolve_run", "retain_freed_memory", "seed_everything", "torch_threads"]

log = logging.getLogger("saetrack")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (UMAP gets ``random_state`` explicitly)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


#: glibc ``mallopt`` parameters (``malloc.h``).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Blocks below this come from the heap and are reused when freed (glibc's ceiling on 64-bit: 32 MiB).
MMAP_THRESHOLD_BYTES = 32 << 20
#: Free memory at the top of the heap kept for reuse instead of being handed back to the OS.
TRIM_THRESHOLD_BYTES = 512 << 20
_retaining = False
#: Set to 1 to keep glibc's default malloc behaviour (see :func:`retain_freed_memory`).
DEFAULT_MALLOC_ENV = "SAETRACK_DEFAULT_MALLOC"


def retain_freed_memory() -> bool:
    """Make glibc's ``malloc`` reuse freed blocks below 32 MiB instead of returning them to the OS.

    By default glibc serves a 1 MiB block (one ``[256, 1024]`` float32 tensor of an SAE step) with a fresh
    ``mmap`` or trims it off the heap when freed, so every training step page-faults and zero-fills its
    temporaries again. On this project's 2-core machine that was a third of the process time spent in the
    kernel and halved the SAE training step's speed (``benchmarks/bench_sae_training.py``, the
    ``allocator`` rows). Arrays above 32 MiB are still ``mmap``-ed and returned when freed; at most
    512 MiB of free heap is kept. Nothing computed changes, only where memory comes from. Returns whether
    the setting took effect (``False`` off Linux/glibc, e.g. macOS, where the default allocator already
    caches, or when the environment variable ``SAETRACK_DEFAULT_MALLOC=1`` asks to leave malloc alone).
    Idempotent; called by :func:`resolve_run` and by SAE training.
    """
    global _retaining
    if _retaining:
        return True
    if os.environ.get(DEFAULT_MALLOC_ENV, "") not in ("", "0") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _retaining = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
    return _retaining


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` picks ``"cuda"`` when a GPU is visible, else ``"cpu"``; anything else is checked and returned."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but no CUDA GPU is visible; use 'cpu' or 'auto'.")
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
    retain_freed_memory()
    log.info(
        "preset %s, run directory %s, torch %s, threads %d",
        run.preset,
        folder,
        torch.__version__,
        torch.get_num_threads(),
    )
    return run, folder


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (tiny shapes: one thread avoids OpenMP overhead, ~5x here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
