"""Feature statistics, filtering, top-k datapoints, token/concept labels and evolution patterns (Sec. 4, App. A.1).

Every function takes plain arrays and :class:`~saetrack.sae.SAEWeights`, so the analysis runs on synthetic data in
tests and on :class:`~saetrack.activations.ActivationCache` memmaps (rows ``c * ctx + q``) in the pipeline.

Rules used to turn the paper's prose into code:

* **Filtering (App. A.1).** ``dead``: a feature active on no row at any checkpoint. ``ultra_low``: not dead, but
  its largest density over checkpoints is below ``min_density`` or its largest max-activation over checkpoints is
  below ``min_max_activation`` (default: 1% of the median, over non-dead features, of that largest
  max-activation). ``live``: the rest.
* **Token- vs concept-level (Def. 4.1, 4.2).** Among the feature's active top-k datapoints (value > 0), take the
  share of the most common token id. Fewer than ``min_active`` active datapoints -> ``"inactive"``; share
  ``>= token_share`` -> ``"token"`` (a token-level feature for that dominant token); else ``"concept"``.
* **Patterns (Sec. 4.2, Fig. 2)**, from the labels at checkpoints ``0..T-1`` (first to final):

  - ``"maintaining"``: token-level at every checkpoint with the same dominant token throughout;
  - ``"shifting"``: token-level at the first checkpoint and, at the final one, concept-level or token-level for
    a different dominant token;
  - ``"grouping"``: not token-level at the first checkpoint (noisy: concept-level or inactive) and token- or
    concept-level at the final one;
  - ``"other"``: anything else (inactive at the end; token-level at both ends for the same token but not
    throughout);
  - ``"interrupted"`` (:data:`INTERRUPTED_RULE`, overrides the others): active (token- or concept-level) at some
    checkpoint, inactive (or dead) at a later one and active again after it. Recurrent initialisation keeps an
    index, not a meaning: an index that died and came back was reused, so its labels before and after the gap are
    not one feature's evolution. An inactive stretch before the first active checkpoint is not an interruption
    (that is grouping from noise).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from saetrack.analysis import feature_scan as fs
from saetrack.analysis.feature_scan import FeatureStats
from saetrack.sae.weights import SAEWeights

__all__ = [
    "INTERRUPTED_RULE",
    "LABELS",
    "PATTERNS",
    "FeatureFilter",
    "FeatureStats",
    "active_features",
    "classify_patterns",
    "classify_token_concept",
    "feature_statistics",
    "filter_features",
    "interrupted_identities",
    "interruption_lengths",
    "pattern_counts",
    "pick_examples",
    "render_context",
    "top_k_datapoints",
]


LABELS: tuple[str, ...] = ("token", "concept", "inactive")
PATTERNS: tuple[str, ...] = ("maintaining", "shifting", "grouping", "other", "interrupted")
#: The rule of the "interrupted" pattern (:func:`interrupted_identities`), fixed before looking at any run.
INTERRUPTED_RULE = (
    "interrupted: active (token- or concept-level, i.e. at least min_active of its top-k datapoints active) at some "
    "checkpoint, inactive or dead (fewer than min_active active) at a later checkpoint, and active again after it; "
    "the index died and was reused. Counted apart from maintaining/shifting/grouping/other and never shown as an "
    "example of them; an inactive stretch before the first active checkpoint is not an interruption"
)


@dataclass(frozen=True)
class FeatureFilter:
    """Boolean masks ``[F]`` from App. A.1: exactly one of ``dead``, ``ultra_low``, ``live`` holds per feature."""

    dead: np.ndarray
    ultra_low: np.ndarray
    live: np.ndarray
    min_density: float
    min_max_activation: float

    def counts(self) -> dict[str, int]:
        """Number of dead, ultra-low and live features."""
        return {"dead": int(self.dead.sum()), "ultra_low": int(self.ultra_low.sum()), "live": int(self.live.sum())}


def feature_statistics(weights: SAEWeights, x: np.ndarray, batch_size: int = 8192) -> FeatureStats:
    """Density, max and mean of every feature's activation ``f_i(x)`` (Eq. 2) over the rows of ``x``.

    ``x`` (``[n, d_in]``, array, memmap or tensor) is streamed in batches of ``batch_size`` rows and reduced on the
    SAE's device (:mod:`saetrack.analysis.feature_scan`); nothing of size ``[n, F]`` is held. Density counts rows
    with ``f_i(x) > 0`` (App. A.1's activation density).
    """
    stats, _, _ = fs.scan_device(weights, x, 0, batch_size, stats=True, desc="feature statistics").to_host()
    assert stats is not None
    return stats


def filter_features(
    stats_per_step: Sequence[FeatureStats],
    min_density: float = 1e-4,
    min_max_activation: float | None = None,
    relative_max_activation: float = 0.01,
) -> FeatureFilter:
    """Dead / ultra-low / live features across checkpoints (App. A.1).

    ``dead``: max activation 0 at every checkpoint. ``ultra_low``: not dead, and ``max_t density_t < min_density``
    or ``max_t max_activation_t < min_max_activation``. ``min_max_activation=None`` (default) means
    ``relative_max_activation`` (1%) times the median of ``max_t max_activation_t`` over non-dead features, a
    threshold that follows the activation scale of the model. ``live``: the rest.
    """
    if len(stats_per_step) == 0:
        raise ValueError("stats_per_step is empty; pass the FeatureStats of at least one checkpoint.")
    if not 0.0 <= min_density <= 1.0:
        raise ValueError(f"min_density must be in [0, 1], got {min_density}.")
    if min_max_activation is not None and min_max_activation < 0:
        raise ValueError(f"min_max_activation must be >= 0 or None, got {min_max_activation}.")
    if not 0.0 <= relative_max_activation <= 1.0:
        raise ValueError(f"relative_max_activation must be in [0, 1], got {relative_max_activation}.")
    shapes = {s.density.shape for s in stats_per_step}
    if len(shapes) != 1:
        raise ValueError(f"all checkpoints must have the same number of features, got shapes {sorted(shapes)}.")
    density = np.max(np.stack([s.density for s in stats_per_step]), axis=0)
    max_act = np.max(np.stack([s.max_activation for s in stats_per_step]), axis=0)
    dead = max_act <= 0
    if min_max_activation is None:
        min_max_activation = float(relative_max_activation * np.median(max_act[~dead])) if (~dead).any() else 0.0
    ultra_low = ~dead & ((density < min_density) | (max_act < min_max_activation))
    return FeatureFilter(
        dead=dead,
        ultra_low=ultra_low,
        live=~dead & ~ultra_low,
        min_density=float(min_density),
        min_max_activation=float(min_max_activation),
    )


def active_features(weights: SAEWeights, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """Indices of the features that are not dead on ``x`` (App. A.1): active (``f_i > 0``) on at least one row.

    The single-checkpoint form of :func:`filter_features`' ``dead`` mask, used where features of one SAE are
    compared (chain link against an independent SAE, Fig. S5).
    """
    return np.nonzero(~filter_features([feature_statistics(weights, x, batch_size)]).dead)[0]


def top_k_datapoints(
    weights: SAEWeights,
    x: np.ndarray,
    k: int = 25,
    batch_size: int = 8192,
    features: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``x`` with the highest ``f_i(x)`` (Eq. 2) for each feature, sorted descending.

    Under the final SAE at the final checkpoint these are the datapoints ``D_i`` of Eq. 12 (the paper takes the
    top 25 activations of each feature as its faithful region).

    Returns ``(values [F', k] float32, indices [F', k] int64)`` with ``F'`` the features in ``features`` (all by
    default) and indices rows of ``x``. Streamed with a running top-k merge kept on the SAE's device (memory
    ``[F', k + batch_size]`` there; :mod:`saetrack.analysis.feature_scan`, which also gives the statistics of
    :func:`feature_statistics` from the same encoding), copied back once. When fewer than ``k`` rows activate a
    feature, the list is filled with inactive rows whose value is exactly 0; callers keep only entries with
    value > 0. ``k`` must not exceed the number of rows.
    """
    fs.check_rows(x, weights, batch_size)
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"k must be in [1, n_rows = {x.shape[0]}], got {k}.")
    n_features = weights.W_enc.shape[1]
    cols = np.arange(n_features) if features is None else np.asarray(features, dtype=np.int64).reshape(-1)
    if cols.size and (cols.min() < 0 or cols.max() >= n_features):
        raise ValueError(f"features must lie in [0, {n_features}), got range [{cols.min()}, {cols.max()}].")
    sub = weights
    if features is not None:
        keep = torch.as_tensor(cols, device=weights.W_enc.device)
        sub = SAEWeights(
            W_enc=weights.W_enc[:, keep],
            b_enc=weights.b_enc[keep],
            W_dec=weights.W_dec[keep],
            b_dec=weights.b_dec,
            apply_b_dec_to_input=weights.apply_b_dec_to_input,
        )
    _, values, indices = fs.scan_device(sub, x, k, batch_size, stats=False, desc="top-k datapoints").to_host()
    return values, indices


def classify_token_concept(
    values: np.ndarray,
    indices: np.ndarray,
    token_ids_flat: np.ndarray,
    token_share: float = 0.5,
    min_active: int = 5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token-level (Def. 4.1) or concept-level (Def. 4.2) label of each feature from its top-k datapoints.

    Among the active entries (``values > 0``) the share of the most common token id ``token_ids_flat[index]``
    decides: fewer than ``min_active`` active entries -> ``"inactive"``; share ``>= token_share`` -> ``"token"``;
    else ``"concept"``. Returns ``(labels [F] str, dominant_token [F] int64, share [F] float64)``; the dominant
    token is -1 and the share 0 when no entry is active (ties of the mode go to the smallest token id).
    """
    values = np.asarray(values)
    indices = np.asarray(indices)
    tokens = np.asarray(token_ids_flat).reshape(-1)
    if values.shape != indices.shape or values.ndim != 2:
        raise ValueError(f"values and indices must both be [F, k], got {values.shape} and {indices.shape}.")
    if not 0.0 < token_share <= 1.0:
        raise ValueError(f"token_share must be in (0, 1], got {token_share}.")
    if min_active < 1:
        raise ValueError(f"min_active must be >= 1, got {min_active}.")
    active = values > 0
    if active.any() and (indices[active].min() < 0 or indices[active].max() >= tokens.size):
        raise ValueError(f"indices of active datapoints must lie in [0, {tokens.size}) (len(token_ids_flat)).")
    # int64 before the fill values below: an int32 token array would wrap int64.max to -1 (NumPy 2 casting)
    toks = np.where(active, tokens[np.where(active, indices, 0)].astype(np.int64), -1)
    # counts[i, j]: active entries of feature i holding the token of entry j (0 for inactive entries)
    counts = ((toks[:, :, None] == toks[:, None, :]) & active[:, None, :]).sum(axis=2) * active
    n_active = active.sum(axis=1)
    best = counts.max(axis=1) if counts.size else np.zeros(values.shape[0], dtype=np.int64)
    ties = np.where((counts == best[:, None]) & active, toks, np.iinfo(np.int64).max)
    dominant = np.where(n_active > 0, ties.min(axis=1) if ties.size else -1, -1).astype(np.int64)
    share = np.where(n_active > 0, best / np.maximum(n_active, 1), 0.0).astype(np.float64)
    labels = np.full(values.shape[0], "inactive", dtype="<U8")
    enough = n_active >= min_active
    labels[enough] = np.where(share[enough] >= token_share, "token", "concept")
    return labels, dominant, share


def interruption_lengths(labels: np.ndarray) -> np.ndarray:
    """Number of ``"inactive"`` checkpoints strictly between each feature's first and last active (token- or
    concept-level) checkpoint (:data:`INTERRUPTED_RULE`); 0 for a feature never interrupted or never active.

    ``labels`` ``[T, F]`` (first to final checkpoint) from :func:`classify_token_concept`. Returns ``[F]`` int64.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[0] == 0:
        raise ValueError(f"labels must be [T >= 1, F], got shape {labels.shape}.")
    active = labels != "inactive"
    n_steps = labels.shape[0]
    position = np.arange(n_steps)[:, None]
    first = np.where(active.any(axis=0), np.argmax(active, axis=0), n_steps)
    last = np.where(active.any(axis=0), n_steps - 1 - np.argmax(active[::-1], axis=0), -1)
    gap = ~active & (position > first[None, :]) & (position < last[None, :])
    return gap.sum(axis=0).astype(np.int64)


def interrupted_identities(labels: np.ndarray) -> np.ndarray:
    """Which features had their index interrupted (:data:`INTERRUPTED_RULE`; Sec. 4.2's patterns assume none): an
    ``"inactive"`` checkpoint lies strictly between the first and the last active one
    (:func:`interruption_lengths` > 0). ``labels`` ``[T, F]``; returns ``[F]`` bool."""
    return interruption_lengths(labels) > 0


def classify_patterns(labels: np.ndarray, dominant: np.ndarray, interrupted: bool = True) -> np.ndarray:
    """Evolution pattern of each feature across checkpoints (Sec. 4.2, Fig. 2).

    ``labels`` / ``dominant`` are ``[T, F]`` (checkpoints first to final) from :func:`classify_token_concept`.
    ``"maintaining"``: token-level at every checkpoint, same dominant token throughout. ``"shifting"``:
    token-level at the first checkpoint; at the final one concept-level or token-level for another token.
    ``"grouping"``: not token-level at the first checkpoint; token- or concept-level at the final one.
    ``"other"``: the rest. With ``interrupted`` (default), a feature whose index was interrupted
    (:func:`interrupted_identities`) is ``"interrupted"`` whatever it would be otherwise. Returns ``[F]`` strings.
    """
    labels = np.asarray(labels)
    dominant = np.asarray(dominant)
    if labels.ndim != 2 or labels.shape != dominant.shape or labels.shape[0] == 0:
        raise ValueError(f"labels and dominant must both be [T >= 1, F], got {labels.shape} and {dominant.shape}.")
    unknown = set(np.unique(labels).tolist()) - set(LABELS)
    if unknown:
        raise ValueError(f"unknown labels {sorted(unknown)}; allowed: {LABELS}.")
    token = labels == "token"
    first_tok, last_tok = token[0], token[-1]
    same_token = (dominant == dominant[0]).all(axis=0)
    maintaining = token.all(axis=0) & same_token
    last_concept = labels[-1] == "concept"
    shifting = ~maintaining & first_tok & (last_concept | (last_tok & (dominant[-1] != dominant[0])))
    grouping = ~first_tok & (last_tok | last_concept)
    out = np.full(labels.shape[1], "other", dtype="<U11")
    out[grouping] = "grouping"
    out[shifting] = "shifting"
    out[maintaining] = "maintaining"
    if interrupted:
        out[interrupted_identities(labels)] = "interrupted"
    return out


def pattern_counts(patterns: np.ndarray) -> dict[str, int]:
    """Number of features per pattern, every pattern of :data:`PATTERNS` present (zero if none)."""
    patterns = np.asarray(patterns)
    return {p: int((patterns == p).sum()) for p in PATTERNS}


def pick_examples(
    patterns: np.ndarray, scores: np.ndarray, n_per_pattern: int = 1, seed: int = 0
) -> dict[str, list[int]]:
    """Example feature indices per pattern for the Fig. 2 table: highest ``scores`` first.

    Ties (and NaN scores, ranked last) are broken by a permutation drawn from ``numpy.random.default_rng(seed)``,
    so the choice is reproducible. Every pattern of :data:`PATTERNS` is a key (empty list if it has no feature).
    """
    patterns = np.asarray(patterns)
    scores = np.asarray(scores, dtype=np.float64)
    if patterns.shape != scores.shape or patterns.ndim != 1:
        raise ValueError(f"patterns and scores must both be [F], got {patterns.shape} and {scores.shape}.")
    if n_per_pattern < 0:
        raise ValueError(f"n_per_pattern must be >= 0, got {n_per_pattern}.")
    tiebreak = np.random.default_rng(seed).permutation(scores.size)
    key = np.where(np.isnan(scores), -np.inf, scores)
    order = np.lexsort((tiebreak, -key))
    return {p: [int(i) for i in order[patterns[order] == p][:n_per_pattern]] for p in PATTERNS}


def _split_decoded(tokenizer: Any, before: list[int], tok: int, after: list[int]) -> tuple[str, str, str]:
    full = tokenizer.decode([*before, tok, *after])
    pre = tokenizer.decode(before) if before else ""
    upto = tokenizer.decode([*before, tok])
    if full.startswith(upto) and upto.startswith(pre):
        return pre, upto[len(pre) :], full[len(upto) :]
    return pre, tokenizer.decode([tok]), (" " + tokenizer.decode(after)) if after else ""


def render_context(tokenizer: Any, analysis_tokens: np.ndarray, flat_index: int, window: int = 8) -> tuple[str, str]:
    """Plain-text and HTML context of one top-k datapoint (the contexts of Fig. 2).

    ``flat_index = c * ctx + q`` (the row layout of the analysis cache). Shows the ``window`` tokens before and the
    2 tokens after token ``q`` of context ``c``, the activating token wrapped as ``«tok»`` (plain) or
    ``<mark>tok</mark>`` (HTML, all text escaped); whitespace the tokenizer puts before the token stays outside
    the marker.
    """
    tokens = np.asarray(analysis_tokens)
    if tokens.ndim != 2:
        raise ValueError(f"analysis_tokens must be [n_ctx, ctx], got shape {tokens.shape}.")
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}.")
    n_ctx, ctx = tokens.shape
    if not 0 <= flat_index < n_ctx * ctx:
        raise ValueError(f"flat_index must lie in [0, {n_ctx * ctx}), got {flat_index}.")
    c, q = divmod(int(flat_index), ctx)
    row = [int(t) for t in tokens[c]]
    pre, tok, post = _split_decoded(tokenizer, row[max(0, q - window) : q], row[q], row[q + 1 : q + 3])
    stripped = tok.lstrip()
    lead = tok[: len(tok) - len(stripped)]
    plain = f"{pre}{lead}«{stripped}»{post}"
    marked = f"{html.escape(pre)}{html.escape(lead)}<mark>{html.escape(stripped)}</mark>{html.escape(post)}"
    return plain, marked
