"""The crosscoder's input: the activations of the same tokens at every snapshot, ``[T, N, d]``, cached once.

A crosscoder reads one token at all ``T`` snapshots at once, so unlike the chain's cache (each link its own slice of
the training stream) every snapshot must see the *same* tokens. :func:`build_aligned_activations` runs each snapshot's
model up to the chain's hook on the first ``crosscoder.train_contexts`` contexts of the training stream (the tokens
the chain's first SAE trains on) and writes block ``θ`` of one snapshot-major ``[T, N, d]`` array (``train.npy``, the
cache's dtype), one snapshot at a time, so memory holds one model and one batch and every write is contiguous (a
token-major ``[N, T, d]`` file would dirty every page of the file once per snapshot). A snapshot's block is recorded
as done (``progress.json``, written after the block is flushed), so an interrupted build resumes at the first
missing snapshot. Training reads a batch as ``data[:, rows]``.

Cached rather than recomputed each epoch: ``benchmarks/bench_crosscoder.py`` measures, side by side, the forward
of all snapshots, writing and reading the cache, and one crosscoder training step per token. The forward of 28 nano
checkpoints costs more than a training step, writing and reading the cache about 1% of the forward, so recomputing
activations every epoch would cost about ``epochs`` times the forward (3x at the default 3 epochs) and caching them
costs it once.

Normalisation (Ge et al., as Anthropic's crosscoders): each snapshot's activations are divided by one scalar, their
mean norm over the first :data:`SCALE_ROWS` rows, so every snapshot weighs the same in the loss although the
residual stream grows about ten-fold over training. That scale is *uncentred*: where a snapshot's activations share
a large mean direction, the mean norm is mostly that mean, and the varying part is scaled down. The centred
normalisation (:func:`snapshot_moments`, a control of notebook 06) subtracts each snapshot's mean activation and
divides by the RMS norm of what is left, ``(x - mean_θ) / rms_θ``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from saetrack import store
from saetrack.config.run import RunConfig
from saetrack.data.cache_plan import NUMPY_DTYPES
from saetrack.data.forward import fill_activations

__all__ = [
    "ACTIVATIONS_FILE",
    "PROGRESS_FILE",
    "SCALE_ROWS",
    "build_aligned_activations",
    "snapshot_moments",
    "snapshot_scales",
]


ACTIVATIONS_FILE = "train.npy"
PROGRESS_FILE = "progress.json"
#: Rows over which each snapshot's mean activation norm (its normalisation scale) is measured.
SCALE_ROWS = 16_384


def snapshot_scales(activations: np.ndarray, n_rows: int = SCALE_ROWS) -> np.ndarray:
    """Mean Euclidean norm of each snapshot's activations over the first ``n_rows`` rows of ``[T, N, d]``, ``[T]``."""
    head = np.asarray(activations[:, :n_rows], dtype=np.float64)
    scales = np.linalg.norm(head, axis=-1).mean(axis=1)
    if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
        raise ValueError(f"snapshot activation norms {scales} are not all finite and positive; the cache is broken.")
    return scales


def snapshot_moments(activations: np.ndarray, n_rows: int = SCALE_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """The centred normalisation of each snapshot over the first ``n_rows`` rows of ``[T, N, d]``: its mean activation
    ``mean_θ`` ``[T, d]`` and the RMS norm of the centred activations ``rms_θ = sqrt(mean ||x - mean_θ||²)`` ``[T]``
    (the input is then ``(x - mean_θ) / rms_θ``, unit RMS norm per snapshot). One snapshot at a time, in float64."""
    means, rms = [], []
    for block in activations:
        head = np.asarray(block[:n_rows], dtype=np.float64)
        mean = head.mean(axis=0)
        means.append(mean)
        rms.append(np.sqrt(np.mean(np.sum((head - mean) ** 2, axis=-1))))
    rms_arr = np.asarray(rms)
    if not np.all(np.isfinite(rms_arr)) or np.any(rms_arr <= 0):
        raise ValueError(f"centred activation norms {rms_arr} are not all finite and positive; the cache is broken.")
    return np.stack(means), rms_arr


def build_aligned_activations(
    run: RunConfig,
    folder: Path,
    tokens: np.ndarray,
    steps: tuple[int, ...],
    load_model: Callable[[int], Any],
    *,
    key: str,
    device: str = "cpu",
    progress: bool = True,
) -> np.ndarray:
    """Write (or finish) the ``[T, N, d]`` activations of ``tokens`` ``[n, ctx]`` at every step of ``steps``.

    ``load_model(step)`` returns the hooked model of that checkpoint; ``key`` identifies what is being cached (the
    caller's config hash): a folder holding another key's partial work is started afresh. Returns the array,
    memory-mapped read-only.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ACTIVATIONS_FILE
    state_path = folder / PROGRESS_FILE
    state = store.read_json(state_path) if state_path.exists() else {}
    done = set(state.get("done", [])) if state.get("key") == key and path.exists() else set()
    n_rows = tokens.size
    out: np.ndarray | None = None
    for column, step in enumerate(tqdm(steps, desc="crosscoder activations", disable=not progress)):
        if step in done:
            continue
        model = load_model(step)
        d_model = int(model.cfg.d_model)
        if out is None:
            shape = (len(steps), n_rows, d_model)
            dtype = NUMPY_DTYPES[run.cache.dtype]
            if done:
                out = np.load(path, mmap_mode="r+")
            else:
                out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        fill_activations(run, model, tokens, out[column], device)
        out.flush()
        done.add(step)
        store.write_json(state_path, {"key": key, "done": sorted(done), "steps": list(steps)})
        del model
        if device != "cpu":
            torch.cuda.empty_cache()
    del out
    return np.load(path, mmap_mode="r")
