"""Training the crosscoder on the aligned activations: seeded shuffled epochs, Adam, resumable from saved state.

Each epoch visits the ``N`` cached tokens in a permutation drawn from the run's seed and the epoch number; batches
are read from the memory-mapped snapshot-major ``[T, N, d]`` array and divided by the per-snapshot scales. λ ramps
up linearly over the first ``sparsity_warmup`` share of the steps (so features are not killed before they have
found data). A feature that has not fired in the last ``dead_window_tokens`` tokens is *dead* and gets Anthropic's
pre-activation loss.

The learning rate decays linearly to zero over the last ``lr_decay`` share of the steps, and the decoder-norm matrix
``[F, T]`` is recorded every :func:`norm_record_every` steps for the settling rule of notebook 06
(:func:`saetrack.analysis.emergence_controls.settling`). On CPU each step runs over the code's active entries only
(:mod:`saetrack.crosscoder.sparse`) with fused Adam.

Every ``save_every`` steps the model, the optimiser, the dead-feature counters, the norm records and the loss curve
are written atomically to ``state.pt``; :func:`train_crosscoder` given the same folder and ``key`` resumes from there
and gives the same weights as an uninterrupted run (the permutation depends only on the seed and the epoch).

Data-parallel (``ranks`` of a ``torchrun`` job, :mod:`saetrack.distributed.data_parallel`): the global batch of a
step is the single process's (the same permutation), rank ``r`` of ``W`` takes its ``r``-th share of the batch's
(sorted) rows; the gradients are averaged over the ranks before Adam steps, the tokens-since-fired counts are reduced
with ``MIN`` after every step (a feature fired in the global batch when it fired on any rank), the loss curve holds
the ranks' mean (the global batch's, as shares are equal) and a non-finite loss on any rank stops every rank. All
ranks end with the same weights; the writer (rank 0) alone saves the state. Only the order of float32 sums differs
from one process (``tests/crosscoder/test_data_parallel.py`` states the tolerance).
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from saetrack import store
from saetrack.analysis.emergence_controls import SETTLING_WINDOW
from saetrack.config.crosscoder import CrosscoderConfig
from saetrack.crosscoder.model import Crosscoder, CrosscoderLoss, CrosscoderShape
from saetrack.distributed.data_parallel import any_over_ranks, average_gradients, broadcast_state, mean_over_ranks
from saetrack.distributed.ranks import SINGLE, Ranks

__all__ = [
    "STATE_FILE",
    "NonFiniteCrosscoderLossError",
    "TrainedCrosscoder",
    "crosscoder_shape",
    "epoch_rows",
    "learning_rate",
    "norm_record_every",
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
    norm_steps: np.ndarray  # [R] optimiser steps after which the decoder norms were recorded (0 and the last included)
    norm_records: np.ndarray  # [R, F, T] the decoder-norm matrix at each
    live: np.ndarray  # [F] features that fired within the last dead_window_tokens tokens of training


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


def _batch(
    data: np.ndarray, rows: np.ndarray, norm: tuple[torch.Tensor, torch.Tensor | None], device: str
) -> torch.Tensor:
    """Rows ``rows`` of snapshot-major ``data`` ``[T, N, d]`` as a normalised ``[B, T, d]`` batch: divided by the
    per-snapshot scales ``norm[0]`` ``[T]`` after subtracting the per-snapshot offsets ``norm[1]`` ``[T, d]``."""
    x = torch.from_numpy(np.asarray(data[:, np.sort(rows)], dtype=np.float32))
    if torch.device(device).type == "cpu":
        x = x.to(device)
    else:  # pinned, asynchronous: the host reads the next batch while the device trains on this one
        x = x.pin_memory().to(device, non_blocking=True)
    scales, offsets = norm
    if offsets is not None:
        x -= offsets[:, None]
    out = torch.empty(x.shape[1], x.shape[0], x.shape[2], device=device)
    return torch.div(x.transpose(0, 1), scales[None, :, None], out=out)


class NonFiniteCrosscoderLossError(RuntimeError):
    """The crosscoder's training loss became NaN or infinite between two checks (``after`` and ``by`` steps)."""

    def __init__(self, after: int, by: int) -> None:
        self.after, self.by = after, by
        super().__init__(f"non-finite crosscoder loss at an optimiser step after step {after}, by step {by}.")


def epoch_rows(seed: int, epoch: int, n_rows: int) -> np.ndarray:
    """The order in which epoch ``epoch`` visits the ``n_rows`` training tokens: a permutation drawn from
    ``numpy.random.default_rng([seed, epoch])`` (it depends on nothing else, so a resumed run draws the same)."""
    return np.random.default_rng([seed, epoch]).permutation(n_rows)


def learning_rate(cfg: CrosscoderConfig, step: int, total_steps: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based): ``cfg.lr``, decaying linearly to zero over the last
    ``cfg.lr_decay`` share of the ``total_steps`` (the last step runs at ``cfg.lr / decay_steps``)."""
    decay_steps = math.ceil(cfg.lr_decay * total_steps)
    if decay_steps == 0:
        return cfg.lr
    return cfg.lr * min(1.0, (total_steps - step) / decay_steps)


def norm_record_every(total_steps: int) -> int:
    """Optimiser steps between two records of the decoder-norm matrix: a quarter of the settling window."""
    return max(1, int(SETTLING_WINDOW * total_steps) // 4)


def _save_state(path: Path, payload: dict[str, Any]) -> None:
    with store.atomic_path(path) as tmp:
        torch.save(payload, tmp)


@dataclass
class _Progress:
    """What training carries from step to step besides the model and optimiser (saved with them, resumed)."""

    since_fired: torch.Tensor  # [F] tokens since each feature last fired
    curve: dict[str, list[float]]
    norm_steps: list[int]
    norm_records: list[np.ndarray]  # [F, T] decoder norms after norm_steps[k] steps
    step: int = 0


def _resume(path: Path, key: str, model: Crosscoder, optimizer: torch.optim.Optimizer, device: str) -> _Progress:
    """Load the saved state into ``model`` and ``optimizer`` when it was written for ``key`` and return the progress
    to go on from (fresh progress at step 0 otherwise)."""
    fresh = _Progress(
        torch.zeros(model.shape.d_sae, device=device),
        {"step": [], "mse": [], "sparsity": [], "l0": [], "dead": []},
        [0],
        [model.decoder_norms().detach().cpu().numpy()],
    )
    if not path.exists():
        return fresh
    state = torch.load(path, map_location=device, weights_only=False)
    if state.get("key") != key:
        return fresh
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return _Progress(
        state["since_fired"], state["curve"], state["norm_steps"], state["norm_records"], int(state["step"])
    )


def _record(progress: _Progress, out: CrosscoderLoss, dead: torch.Tensor, step: int, bar: tqdm, ranks: Ranks) -> None:
    """Append step ``step``'s losses (the ranks' mean: the global batch's) to the curve and show them on the progress
    bar (reads them back: a host sync, every ``total // CURVE_POINTS`` steps)."""
    losses = torch.stack([out.mse, out.sparsity, out.l0]).float()
    if ranks.distributed:
        mean_over_ranks(losses)
    progress.curve["step"].append(float(step))
    for name, value in zip(("mse", "sparsity", "l0"), losses.tolist(), strict=True):
        progress.curve[name].append(value)
    progress.curve["dead"].append(float(dead.float().mean()))
    bar.set_postfix(mse=f"{progress.curve['mse'][-1]:.3f}", l0=f"{progress.curve['l0'][-1]:.1f}",
                    dead=f"{progress.curve['dead'][-1]:.2f}")  # fmt: skip


def _checked(non_finite: torch.Tensor, since: int, step: int, ranks: Ranks) -> int:
    """Raise :class:`NonFiniteCrosscoderLossError` when the device-side flag ``non_finite`` says a loss after step
    ``since`` was NaN or infinite (on any of the ``ranks``); else the step checked up to, ``step``."""
    if any_over_ranks(non_finite) if ranks.distributed else bool(non_finite):
        raise NonFiniteCrosscoderLossError(since, step)
    return step


def _optimise(optimizer: torch.optim.Optimizer, loss: torch.Tensor, lr: float, ranks: Ranks) -> None:
    """One Adam step on ``loss`` at learning rate ``lr``, on the gradients averaged over the ``ranks``."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if ranks.distributed:
        average_gradients([p for group in optimizer.param_groups for p in group["params"]])
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()


def _start(
    shape: CrosscoderShape, cfg: CrosscoderConfig, seed: int, saved: tuple[Path, str], device: str, ranks: Ranks
) -> tuple[Crosscoder, torch.optim.Optimizer, _Progress]:
    """The seeded crosscoder, its fused Adam and the progress to go on from: resumed from ``saved`` = ``(state file,
    key)`` when it was written for that key; with several ``ranks``, rank 0's weights broadcast to all."""
    model = Crosscoder(shape, generator=torch.Generator().manual_seed(seed)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)
    state = _resume(*saved, model, optimizer, device)
    if ranks.distributed:  # every rank read the same state; rank 0's weights make sure of it
        broadcast_state(model)
    return model, optimizer, state


def _normalisation(
    scales: np.ndarray, offsets: np.ndarray | None, device: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The per-snapshot scales ``[T]`` and offsets ``[T, d]`` (or None) as float32 tensors on ``device``."""
    as_tensor = functools.partial(torch.as_tensor, dtype=torch.float32, device=device)
    return as_tensor(scales), None if offsets is None else as_tensor(offsets)


def _count_firing(since_fired: torch.Tensor, activations: torch.Tensor, batch_size: int, ranks: Ranks) -> None:
    """Advance each feature's tokens-since-fired by the global batch and zero it where the feature fired (in place):
    on any rank's share of the batch, with several ``ranks`` (an all-reduce ``MIN``)."""
    since_fired += batch_size
    since_fired.masked_fill_((activations > 0).any(dim=0), 0)
    if ranks.distributed:
        dist.all_reduce(since_fired, op=dist.ReduceOp.MIN)


def _checked_shape(
    data: np.ndarray, cfg: CrosscoderConfig, n_snapshots: int | None, ranks: Ranks
) -> tuple[int, int, int, int]:
    """``(T, N, d, steps per epoch)`` of the training ``data`` ``[T or 1, N, d]``; a clear error when it holds
    another number of blocks or fewer tokens than one batch, or when the batch does not split over the ``ranks``."""
    if cfg.batch_size % ranks.world_size:
        raise ValueError(
            f"crosscoder.batch_size = {cfg.batch_size} does not split over {ranks.world_size} ranks: use a multiple of "
            "the number of ranks, so every rank trains on the same share of each batch."
        )
    blocks, n_rows, d_model = data.shape
    n_snapshots = n_snapshots or blocks
    steps_per_epoch = n_rows // cfg.batch_size
    if blocks not in (1, n_snapshots) or steps_per_epoch == 0:
        raise ValueError(
            f"the crosscoder reads {n_snapshots} snapshots; data holds {blocks} blocks (expected that or 1)."
            if steps_per_epoch
            else f"the crosscoder has {n_rows} training tokens, fewer than one batch of {cfg.batch_size}."
        )
    return n_snapshots, n_rows, d_model, steps_per_epoch


def train_crosscoder(
    data: np.ndarray,
    scales: np.ndarray,
    cfg: CrosscoderConfig,
    d_sae: int,
    *,
    seed: int,
    state_dir: Path,
    key: str,
    offsets: np.ndarray | None = None,
    n_snapshots: int | None = None,
    device: str = "cpu",
    progress: bool = True,
    sparse: bool | None = None,
    ranks: Ranks = SINGLE,
) -> TrainedCrosscoder:
    """Train a crosscoder (:class:`~saetrack.crosscoder.model.Crosscoder`) on ``data`` ``[T, N, d]`` / ``scales [T]``.

    ``cfg.epochs`` shuffled passes in batches of ``cfg.batch_size`` tokens (a last partial batch is dropped), Adam
    at ``cfg.lr`` decaying to zero over the last ``cfg.lr_decay`` share (:func:`learning_rate`); the loss of Ge et
    al. (2025) with λ = ``cfg.sparsity_coefficient`` (warmed up), Anthropic's pre-activation loss on dead features.
    ``offsets`` ``[T, d]`` are subtracted before the scale (centred inputs); ``n_snapshots`` is ``T`` when ``data``
    is one block ``[1, N, d]`` read at every snapshot (the repeated-snapshot null). Decoder norms are recorded every
    :func:`norm_record_every` steps and at the end (the settling rule). ``sparse`` (default: on CPU) uses
    :mod:`saetrack.crosscoder.sparse`. Resumes from ``state_dir/state.pt`` when it was written for ``key``.

    Each epoch's permutation (:func:`epoch_rows`) is drawn once, when the epoch begins. The loop reads nothing back
    from the device per step: a non-finite loss sets a device-side flag, read (raising
    :class:`NonFiniteCrosscoderLossError`) when the loss curve is recorded and before the state is saved.

    With several ``ranks`` every rank calls this alike and trains its share of each batch (module doc); every rank
    returns the same model, the writer alone saves the state and shows progress.
    """
    n_snapshots, n_rows, d_model, steps_per_epoch = _checked_shape(data, cfg, n_snapshots, ranks)
    total = steps_per_epoch * cfg.epochs
    warmup = max(1, math.ceil(cfg.sparsity_warmup * total))
    shape = crosscoder_shape(cfg, n_snapshots, d_model, d_sae)
    state_path = state_dir / STATE_FILE
    model, optimizer, state = _start(shape, cfg, seed, (state_path, key), device, ranks)
    norm = _normalisation(scales, offsets, device)
    sparse = device == "cpu" if sparse is None else sparse
    record_every, norms_every = max(1, total // CURVE_POINTS), norm_record_every(total)
    started = time.perf_counter()
    bar = tqdm(total=total, initial=state.step, desc="crosscoder training", disable=not (progress and ranks.writer),
                unit="step")  # fmt: skip
    rows, rows_epoch = np.zeros(0, dtype=np.int64), -1
    non_finite, checked = torch.zeros((), dtype=torch.bool, device=device), state.step
    for step in range(state.step, total):
        epoch, position = divmod(step, steps_per_epoch)
        if epoch != rows_epoch:  # one permutation per pass, drawn when the pass begins
            rows, rows_epoch = epoch_rows(seed, epoch, n_rows), epoch
        batch_rows = np.sort(rows[position * cfg.batch_size : (position + 1) * cfg.batch_size])
        x = _batch(data, batch_rows[ranks.shard(cfg.batch_size)], norm, device)
        dead = state.since_fired >= cfg.dead_window_tokens
        out = model.loss(
            x, cfg.sparsity_coefficient * min(1.0, (step + 1) / warmup), cfg.tanh_scale,
            pre_act_coefficient=cfg.pre_act_coefficient, dead=dead, sparse=sparse,
        )  # fmt: skip
        _optimise(optimizer, out.total, learning_rate(cfg, step, total), ranks)
        non_finite |= ~torch.isfinite(out.total.detach())  # on the device: no host sync per step
        _count_firing(state.since_fired, out.activations, cfg.batch_size, ranks)
        if step % record_every == 0 or step == total - 1:  # the flag is read where the curve is read back anyway
            checked = _checked(non_finite, checked, step + 1, ranks)
            _record(state, out, dead, step, bar, ranks)
        if (step + 1) % norms_every == 0 or step == total - 1:
            state.norm_steps.append(step + 1)
            state.norm_records.append(model.decoder_norms().detach().cpu().numpy())
        bar.update(1)
        if (step + 1) % cfg.save_every == 0 and step + 1 < total:
            state.step = checked = _checked(non_finite, checked, step + 1, ranks)  # never save a non-finite state
            if ranks.writer:
                _save_state(state_path, {"key": key, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                         **vars(state)})  # fmt: skip
    bar.close()
    model.eval()
    return TrainedCrosscoder(
        model, state.curve, total, time.perf_counter() - started, np.asarray(state.norm_steps),
        np.stack(state.norm_records), (state.since_fired < cfg.dead_window_tokens).cpu().numpy(),
    )  # fmt: skip
