"""Evolution sub-patterns, the rule-based choice of Fig. 2's examples and the pattern rule's sensitivity (Sec. 4.2).

:func:`saetrack.analysis.features.classify_patterns` gives the paper's three patterns (and "other"). Here each is
split by its labels at the first and final checkpoints, so a reader sees what a count is made of
(:data:`SUB_PATTERNS`):

* ``maintaining: token->same token`` — the whole of "maintaining" (token-level throughout, one token);
* ``shifting: token->token`` (another dominant token at the end) and ``shifting: token->concept``;
* ``grouping: inactive->token``, ``grouping: inactive->concept``, ``grouping: concept->token``,
  ``grouping: concept->concept`` — not token-level at the first checkpoint: inactive, or its top-k datapoints
  spread over several tokens (at initialisation: noise), coherent at the end;
* ``other: token->same token, not throughout`` (token-level for one token at both ends, not at every checkpoint or
  with another token in between) and ``other: ->inactive`` (inactive at the final checkpoint);
* ``interrupted: active->inactive->active`` — the whole of "interrupted"
  (:data:`saetrack.analysis.features.INTERRUPTED_RULE`): the index died at an intermediate checkpoint and was
  reused, so it belongs to none of the above and is never one of Fig. 2's examples.

Fig. 2 shows one row per category of :data:`FIG2_RULES`, each the clearest instance by the score stated there
(:func:`pick_fig2_examples`). :func:`pattern_sensitivity` recounts patterns with other token-share thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from saetrack.analysis.features import classify_patterns, classify_token_concept, pattern_counts

__all__ = [
    "FIG2_RULES",
    "SENSITIVITY_THRESHOLDS",
    "SUB_PATTERNS",
    "pattern_sensitivity",
    "pick_fig2_examples",
    "sub_pattern_counts",
    "sub_patterns",
]


SUB_PATTERNS: tuple[str, ...] = (
    "maintaining: token->same token",
    "shifting: token->token",
    "shifting: token->concept",
    "grouping: inactive->token",
    "grouping: inactive->concept",
    "grouping: concept->token",
    "grouping: concept->concept",
    "other: token->same token, not throughout",
    "other: ->inactive",
    "interrupted: active->inactive->active",
)

#: Fig. 2's rows: category -> (sub-patterns it draws from, the rule that picks its clearest instance).
FIG2_RULES: dict[str, tuple[tuple[str, ...], str]] = {
    "maintaining": (
        ("maintaining: token->same token",),
        "token-level for one token at every checkpoint; clearest = highest minimum over checkpoints of that "
        "token's share of the top-k, ties: highest final progress measure",
    ),
    "shifting token->token": (
        ("shifting: token->token",),
        "token-level at the first checkpoint, token-level for another token at the final one; clearest = highest "
        "min(first share, final share), ties: highest final progress measure",
    ),
    "shifting token->concept": (
        ("shifting: token->concept",),
        "token-level at the first checkpoint, concept-level at the final one; clearest = highest first-checkpoint "
        "share, ties: highest final progress measure",
    ),
    "grouping noise->coherent": (
        tuple(s for s in SUB_PATTERNS if s.startswith("grouping")),
        "inactive or concept-level (spread over tokens) at the first checkpoint, token- or concept-level at the "
        "final one; clearest = largest rise of the progress measure M_i from the first to the final checkpoint",
    ),
}

#: Token-share thresholds of the sensitivity report (the run's own threshold is one of them by default: 0.5).
SENSITIVITY_THRESHOLDS: tuple[float, ...] = (0.4, 0.5, 0.6)


def sub_patterns(labels: np.ndarray, dominant: np.ndarray) -> np.ndarray:
    """Sub-pattern (:data:`SUB_PATTERNS`) of each feature from its labels ``[T, F]`` and dominant tokens (Sec. 4.2).

    Refines :func:`~saetrack.analysis.features.classify_patterns` by the labels at the first and final checkpoints;
    every feature gets exactly one sub-pattern (an interrupted identity gets ``interrupted: active->inactive->active``
    whatever its first and final labels). Returns ``[F]`` strings.
    """
    patterns = classify_patterns(labels, dominant)
    labels = np.asarray(labels)
    first, last = labels[0], labels[-1]
    out = np.full(patterns.shape, "other: ->inactive", dtype="<U48")
    out[patterns == "maintaining"] = "maintaining: token->same token"
    shifting = patterns == "shifting"
    out[shifting & (last == "token")] = "shifting: token->token"
    out[shifting & (last == "concept")] = "shifting: token->concept"
    grouping = patterns == "grouping"
    for start in ("inactive", "concept"):
        for end in ("token", "concept"):
            out[grouping & (first == start) & (last == end)] = f"grouping: {start}->{end}"
    out[(patterns == "other") & (last != "inactive")] = "other: token->same token, not throughout"
    out[patterns == "interrupted"] = "interrupted: active->inactive->active"
    return out


def sub_pattern_counts(subs: np.ndarray) -> dict[str, int]:
    """Number of features per sub-pattern, every one of :data:`SUB_PATTERNS` present (zero if none)."""
    subs = np.asarray(subs)
    return {s: int((subs == s).sum()) for s in SUB_PATTERNS}


def _ranked(pool: np.ndarray, primary: np.ndarray, secondary: np.ndarray, n: int, seed: int) -> list[int]:
    """The ``n`` members of ``pool`` with the highest ``(primary, secondary)``; NaN last, ties by a seeded order."""
    tiebreak = np.random.default_rng(seed).permutation(primary.size)
    first = np.where(np.isnan(primary), -np.inf, primary)
    second = np.where(np.isnan(secondary), -np.inf, secondary)
    order = np.lexsort((tiebreak, -second, -first))
    return [int(j) for j in order if pool[j]][:n]


def pick_fig2_examples(
    subs: np.ndarray, share: np.ndarray, progress: np.ndarray, n_per_category: int = 1, seed: int = 0
) -> list[dict[str, Any]]:
    """Fig. 2's examples, picked by rule: the clearest ``n_per_category`` features of each category of
    :data:`FIG2_RULES` (maintaining, shifting token->token, shifting token->concept, grouping noise->coherent).

    ``subs`` ``[L]`` sub-patterns, ``share`` ``[T, L]`` dominant-token share of the top-k at every checkpoint,
    ``progress`` ``[T, L]`` the activation-space progress measure M_i(t) (Def. 5.4). Scores (higher is clearer):
    maintaining: min over t of share; token->token: min(share[0], share[-1]); token->concept: share[0] — each with
    the final M_i as tie-break; grouping: M_i(final) - M_i(first). Remaining ties go to a permutation seeded with
    ``seed``. Returns ``[{category, index (into L), score, rule}]`` in category order; a category without a
    feature is left out.
    """
    subs = np.asarray(subs)
    share = np.asarray(share, dtype=np.float64)
    progress = np.asarray(progress, dtype=np.float64)
    if share.shape != progress.shape or share.ndim != 2 or share.shape[1] != subs.shape[0]:
        raise ValueError(f"share and progress must be [T, L={subs.shape[0]}], got {share.shape}, {progress.shape}.")
    if n_per_category < 0:
        raise ValueError(f"n_per_category must be >= 0, got {n_per_category}.")
    final = progress[-1]
    scores = {
        "maintaining": (share.min(axis=0), final),
        "shifting token->token": (np.minimum(share[0], share[-1]), final),
        "shifting token->concept": (share[0], final),
        "grouping noise->coherent": (progress[-1] - progress[0], np.zeros_like(final)),
    }
    picks = []
    for category, (members, rule) in FIG2_RULES.items():
        primary, secondary = scores[category]
        for j in _ranked(np.isin(subs, members), primary, secondary, n_per_category, seed):
            picks.append({"category": category, "index": j, "score": float(primary[j]), "rule": rule})
    return picks


def pattern_sensitivity(
    top_values: np.ndarray,
    top_indices: np.ndarray,
    token_ids_flat: np.ndarray,
    live: np.ndarray,
    thresholds: Sequence[float] = SENSITIVITY_THRESHOLDS,
    min_active: int = 5,
) -> dict[str, dict[str, dict[str, int]]]:
    """Pattern and sub-pattern counts of the ``live`` features when labels (Def. 4.1-4.2) use each token-share
    threshold in ``thresholds`` (Sec. 4.2's sensitivity to the token-level rule).

    ``top_values`` / ``top_indices`` ``[T, F, k]`` are every link's top-k datapoints; labels are recomputed from them
    at each threshold. Returns ``{str(threshold): {"patterns": {...}, "sub_patterns": {...}}}``: every pattern
    (``"interrupted"`` included) and every sub-pattern of :data:`SUB_PATTERNS`, so that the stability of each
    sub-pattern, not only of the patterns' totals, can be read across thresholds.
    """
    values, indices = np.asarray(top_values), np.asarray(top_indices)
    if values.ndim != 3 or values.shape != indices.shape:
        raise ValueError(f"top_values and top_indices must both be [T, F, k], got {values.shape}, {indices.shape}.")
    live = np.asarray(live)
    out: dict[str, dict[str, dict[str, int]]] = {}
    for threshold in thresholds:
        per_step = [
            classify_token_concept(values[t][live], indices[t][live], token_ids_flat, threshold, min_active)
            for t in range(values.shape[0])
        ]
        labels = np.stack([p[0] for p in per_step])
        dominant = np.stack([p[1] for p in per_step])
        out[f"{threshold:g}"] = {
            "patterns": pattern_counts(classify_patterns(labels, dominant)),
            "sub_patterns": sub_pattern_counts(sub_patterns(labels, dominant)),
        }
    return out
