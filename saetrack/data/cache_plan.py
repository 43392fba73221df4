"""The activation cache's plan: which token spans each checkpoint caches, and whether it fits on disk."""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saetrack.config.base import config_hash
from saetrack.config.data import hashed_cache_section
from saetrack.config.run import RunConfig
from saetrack.data.tokens import contexts

__all__ = [
    "NUMPY_DTYPES",
    "TORCH_DTYPES",
    "CacheTooLargeError",
    "TokenPlan",
    "cache_config_hash",
    "check_disk_space",
    "plan_tokens",
    "planned_cache_bytes",
]


TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


# numpy has no bfloat16: bfloat16 caches are stored as float32 values rounded to bfloat16.
NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(np.float32),
}


class CacheTooLargeError(RuntimeError):
    """The planned activation cache would not fit on the disk holding the run directory."""


def planned_cache_bytes(run: RunConfig, d_model: int) -> int:
    """Bytes the activation cache of ``run`` will occupy: every planned token at every scheduled checkpoint."""
    plan = plan_tokens(run)
    contexts_per_step = plan.analysis[1] + plan.heldout[1]
    train_contexts = sum(n for _, n in plan.train.values())
    n_tokens = (contexts_per_step * len(run.sae_steps) + train_contexts) * plan.context_length
    return n_tokens * d_model * NUMPY_DTYPES[run.cache.dtype].itemsize


def check_disk_space(run: RunConfig, folder: Path, d_model: int, layers: int = 1) -> int:
    """Raise :class:`CacheTooLargeError` unless the planned cache (one per layer of ``layers``, written together)
    fits in 90% of the free space at ``folder``."""
    need = planned_cache_bytes(run, d_model) * layers
    free = shutil.disk_usage(folder).free
    if need > 0.9 * free:
        each = f" for {layers} layers" if layers > 1 else ""
        raise CacheTooLargeError(
            f"the activation cache of preset {run.preset!r} needs {need / 1e9:,.1f} GB{each} "
            f"({run.chain.first_tokens:,} first-SAE tokens, {run.chain.link_tokens:,} per later link, "
            f"d_model {d_model}, {run.cache.dtype}) but only {free / 1e9:,.1f} GB are free at {folder}. "
            "Stream the activations instead (--set cache.mode=streamed: nothing of this size is written), lower "
            "chain.first_tokens / chain.link_tokens, store float16 (cache.dtype), or point SAETRACK_RUNS at a "
            "bigger disk."
        )
    return need


@dataclass(frozen=True)
class TokenPlan:
    """Which contexts of the token streams each part of the cache uses (all in units of contexts).

    ``train`` maps a checkpoint step to ``(start_context, n_contexts)`` in the training stream;
    ``analysis`` and ``heldout`` are ``(start_context, n_contexts)`` in the held-out stream. Context ``k`` of a stream
    is its window ``window_order(W, order_seed)[k mod W]`` (:func:`~saetrack.data.tokens.contexts`): every span is
    drawn across the whole stream, never a consecutive stretch of it.
    """

    context_length: int
    analysis: tuple[int, int]
    heldout: tuple[int, int]
    train: dict[int, tuple[int, int]]
    order_seed: int = 0

    def contexts(self, stream: np.ndarray, span: tuple[int, int]) -> np.ndarray:
        """The token ids ``[n_contexts, context_length]`` of ``span = (start_context, n_contexts)`` of ``stream``."""
        return contexts(stream, span[0], span[1], self.context_length, order_seed=self.order_seed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "context_length": self.context_length,
            "analysis": list(self.analysis),
            "heldout": list(self.heldout),
            "train": {str(step): list(span) for step, span in self.train.items()},
            "order_seed": self.order_seed,
        }


def _link_rows(run: RunConfig, n_tokens: int) -> int:
    """Rows an SAE trained for ``n_tokens`` tokens reads: streamed, whole batches (one pass, no wrap-around)."""
    if not run.cache.streamed:
        return n_tokens
    return math.ceil(n_tokens / run.chain.batch_size) * run.chain.batch_size


def plan_tokens(run: RunConfig) -> TokenPlan:
    """Allocate contexts: the analysis and held-out sets from the held-out stream, one training slice per link.

    Link ``p`` of the chain needs ``chain.reserved_tokens_for(p)`` tokens (``chain.tokens_for(p)``, or the first
    link's budget under a continuity rule, ``chain.may_restart``); a checkpoint that also gets a baseline
    needs ``chain.baseline_token_budget``; the final checkpoint also holds the drift noise floor's links, each on
    fresh rows after the final link's (``run.noise_floor_links`` times the link budget). Slices follow each other
    in chain order, so no two links see the same training tokens (streams shorter than the plan wrap around;
    :func:`cache_activations` records when that happens), and every slice is spread over the whole stream by the
    window order of the chain's seed (``order_seed``). Streamed (``cache.mode="streamed"``), a link's slice is
    rounded up to whole SAE batches, so each row is read once and no slice is run through the model twice.
    """
    ctx = run.cache.context_length
    n_heldout = math.ceil(run.cache.heldout_tokens / ctx)
    train: dict[int, tuple[int, int]] = {}
    start = 0
    baseline_steps = set(run.baseline_steps)
    for position, step in enumerate(run.sae_steps):
        tokens = _link_rows(run, run.chain.reserved_tokens_for(position))
        if step in baseline_steps:
            tokens = max(tokens, _link_rows(run, run.chain.baseline_token_budget))
        if position == len(run.sae_steps) - 1 and run.noise_floor_links:  # after every row the final link may read
            noise = run.noise_floor_links * _link_rows(run, run.chain.tokens_for(position))
            tokens = max(tokens, _link_rows(run, run.chain.reserved_tokens_for(position)) + noise)
        n_contexts = math.ceil(tokens / ctx)
        train[step] = (start, n_contexts)
        start += n_contexts
    return TokenPlan(
        context_length=ctx,
        analysis=(0, run.cache.analysis_contexts),
        heldout=(run.cache.analysis_contexts, n_heldout),
        train=train,
        order_seed=run.chain_seed,
    )


def cache_config_hash(run: RunConfig) -> str:
    """Hash of everything the cache depends on: corpus, model suite, model source, cache section and token plan.

    ``cache.buffer_tokens`` is left out: it orders the training rows, not what is cached (the chain's hash has it).
    """
    data = run.to_dict()
    payload = {
        "seed": run.seed,
        "corpus": data["corpus"],
        "suite": data["suite"],
        "model": data["model"],
        "cache": {k: v for k, v in hashed_cache_section(data["cache"]).items() if k != "buffer_tokens"},
        "plan": plan_tokens(run).to_dict(),
    }
    return config_hash(payload)
