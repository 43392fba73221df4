"""One SAE of the chain (a link, a from-scratch baseline or a convergence probe).

Its seed, its L1 coefficient, training on its own tokens and its quality on held-out data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saetrack import store
from saetrack.analysis.metrics import ce_loss_recovered, reconstruction_metrics
from saetrack.config.run import RunConfig
from saetrack.data.activations import ActivationSource
from saetrack.data.checkpoints import CheckpointSource
from saetrack.data.stream import hooked_model
from saetrack.distributed.ranks import SINGLE, Ranks
from saetrack.sae.io import save_sae
from saetrack.sae.model import SAETrackSAE, build_sae
from saetrack.sae.recurrent import recurrent_init
from saetrack.sae.training import NonFiniteLossError, TrainResult, train_sae
from saetrack.stages.chain.continuity import breaks_chain, carried_explained_variance, l0_breaks_chain

__all__ = [
    "ACTIVATION_SCALE_ROWS",
    "CURVE_POINTS",
    "DENSE_CURVE_POINTS",
    "OPTIMIZER_FILE",
    "ChainTrainingError",
    "TrainedLink",
    "activation_scale",
    "evaluate_link",
    "link_l1_coefficient",
    "link_seed",
    "sae_metadata",
    "save_link",
    "subsample_curve",
    "train_and_evaluate_link",
    "train_from_scratch",
    "train_link",
]

#: Adam's state saved beside a link when ``chain.optimizer_policy == "carry"``.
OPTIMIZER_FILE = "optimizer.pt"


#: Points kept of a chain link's loss curve in its manifest (subsampled evenly, endpoints kept).
CURVE_POINTS = 400


#: Points logged while training (every step up to this many steps); baselines keep them all for the
#: convergence study.
DENSE_CURVE_POINTS = 4000


class ChainTrainingError(RuntimeError):
    """Training a link failed (e.g. a non-finite loss); names the link. Finished links stay on disk."""


def link_seed(run: RunConfig, kind: str, position: int) -> int:
    """A seed for one SAE from the chain's seed (``kind``: "chain", "baseline" or "probe"; ``position`` in the
    schedule)."""
    kinds = {"chain": 0, "baseline": 1, "probe": 2}
    return int(np.random.SeedSequence([run.chain_seed, kinds[kind], position]).generate_state(1)[0])


#: Rows of a link's training slice its activation scale is measured on (:func:`activation_scale`).
ACTIVATION_SCALE_ROWS = 65_536


def activation_scale(x: np.ndarray, n_rows: int = ACTIVATION_SCALE_ROWS) -> float:
    """Mean L2 norm of the centred activations ``x - mean(x)`` over (up to) the first ``n_rows`` rows.

    The denominator of the paper's normalised reconstruction loss (see ``ChainConfig.l1_scale``).
    """
    rows = np.asarray(x[:n_rows], dtype=np.float64)
    return float(np.linalg.norm(rows - rows.mean(axis=0), axis=1).mean())


def link_l1_coefficient(run: RunConfig, scale: float, d_model: int) -> float:
    """The SAELens L1 coefficient of a link whose activations have centred norm ``scale`` (Eq. 3 with ``l1_scale``).

    ``l1_scale="activation_norm"``: ``l1_coefficient * d_model * scale`` — the paper's objective, whose MSE is
    averaged over dimensions and divided by the centred norm, rewritten for SAELens' summed MSE.
    ``"none"``: ``l1_coefficient`` unchanged.
    """
    chain = run.chain
    return chain.l1_coefficient * d_model * scale if chain.l1_scale == "activation_norm" else chain.l1_coefficient


def subsample_curve(curve: dict[str, list[float]], n: int = CURVE_POINTS) -> dict[str, list[float]]:
    """At most ``n`` points of a loss curve, evenly spaced, endpoints kept (each key subsampled alike)."""
    length = len(next(iter(curve.values()), []))
    if length <= n:
        return curve
    keep = np.unique(np.linspace(0, length - 1, n).round().astype(int))
    return {k: [v[i] for i in keep] for k, v in curve.items()}


def sae_metadata(run: RunConfig, step: int) -> dict[str, Any]:
    """SAELens metadata of the SAE at ``step``: hook, model name and this checkpoint's revision, context size."""
    model = run.model
    return {
        "hook_name": run.cache.hook_name,
        "model_name": model.repo_id or f"saetrack-{run.preset}",
        "context_size": run.cache.context_length,
        "dataset_path": run.corpus.source if run.corpus else "",
        "model_revision": model.revision_template.format(step=step),
        "prepend_bos": False,
    }


def evaluate_link(
    run: RunConfig,
    sae: SAETrackSAE,
    activations: ActivationSource,
    step: int,
    checkpoints: CheckpointSource,
    device: str = "cpu",
) -> dict[str, float]:
    """Quality of an SAE on held-out data of checkpoint ``step`` (App. C.1): reconstruction metrics and CE loss
    recovered, the model of ``step`` coming from ``checkpoints``."""
    metrics = reconstruction_metrics(sae, activations.heldout(step), batch_size=run.chain.batch_size)
    model = hooked_model(activations, checkpoints, step, device)  # the stream's own model when it has one
    metrics.update(ce_loss_recovered(model, sae, np.asarray(activations.heldout_tokens), run.cache.hook_name))
    return metrics


def train_link(
    run: RunConfig,
    sae: SAETrackSAE,
    activations: ActivationSource,
    step: int,
    *,
    start: int = 0,
    n_tokens: int,
    lr: float,
    warmup: int,
    seed: int,
    optimizer_state: dict[str, Any] | None,
    desc: str,
    progress: bool,
    keep_optimizer_state: bool = True,
    ranks: Ranks = SINGLE,
) -> TrainResult:
    """Train one SAE of the chain (a link, a baseline or a probe) on rows ``[start, start + n_tokens)`` of the link
    at ``step`` - cached or streamed, shuffled by the source (:meth:`ActivationSource.train_batches`).

    Each row is seen once (SAELens' trainer, via :func:`~saetrack.sae.training.train_sae`); the loss curve is
    logged densely for the convergence study. The matrix products run in ``chain.matmul_precision``.
    ``keep_optimizer_state``: return Adam's final state (on the host) for a next link to carry
    (``chain.optimizer_policy="carry"``, or a run trained in segments); ``False`` skips the copy
    (``TrainResult.optimizer_state`` is ``None``). Too few rows or a non-finite loss raises
    :class:`ChainTrainingError` naming ``desc`` (the link) - finished links stay on disk. With several ``ranks``
    every rank calls this alike and the SAE trains data-parallel (:mod:`saetrack.distributed.data_parallel`).
    """
    try:
        batches = activations.train_batches(
            step,
            start=start,
            n_tokens=n_tokens,
            batch_size=run.chain.batch_size,
            seed=seed,
            dtype=sae.dtype,
            device=str(sae.device),
        )
        return train_sae(
            sae,
            batches,
            n_tokens=n_tokens,
            lr=lr,
            warmup_steps=warmup,
            batch_size=run.chain.batch_size,
            seed=seed,
            optimizer_state=optimizer_state,
            keep_optimizer_state=keep_optimizer_state,
            matmul_precision=run.chain.matmul_precision,
            progress=progress and ranks.writer,
            desc=desc,
            log_every=max(1, n_tokens // run.chain.batch_size // DENSE_CURVE_POINTS),
            ranks=ranks,
        )
    except NonFiniteLossError as error:
        raise ChainTrainingError(f"{desc}: {error} Training stopped; every finished link is kept on disk.") from error
    except ValueError as error:
        raise ChainTrainingError(f"{desc}: {error} Every finished link is kept on disk.") from error


def train_from_scratch(
    run: RunConfig,
    activations: ActivationSource,
    step: int,
    *,
    l1_coefficient: float,
    seed: int,
    device: str,
    desc: str,
    progress: bool,
    ranks: Ranks = SINGLE,
) -> TrainResult:
    """An independent SAE at checkpoint ``step``: randomly initialised with ``seed`` and trained like the chain's
    first SAE (its lr and warm-up) for the baseline budget, fresh Adam - a from-scratch baseline or its second seed
    (the seed-to-seed control). Its Adam state is not kept (``TrainResult.optimizer_state`` is ``None``)."""
    chain = run.chain
    sae = build_sae(
        activations.d_model,
        dataclasses.replace(chain, l1_coefficient=l1_coefficient),
        seed=seed,
        device=device,
        metadata=sae_metadata(run, step),
    )
    return train_link(
        run,
        sae,
        activations,
        step,
        n_tokens=chain.baseline_token_budget,
        lr=chain.lr_first,
        warmup=chain.warmup_steps_first,
        seed=seed,
        optimizer_state=None,
        desc=desc,
        progress=progress,
        keep_optimizer_state=False,  # a from-scratch SAE's Adam state is never carried on
        ranks=ranks,
    )


@dataclass(frozen=True)
class TrainedLink:
    """A link trained and evaluated, not yet saved: the training result, its held-out quality and activation scale."""

    result: TrainResult
    quality: dict[str, float]
    scale: float
    #: Trained as a first link (fresh initialisation; position 0, or a restart of a continuity rule).
    first: bool
    #: The learning rate it trained at (``chain.lr_first`` for a first link, else ``chain.lr_link``).
    lr: float
    #: The previous link's explained variance on this checkpoint, unchanged (measured under ``chain.restart_below``;
    #: :mod:`saetrack.stages.chain.continuity`); ``None`` for a first link or with the rule off.
    carried_explained_variance: float | None = None
    #: Whether a continuity rule broke the chain here (trained as a first link).
    restarted: bool = False
    #: Which rule broke it: ``"carried"`` (``chain.restart_below``) or ``"l0"`` (``chain.restart_l0_ratio``).
    restart_cause: str | None = None
    #: Under ``chain.restart_l0_ratio``: the previous link's held-out L0, and this link's when continued from it.
    previous_l0: float | None = None
    continued_l0: float | None = None
    #: The tokens the continued link trained on before the outcome rule threw it away (``None`` when kept).
    continued_tokens: int | None = None


def train_and_evaluate_link(
    run: RunConfig,
    activations: ActivationSource,
    checkpoints: CheckpointSource,
    position: int,
    previous: SAETrackSAE | None,
    optimizer_state: dict[str, Any] | None,
    *,
    desc: str,
    device: str,
    progress: bool,
    ranks: Ranks = SINGLE,
    previous_l0: float | None = None,
) -> TrainedLink:
    """Train and evaluate the chain link at schedule ``position`` (Sec. 3.2.2) - the one recipe of every chain link,
    the chain stage's and the density study's sparse chains' alike.

    With ``previous`` None (the first link) the SAE is built fresh (:func:`~saetrack.sae.model.build_sae`), else it
    starts from ``previous`` (:func:`~saetrack.sae.recurrent.recurrent_init`, Sec. 3.2.2), with λ scaled by the
    link's own activations (:func:`link_l1_coefficient`). It trains on ``chain.tokens_for(position)`` rows of its
    checkpoint at the first or later link's lr and warm-up, seeded by :func:`link_seed`, carrying ``optimizer_state``
    under ``optimizer_policy="carry"``; then :func:`evaluate_link`. Under ``chain.restart_below`` a later link whose
    ``previous`` does not carry to this checkpoint is trained as a first link instead, and under
    ``chain.restart_l0_ratio`` a continued link whose L0 left the band around ``previous_l0`` (``previous``'s
    recorded held-out L0, given by the caller, which holds its record) is retrained as one
    (:mod:`~saetrack.stages.chain.continuity`). Non-finite activations raise
    :class:`ChainTrainingError` naming ``desc``. With several ``ranks`` (every rank calling alike) the link trains
    data-parallel and every rank returns the same link.
    """
    chain, step = run.chain, run.sae_steps[position]
    scale = activation_scale(activations.train_head(step, ACTIVATION_SCALE_ROWS))
    if not np.isfinite(scale):
        raise ChainTrainingError(
            f"{desc}: the activations of step {step} contain non-finite values (check the checkpoint; when cached, "
            "rebuild its cache). Every finished link is kept on disk."
        )
    l1 = link_l1_coefficient(run, scale, activations.d_model)

    def train(start: SAETrackSAE | None, state: dict[str, Any] | None) -> tuple[TrainResult, dict[str, float]]:
        result = _train_from(run, activations, position, start, state, l1, desc=desc, device=device,
                             progress=progress, ranks=ranks)  # fmt: skip
        return result, evaluate_link(run, result.sae, activations, step, checkpoints, device)

    carried = None
    if previous is not None and chain.restart_below is not None:
        carried = carried_explained_variance(run, previous, activations, step)
    cause = "carried" if breaks_chain(run, carried) else None
    if cause is not None:  # the chain is broken here: link k is trained as a first link (continuity module doc)
        previous = optimizer_state = None
    before = previous_l0 if previous is not None and chain.restart_l0_ratio is not None else None
    if previous is not None and chain.restart_l0_ratio is not None and before is None:
        raise ValueError(f"{desc}: chain.restart_l0_ratio needs the previous link's held-out L0 (previous_l0).")
    result, quality = train(previous, optimizer_state)
    continued = None if before is None else quality["l0"]
    thrown_away = None
    if continued is not None and before is not None and l0_breaks_chain(run, continued, before):
        cause, previous, thrown_away = "l0", None, result.n_tokens  # did not settle here: retrained as a first link
        result, quality = train(None, None)
    first = previous is None
    return TrainedLink(result, quality, scale, first, chain.lr_first if first else chain.lr_link,
                       carried_explained_variance=carried, restarted=cause is not None, restart_cause=cause,
                       previous_l0=before, continued_l0=continued, continued_tokens=thrown_away)  # fmt: skip


def _train_from(
    run: RunConfig,
    activations: ActivationSource,
    position: int,
    previous: SAETrackSAE | None,
    optimizer_state: dict[str, Any] | None,
    l1: float,
    *,
    desc: str,
    device: str,
    progress: bool,
    ranks: Ranks,
) -> TrainResult:
    """Train link ``position`` at λ ``l1``: from ``previous`` (recurrent init, the later link's lr, warm-up and
    budget) or, with ``previous`` None, freshly built as a first link (:func:`train_and_evaluate_link`)."""
    chain, step = run.chain, run.sae_steps[position]
    seed, metadata = link_seed(run, "chain", position), sae_metadata(run, step)
    first = previous is None
    if previous is None:
        sae = build_sae(activations.d_model, dataclasses.replace(chain, l1_coefficient=l1), seed=seed, device=device,
                        metadata=metadata)  # fmt: skip
    else:  # Sec. 3.2.2: SAE[k] starts from SAE[k-1], with link k's own hyperparameters
        sae = recurrent_init(previous, chain, l1_coefficient=l1, device=device, metadata=metadata)
    carry = chain.optimizer_policy == "carry"
    return train_link(run, sae, activations, step, n_tokens=chain.first_tokens if first else chain.link_tokens,
                      lr=chain.lr_first if first else chain.lr_link,
                      warmup=chain.warmup_steps_first if first else chain.warmup_steps_link, seed=seed,
                      optimizer_state=optimizer_state if carry else None, keep_optimizer_state=carry, desc=desc,
                      progress=progress, ranks=ranks)  # fmt: skip


def save_link(run: RunConfig, result: TrainResult, folder: Path) -> dict[str, str]:
    """Save a trained link into ``folder`` (SAELens format with its firing frequency, and Adam's state as
    :data:`OPTIMIZER_FILE` under ``optimizer_policy="carry"``); return the SAE files' hashes for its manifest."""
    files = save_sae(result.sae, folder, feature_sparsity=result.feature_frequency)
    if run.chain.optimizer_policy == "carry":
        with store.atomic_path(folder / OPTIMIZER_FILE) as tmp:
            torch.save(result.optimizer_state, tmp)
    return files
