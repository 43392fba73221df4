"""The anchor-swap control of the progress measure (Def. 5.4, Eq. 12-16): is the rise of Fig. 5 a selection effect?

The paper's D_i (Eq. 12) are feature i's top-k datapoints under the final SAE at the final checkpoint: chosen where
they are most alike, so their within-set similarity (Eq. 15) is highest there by construction and may only seem to
"form" as t approaches the final checkpoint. The control repeats the measurement with the sets chosen at other
anchors a (first, middle and final checkpoint; :func:`anchor_positions`): D_i^a = the active top-k datapoints of
feature i under SAE[a] at checkpoint a, for every live feature active (token- or concept-level) at a, typed by its
label at a (Def. 4.1-4.2); their activation-space within-set cosine S_i^a(t) (Eq. 15) at every checkpoint t.

Reading: if coherence peaks at whatever anchor is chosen and falls away from it on both sides, the rise toward the
final checkpoint is a selection effect; the paper's formation claim predicts coherence rising toward the end from
every anchor. This module reports the numbers (:func:`anchor_summary`); the verdict is computed elsewhere by a
fixed rule.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from saetrack.analysis.formation import activation_sets
from saetrack.analysis.progress import masked_mean_cosine, normalised_progress

__all__ = [
    "ANCHOR_NAMES",
    "ANCHOR_RULE",
    "AnchorSet",
    "anchor_positions",
    "anchor_sets",
    "anchor_summary",
    "anchor_within",
    "median_curve",
]


ANCHOR_NAMES: tuple[str, ...] = ("first", "middle", "final")
ANCHOR_RULE = (
    "anchors: the first checkpoint, the middle one (index (T - 1) // 2) and the final one. For each anchor a and every "
    "live feature token- or concept-level at a: D_i^a = its top-k datapoints under SAE[a] on checkpoint a's analysis "
    "set, active ones only (activation > 0); S_i^a(t) = mean pairwise cosine of their activations at checkpoint t "
    "(Eq. 15), at every t; features typed by their label at a; values are medians over the features of a type. "
    "Selection effect: coherence peaks at whichever anchor and falls away on both sides; formation: it rises toward "
    "the final checkpoint from every anchor. normalised = (median S - B) / (1 - B), B the random baseline (Eq. 16)"
)
_TYPES: tuple[str, ...] = ("token", "concept")


def anchor_positions(n_steps: int) -> dict[str, int]:
    """Checkpoint index of each anchor of :data:`ANCHOR_NAMES`: 0, ``(n_steps - 1) // 2`` and ``n_steps - 1``."""
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    return {"first": 0, "middle": (n_steps - 1) // 2, "final": n_steps - 1}


@dataclass(frozen=True)
class AnchorSet:
    """The datapoint sets D_i^a of one anchor: one row per live feature active at the anchor (n of them)."""

    name: str
    position: int  # checkpoint index of the anchor
    features: np.ndarray  # [n] feature indices
    types: np.ndarray  # [n] label at the anchor: "token" / "concept"
    indices: np.ndarray  # [n, k] analysis rows of the top-k datapoints at the anchor
    active: np.ndarray  # [n, k] bool, the datapoint is active (activation > 0) at the anchor


def anchor_sets(
    labels: np.ndarray, top_values: np.ndarray, top_indices: np.ndarray, live: np.ndarray
) -> list[AnchorSet]:
    """D_i^a for each anchor of :func:`anchor_positions`, from every link's top-k datapoints (the formation stage's
    first pass): ``labels`` ``[T, F]`` (Def. 4.1-4.2), ``top_values`` / ``top_indices`` ``[T, F, k]`` (under SAE[t]
    on checkpoint t's analysis set), ``live`` the live features' indices (App. A.1). Keeps the live features that
    are token- or concept-level at the anchor."""
    labels, values, indices = np.asarray(labels), np.asarray(top_values), np.asarray(top_indices)
    if labels.ndim != 2 or values.shape != indices.shape or values.shape[:2] != labels.shape:
        raise ValueError(f"labels must be [T, F], top values/indices [T, F, k]; got {labels.shape}, {values.shape}")
    live = np.asarray(live, dtype=np.int64)
    out = []
    for name, position in anchor_positions(labels.shape[0]).items():
        features = live[np.isin(labels[position, live], _TYPES)]
        out.append(
            AnchorSet(
                name=name,
                position=position,
                features=features,
                types=labels[position, features].astype(str),
                indices=indices[position, features].astype(np.int64),
                active=values[position, features] > 0,
            )
        )
    return out


def anchor_within(x: np.ndarray, sets: Sequence[AnchorSet], feature_chunk: int = 256) -> dict[str, np.ndarray]:
    """S_i^a(t): the activation-space within-set cosine (Eq. 15) of every anchor's sets on one checkpoint's analysis
    activations ``x`` ``[N, d]`` (array or memmap), over the active members of each D_i^a
    (:func:`saetrack.analysis.progress.masked_mean_cosine`). ``feature_chunk`` sets are gathered at once.
    Returns ``{anchor name: [n] float64}``."""
    out = {}
    for anchor in sets:
        parts = []
        for start in range(0, len(anchor.features), feature_chunk):
            part = slice(start, start + feature_chunk)
            parts.append(masked_mean_cosine(activation_sets([x], anchor.indices[part])[0], anchor.active[part]))
        out[anchor.name] = np.concatenate(parts) if parts else np.zeros(0)
    return out


def median_curve(values: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Median over the columns ``members`` of ``values`` ``[T, n]`` per row, NaN left out; NaN where no member has a
    finite value (the medians of Fig. 5 and of the anchor control)."""
    values = np.asarray(values, dtype=np.float64)
    members = np.asarray(members, dtype=bool)
    if not members.any():
        return np.full(values.shape[0], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows give NaN, as documented
        return np.nanmedian(values[:, members], axis=1)


def _value(curve: np.ndarray, t: int) -> float | None:
    """``curve[t]`` as a float, ``None`` when NaN."""
    return float(curve[t]) if np.isfinite(curve[t]) else None


def _curve_numbers(curve: np.ndarray, position: int) -> dict[str, Any]:
    """A median curve at the first checkpoint, the anchor and the final checkpoint, and the whole curve."""
    return {
        "first": _value(curve, 0),
        "anchor": _value(curve, position),
        "final": _value(curve, len(curve) - 1),
        "curve": [_value(curve, t) for t in range(len(curve))],
    }


def anchor_summary(
    steps: Sequence[int],
    within: Mapping[str, np.ndarray],
    types: Mapping[str, np.ndarray],
    baseline: np.ndarray,
) -> dict[str, Any]:
    """The anchor control's numbers (results.json ``formation.anchor_control``).

    ``within[name]`` ``[T, n]`` is S_i^a(t) of that anchor's features (:func:`anchor_within` at every checkpoint),
    ``types[name]`` ``[n]`` their labels at the anchor, ``baseline`` ``[T]`` the activation-space random baseline
    (Eq. 16). Per anchor and type: the number of features, the median S at the first checkpoint, at the anchor and
    at the final checkpoint, the median curve, and the same four for the normalised median
    (median S - B) / (1 - B). ``None`` where a type has no feature.
    """
    base = np.asarray(baseline, dtype=np.float64)
    positions = anchor_positions(len(steps))
    anchors: dict[str, Any] = {}
    for name, position in positions.items():
        if name not in within:
            continue
        values = np.asarray(within[name], dtype=np.float64).reshape(len(steps), -1)
        row: dict[str, Any] = {"index": int(position), "step": int(steps[position])}
        for kind in _TYPES:
            members = np.asarray(types[name]) == kind
            curve = median_curve(values, members)
            normalised = normalised_progress(curve[:, None], base)[:, 0]
            row[kind] = {"n": int(members.sum()), **_curve_numbers(curve, position),
                         "normalised": _curve_numbers(normalised, position)}  # fmt: skip
        anchors[name] = row
    return {"rule": ANCHOR_RULE, "anchors": anchors, "baseline": [_value(base, t) for t in range(len(base))]}
