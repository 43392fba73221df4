"""Training the crosscoder on the aligned activations: seeded shuffled epochs, Adam, resumable from saved state.

Each epoch visits the ``N`` cached tokens in a permutation drawn from the run's seed and the epoch number; batches
are read from the memory-mapped snapshot-major ``[T, N, d]`` array and divided by the per-snapshot scales. λ ramps
up linearly over the first ``sparsity_warmup`` share of the steps (so features are not killed before they have
found data). A feature that has not fired in the last ``dead_window_tokens`` tokens is *dead* and gets Anthropic's
pre-activation loss.

Every ``save_every`` steps the model, the optimiser, the dead-feature counters and the loss curve are written
atomically to ``state.pt``; :func:`train_crosscoder` given the same folder and ``key`` resumes from there and gives
the same weights as an uninterrupted run (the permutation depends only on the seed and the epoch).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from saetrack import store
from saetrack.config.crosscoder import CrosscoderConfig
from saetrack.crosscoder.model import Crosscoder, CrosscoderShape

__all__ = [
    "STATE_FILE",
    "TrainedCrosscoder",
    "crosscoder_shape",
    "train_crosscoder",
]


STATE_FILE = "state.pt"
#: Points of the saved loss curve (the steps are subsampled evenly to at most this many).
CURVE_POINTS = 400


@dataclass
class TrainedCrosscoder:
    """A trained crosscoder with its loss curve and how long training took (this run's share, after a resume)."""

    model: Crosscoder
    curve: dict[str, list[float]]
    steps: int
    seconds: float


def crosscoder_shape(cfg: CrosscoderConfig, n_snapshots: int, d_model: int, d_sae: int) -> CrosscoderShape:
    """The :class:`CrosscoderShape` of a config at a given size."""
    return CrosscoderShape(
        n_snapshots=n_snapshots,
        d_model=d_model,
        d_sae=d_sae,
        bandwidth=cfg.bandwidth,
        initial_threshold=cfg.initial_threshold,
        initial_decoder_norm=cfg.initial_decoder_norm,
    )


def _batch(data: np.ndarray, rows: np.ndarray, scales: torch.Tensor, device: str) -> torch.Tensor:
    """Rows ``rows`` of snapshot-major ``data`` ``[T, N, d]`` as a normalised ``[B, T, d]`` batch."""
    x = torch.from_numpy(np.asarray(data[:, np.sort(rows)], dtype=np.float32)).to(device)
    return x.transpose(0, 1) / scales[None, :, None]


def _save_state(path: Path, payload: dict[str, Any]) -> None:
    with store.atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _resume(
    path: Path, key: str, model: Crosscoder, optimizer: torch.optim.Optimizer, device: str
) -> tuple[torch.Tensor, dict[str, list[float]], int]:
    """Load the saved state into ``model`` and ``optimizer`` when it was written for ``key``; the dead-feature
    counters, the loss curve and the step to go on from (fresh ones and step 0 otherwise)."""
    since_fired = torch.zeros(model.shape.d_sae, device=device)
    curve: dict[str, list[float]] = {"step": [], "mse": [], "sparsity": [], "l0": [], "dead": []}
    if not path.exists():
        return since_fired, curve, 0
    state = torch.load(path, map_location=device, weights_only=False)
    if state.get("key") != key:
        return since_fired, curve, 0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state["since_fired"], state["curve"], int(state["step"])


def train_crosscoder(
    data: np.ndarray,
    scales: np.ndarray,
    cfg: CrosscoderConfig,
    d_sae: int,
    *,
    seed: int,
    state_dir: Path,
    key: str,
    device: str = "cpu",
    progress: bool = True,
) -> TrainedCrosscoder:
    """Train a crosscoder (:class:`~saetrack.crosscoder.model.Crosscoder`) on ``data`` ``[T, N, d]`` / ``scales [T]``.

    ``cfg.epochs`` shuffled passes in batches of ``cfg.batch_size`` tokens (a last partial batch is dropped), Adam
    at ``cfg.lr``; the loss of Ge et al. (2025) with λ = ``cfg.sparsity_coefficient`` (warmed up) and Anthropic's
    pre-activation loss on dead features. Resumes from ``state_dir/state.pt`` when it was written for ``key``.
    """
    n_snapshots, n_rows, d_model = data.shape
    steps_per_epoch = n_rows // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"the crosscoder has {n_rows} training tokens, fewer than one batch of {cfg.batch_size}.")
    total = steps_per_epoch * cfg.epochs
    warmup = max(1, math.ceil(cfg.sparsity_warmup * total))
    generator = torch.Generator().manual_seed(seed)
    model = Crosscoder(crosscoder_shape(cfg, n_snapshots, d_model, d_sae), generator=generator).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    state_path = state_dir / STATE_FILE
    since_fired, curve, start = _resume(state_path, key, model, optimizer, device)
    scale_t = torch.as_tensor(scales, dtype=torch.float32, device=device)
    record_every = max(1, total // CURVE_POINTS)
    started = time.perf_counter()
    bar = tqdm(total=total, initial=start, desc="crosscoder training", disable=not progress, unit="step")
    for step in range(start, total):
        epoch, position = divmod(step, steps_per_epoch)
        order = np.random.default_rng([seed, epoch]).permutation(n_rows)
        rows = order[position * cfg.batch_size : (position + 1) * cfg.batch_size]
        dead = since_fired >= cfg.dead_window_tokens
        out = model.loss(
            _batch(data, rows, scale_t, device),
            cfg.sparsity_coefficient * min(1.0, (step + 1) / warmup),
            cfg.tanh_scale,
            pre_act_coefficient=cfg.pre_act_coefficient,
            dead=dead,
        )
        optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        optimizer.step()
        since_fired += cfg.batch_size
        since_fired[(out.activations > 0).any(dim=0)] = 0
        if step % record_every == 0 or step == total - 1:
            for name, value in (("step", step), ("mse", out.mse), ("sparsity", out.sparsity), ("l0", out.l0)):
                curve[name].append(float(value))
            curve["dead"].append(float(dead.float().mean()))
            bar.set_postfix(
                mse=f"{float(out.mse):.3f}", l0=f"{float(out.l0):.1f}", dead=f"{float(dead.float().mean()):.2f}"
            )
        bar.update(1)
        if (step + 1) % cfg.save_every == 0 and step + 1 < total:
            _save_state(
                state_path,
                {
                    "key": key,
                    "step": step + 1,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "since_fired": since_fired,
                    "curve": curve,
                },
            )
    bar.close()
    model.eval()
    return TrainedCrosscoder(model, curve, total, time.perf_counter() - started)
