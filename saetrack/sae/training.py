"""Training one SAE link from cached activations with SAELens' own trainer (no language model in the loop).

:func:`train_sae` feeds SAELens' ``SAETrainer`` an iterator of activation batches drawn from a
``[n_tokens, d_in]`` array (a NumPy memmap of the activation cache, an in-memory array or a tensor) in a
seeded, shuffled order. It drives the trainer through the public per-step seams that SAELens' own
``MultiSAETrainer`` uses (``SAETrainer.step`` then ``n_training_steps += 1``) instead of ``fit()``,
which lets it check every loss for NaN/inf, record a loss curve and show a progress bar with its own
``desc`` without waiting on the device mid-loop (see the end). Each step is SAELens' (Adam, its learning-rate
schedule, its L1 coefficient schedule, gradient clipping at norm 1.0, its dead-feature and sparsity statistics); the
SAE's own training forward pass (:meth:`~saetrack.sae.SAETrackSAE.training_forward_pass`) computes the losses and
gradients of Eq. 3.

How the trainer is made to honour what SAE-Track needs:

* **L1 per link**: the trainer reads the L1 coefficient from ``sae.cfg`` when it is constructed, and a new
  trainer is built for every call, so each link trains with its own coefficient (the paper's original
  code cached it at construction and silently ignored later values). The coefficient actually scheduled
  is checked against ``sae.cfg.l1_coefficient`` (JumpReLU: its ``l0_coefficient``; TopK schedules none).
* **Other architectures** (``ChainConfig.architecture``, :mod:`saetrack.sae.architectures`): SAELens' own training
  step of TopK, BatchTopK or JumpReLU runs in the same loop; after every optimizer step the SAE's
  ``after_optimizer_step_`` runs (JumpReLU: thresholds clamped at 0).
* **Warm-up**: SAELens' ``lr_warm_up_steps`` (linear from ``lr / warmup_steps`` to ``lr``), then constant.
* **Fresh vs carried Adam state** (``ChainConfig.optimizer_policy``): the trainer always creates a new
  Adam. For ``"carry"`` the caller passes the previous link's ``TrainResult.optimizer_state``; only its
  per-parameter moments (``exp_avg``, ``exp_avg_sq``, ``step``) are loaded, while the learning rate and
  schedule stay this link's (a plain ``load_state_dict`` would also overwrite the learning rate).
* **Unit-norm decoder** (Eq. 5): the SAE's :class:`~saetrack.sae.unit_norm.UnitNormDecoder` keeps the
  constraint; here it is also attached to the optimizer, which rescales the rows after every step, so the
  weights returned and saved are exactly unit-norm.

The step uses the fused training step of :mod:`saetrack.sae.step` and PyTorch's fused Adam
(:func:`_use_fused_adam`); ``benchmarks/bench_sae_training.py`` measures both against SAELens' autograd path side
by side and prints the rates. ``matmul_precision`` (``ChainConfig.matmul_precision``) sets the precision of its
matrix products for the loop only (:mod:`saetrack.sae.precision`).

The step loop reads nothing back from the device on most steps (:mod:`saetrack.sae.loop`: losses kept on the device
and read back together every few ``log_every`` steps, SAELens' step free of host syncs); Adam's state is returned on
the host, and only when the caller keeps it.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sae_lens import LoggingConfig, SAETrainer
from sae_lens.config import SAETrainerConfig
from tqdm import tqdm

from saetrack.data.shuffle import full_batches, to_device
from saetrack.distributed.data_parallel import (
    broadcast_state,
    check_data_parallel,
    data_parallel_step,
    mean_over_ranks,
    shard_batches,
    total_firing_frequency,
)
from saetrack.distributed.ranks import SINGLE, Ranks
from saetrack.sae.architectures import architecture_of, coefficient_key, sparsity_coefficient
from saetrack.sae.loop import NonFiniteLossError, carry_moments, host_optimizer_state, run_steps
from saetrack.sae.model import LinkSAE
from saetrack.sae.precision import check_matmul_precision, training_precision

__all__ = [
    "CHUNK_BYTES",
    "ArrayLike",
    "NonFiniteLossError",
    "TrainResult",
    "sae_trainer",
    "shuffled_batches",
    "synthetic_activations",
    "train_sae",
]


ArrayLike = np.ndarray | torch.Tensor

#: Bytes of float32 rows that :func:`shuffled_batches` gathers at a time by default: below glibc's largest
#: ``mmap`` threshold (32 MiB), so a freed chunk is reused instead of mapped and page-faulted afresh.
CHUNK_BYTES = 16 << 20


@dataclass
class TrainResult:
    """Outcome of :func:`train_sae` for one link.

    ``loss_curve`` holds parallel lists: ``step`` (1-based), ``tokens`` (tokens seen), ``mse_loss``
    (``||x - x_hat||^2`` summed over dimensions, mean over the batch: the first term of Eq. 3, SAELens'
    convention), ``l1_loss`` (``lambda * mean L1``, Eq. 4 or 5; another architecture's terms beyond the
    reconstruction, :func:`~saetrack.sae.loop.penalty_loss`), ``loss`` (their sum, Eq. 3) and ``lr``.
    ``feature_frequency`` is each feature's firing frequency over the training tokens. ``optimizer_state`` is Adam's
    state on the host (CPU tensors), or ``None`` when :func:`train_sae` was asked not to keep it. ``l1_coefficient``
    is the SAE's sparsity coefficient (:func:`~saetrack.sae.architectures.sparsity_coefficient`).
    """

    sae: LinkSAE
    loss_curve: dict[str, list[float]]
    optimizer_state: dict[str, Any] | None
    n_tokens: int
    n_steps: int
    wall_time_s: float
    tokens_per_s: float
    feature_frequency: torch.Tensor
    l1_coefficient: float
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary (no weights, no optimizer state) for a link's manifest."""
        last = {k: v[-1] for k, v in self.loss_curve.items() if v}
        return {
            "n_tokens": self.n_tokens,
            "n_steps": self.n_steps,
            "wall_time_s": round(self.wall_time_s, 3),
            "tokens_per_s": round(self.tokens_per_s, 1),
            "l1_coefficient": self.l1_coefficient,
            "final": last,
            "train_l0": float(self.feature_frequency.sum()),
            "train_dead_fraction": float((self.feature_frequency == 0).float().mean()),
            **self.extra,
        }


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def _gather(array: ArrayLike, index: np.ndarray) -> torch.Tensor:
    """Rows ``index`` (ascending) of ``array`` as a tensor; reads only those rows of a memmap."""
    if isinstance(array, torch.Tensor):
        return array[to_device(torch.from_numpy(index), array.device)]
    return torch.from_numpy(np.ascontiguousarray(array[index]))


def shuffled_batches(
    activations: ArrayLike,
    batch_size: int,
    *,
    seed: int,
    chunk_tokens: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> Iterator[torch.Tensor]:
    """An endless iterator of ``[batch_size, d_in]`` batches of ``activations`` rows in a seeded random order.

    Each epoch is a fresh permutation of all rows (from ``numpy.random.default_rng(seed)``); rows are read
    ``chunk_tokens`` at a time (sorted, so a memmap is read sequentially and never loaded whole), put back
    in permutation order, cast to ``dtype`` and moved to ``device``. Rows left over at the end of a chunk
    or an epoch start the next batch, so every batch is full and every row is used once per epoch; the
    batches are consecutive slices of the permutation whatever the chunk size. ``chunk_tokens=None`` reads
    as many rows as fit in :data:`CHUNK_BYTES` of float32, small enough for ``malloc`` to reuse the memory
    instead of page-faulting a fresh mapping per chunk (``benchmarks/bench_sae_training.py --only train_sae``).
    """
    n_rows = int(activations.shape[0])
    if activations.ndim != 2 or n_rows == 0:
        raise ValueError(
            f"activations must be a non-empty [n_tokens, d_in] array, got shape {tuple(activations.shape)}."
        )
    if batch_size <= 0:
        raise ValueError(f"batch_size = {batch_size} is invalid: must be > 0.")
    if chunk_tokens is None:
        chunk_tokens = CHUNK_BYTES // (4 * max(1, int(activations.shape[1])))
    chunk = max(int(chunk_tokens), batch_size)
    rng = np.random.default_rng(seed)
    leftover: torch.Tensor | None = None
    while True:
        permutation = rng.permutation(n_rows)
        for start in range(0, n_rows, chunk):
            index = permutation[start : start + chunk]
            order = np.argsort(index, kind="stable")
            rows = _gather(activations, index[order])
            restore = np.empty_like(order)
            restore[order] = np.arange(order.size)
            rows = to_device(rows[to_device(torch.from_numpy(restore), rows.device)], device, dtype)
            batches, leftover = full_batches(rows, leftover, batch_size)
            yield from batches


def synthetic_activations(
    n_tokens: int,
    d_in: int,
    *,
    n_features: int | None = None,
    firing_probability: float = 0.02,
    noise: float = 0.01,
    offset: float = 1.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic activations with a known sparse dictionary, for tests, benchmarks and smoke runs.

    ``x = offset_vector + sum_i a_i d_i + noise``: ``n_features`` (default ``4 * d_in``) random unit
    directions ``d_i``, each active independently with ``firing_probability`` and magnitude ``|N(0, 1)| + 0.5``.
    Returns ``(x [n_tokens, d_in] float32, directions [n_features, d_in] float32)``.
    """
    rng = np.random.default_rng(seed)
    n_feat = 4 * d_in if n_features is None else n_features
    directions = rng.standard_normal((n_feat, d_in)).astype(np.float32)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    active = rng.random((n_tokens, n_feat)) < firing_probability
    magnitudes = (np.abs(rng.standard_normal((n_tokens, n_feat))) + 0.5).astype(np.float32) * active
    shift = offset * rng.standard_normal(d_in).astype(np.float32) / math.sqrt(d_in)
    x = magnitudes @ directions + shift + noise * rng.standard_normal((n_tokens, d_in)).astype(np.float32)
    return x.astype(np.float32), directions


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def _use_fused_adam(optimizer: torch.optim.Optimizer) -> None:
    """Switch SAELens' Adam to PyTorch's fused kernel (one pass per parameter instead of about ten) on CPU/CUDA.

    Same update rule; the rounding of the last bits differs from the default multi-tensor kernel. Set
    before the first step, so the optimizer state is created in the fused kernel's layout.
    """
    for group in optimizer.param_groups:
        devices = {p.device.type for p in group["params"]}
        if devices <= {"cpu", "cuda"} and all(p.dtype in (torch.float32, torch.float64) for p in group["params"]):
            group["fused"], group["foreach"] = True, False


def sae_trainer(
    sae: LinkSAE,
    data: Iterator[torch.Tensor],
    *,
    n_steps: int,
    batch_size: int,
    lr: float,
    warmup_steps: int,
) -> SAETrainer[Any, Any]:
    """SAELens' ``SAETrainer`` for ``sae`` as :func:`train_sae` runs it, before its first step.

    Constant ``lr`` after ``warmup_steps`` linear warm-up, one sparsity window over all ``n_steps``, the L1
    coefficient of ``sae.cfg`` (checked), PyTorch's fused Adam, and for a unit-norm decoder rows renormalised
    now and after every optimizer step.
    """
    device = str(sae.device)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=n_steps * batch_size,
        train_batch_size_samples=batch_size,
        lr=lr,
        lr_end=lr,  # unused by the constant schedule; SAETrainer asserts it is set
        lr_warm_up_steps=warmup_steps,
        device=device,
        feature_sampling_window=n_steps + 1,  # one sparsity window: the whole link
        logger=LoggingConfig(log_to_wandb=False),
    )
    trainer: SAETrainer[Any, Any] = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=data)
    key = coefficient_key(sae)
    if key is not None and trainer.coefficient_schedulers[key].final_value != sparsity_coefficient(sae):
        raise RuntimeError(
            f"SAETrainer scheduled {key} = {trainer.coefficient_schedulers[key].final_value}, but the SAE's config "
            f"says {sparsity_coefficient(sae)}."
        )
    _use_fused_adam(trainer.optimizer)
    if sae.unit_norm_decoder:
        sae.unit_norm.after_optimizer_steps(trainer.optimizer, sae)
    after_step = getattr(sae, "after_optimizer_step_", None)
    if after_step is not None:
        trainer.optimizer.register_step_post_hook(lambda _optimizer, _args, _kwargs: after_step())
    return trainer


def _checked_batches(batches: Iterator[torch.Tensor], batch_size: int, d_in: int) -> Iterator[torch.Tensor]:
    """``batches`` passed through, each checked to be ``[batch_size, d_in]``."""
    for batch in batches:
        if tuple(batch.shape) != (batch_size, d_in):
            raise ValueError(f"a training batch has shape {tuple(batch.shape)}, expected [{batch_size}, {d_in}].")
        yield batch


def _training_batches(
    sae: LinkSAE,
    activations: ArrayLike | Iterator[torch.Tensor],
    batch_size: int,
    *,
    seed: int,
    chunk_tokens: int | None,
    ranks: Ranks,
) -> Iterator[torch.Tensor]:
    """The batches :func:`train_sae` steps on: an array shuffled (:func:`shuffled_batches`) or ready batches checked;
    with several ranks, this rank's share of each (and the SAE made rank 0's, so all ranks start alike)."""
    if isinstance(activations, np.ndarray | torch.Tensor):
        if activations.ndim != 2 or activations.shape[1] != sae.cfg.d_in:
            raise ValueError(
                f"activations have shape {tuple(activations.shape)}, expected [n_tokens, d_in={sae.cfg.d_in}]."
            )
        data = shuffled_batches(
            activations, batch_size, seed=seed, chunk_tokens=chunk_tokens, dtype=sae.dtype, device=str(sae.device)
        )
    else:
        data = _checked_batches(activations, batch_size, sae.cfg.d_in)
    if ranks.distributed:
        data = shard_batches(data, ranks)
        broadcast_state(sae)
    return data


def train_sae(
    sae: LinkSAE,
    activations: ArrayLike | Iterator[torch.Tensor],
    *,
    n_tokens: int,
    lr: float,
    warmup_steps: int,
    batch_size: int,
    seed: int,
    optimizer_state: dict[str, Any] | None = None,
    keep_optimizer_state: bool = True,
    matmul_precision: str = "fp32",
    log_every: int = 25,
    progress: bool = True,
    desc: str = "train SAE",
    chunk_tokens: int | None = None,
    ranks: Ranks = SINGLE,
) -> TrainResult:
    """Train ``sae`` in place on rows of ``activations`` for ``ceil(n_tokens / batch_size)`` steps (Eq. 3).

    ``activations`` is a ``[n_tokens, d_in]`` array (shuffled here) or an iterator of ready ``[batch_size, d_in]``
    batches on the SAE's device (an activation source's ``train_batches``).

    Uses SAELens' ``SAETrainer`` (Adam, betas 0.9/0.999, constant lr after ``warmup_steps`` linear warm-up,
    gradient-norm clipping at 1.0) with the L1 coefficient of ``sae.cfg``. Batches come from
    :func:`shuffled_batches` seeded with ``seed``; the same seed, data and starting weights give
    bit-identical weights. ``optimizer_state`` (a previous result's) carries Adam's moments over
    (``optimizer_policy="carry"``); ``None`` starts fresh. ``keep_optimizer_state``: return Adam's final state (copied
    to the host) in the result, else ``None``. ``matmul_precision`` (``"fp32"``, ``"tf32"``, ``"bf16"``): the
    precision of the step's matrix products, for the step loop only (:mod:`saetrack.sae.precision`). A NaN or
    infinite loss raises :class:`NonFiniteLossError` naming its step. Every ``log_every`` steps (and at the first and
    last) the losses are recorded in ``TrainResult.loss_curve`` and shown on the progress bar, read back from the
    device together every :func:`~saetrack.sae.loop.check_every` steps.

    ``ranks`` (more than one: the process group of a ``torchrun`` job, :mod:`saetrack.distributed`): every rank calls
    this with the same arguments and trains data-parallel - its share of each global ``batch_size`` batch, gradients
    averaged before each step (:mod:`saetrack.distributed.data_parallel`) - and returns the same SAE; ``n_tokens``,
    the loss curve and the firing frequency are the global batches'.
    """
    for name, value in {"n_tokens": n_tokens, "batch_size": batch_size, "lr": lr, "log_every": log_every}.items():
        if not value > 0:
            raise ValueError(f"{name} = {value!r} is invalid: must be > 0.")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps = {warmup_steps!r} is invalid: must be >= 0.")
    check_matmul_precision(matmul_precision)
    check_data_parallel(architecture_of(sae), batch_size, ranks)
    n_steps = math.ceil(n_tokens / batch_size)
    data = _training_batches(sae, activations, batch_size, seed=seed, chunk_tokens=chunk_tokens, ranks=ranks)
    local_batch = batch_size // ranks.world_size
    trainer = sae_trainer(sae, data, n_steps=n_steps, batch_size=local_batch, lr=lr, warmup_steps=warmup_steps)
    if optimizer_state is not None:
        carry_moments(trainer.optimizer, optimizer_state)

    sae.train()
    start = time.perf_counter()
    with (
        tqdm(total=n_steps * batch_size, desc=desc, unit="tok", unit_scale=True, disable=not progress) as bar,
        training_precision(sae, matmul_precision),
        data_parallel_step(trainer) if ranks.distributed else contextlib.nullcontext(),
    ):
        curve = run_steps(trainer, data, n_steps=n_steps, batch_size=batch_size, log_every=log_every, bar=bar,
                          desc=desc, reduce_losses=mean_over_ranks if ranks.distributed else None)  # fmt: skip
    wall = time.perf_counter() - start
    trainer.set_final_sae_metadata()
    sae.eval()
    n_trained = trainer.n_training_samples * ranks.world_size
    frequency = total_firing_frequency(trainer) if ranks.distributed else trainer.feature_sparsity
    return TrainResult(
        sae=sae,
        loss_curve=curve,
        optimizer_state=host_optimizer_state(trainer.optimizer) if keep_optimizer_state else None,
        n_tokens=n_trained,
        n_steps=n_steps,
        wall_time_s=wall,
        tokens_per_s=n_trained / max(wall, 1e-9),
        feature_frequency=frequency.detach().cpu(),
        l1_coefficient=sparsity_coefficient(sae),
    )
