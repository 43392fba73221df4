"""Feature evolution as Ge et al. (2025) measure it with a cross-snapshot crosscoder: decoder norms and directions.

With a crosscoder over ``T`` snapshots (:mod:`saetrack.crosscoder.model`), feature ``i``'s decoder norm at snapshot
``θ``, ``||W_dec,i^θ||``, measures its presence there (the sparsity penalty shrinks it where the feature is absent):

* **decoder-norm matrix** ``[F, T]`` (:func:`decoder_norm_matrix`), each row divided by its maximum for the heatmap;
* **emergence** (:func:`emergence_index`): the first snapshot where the norm reaches ``fraction`` of its maximum;
* **initialisation features that decay** (:func:`decaying_initial_features`): emerged at the first snapshot, and
  at the last snapshot below ``decay_fraction`` of their maximum;
* **directions** (:func:`cosine_to_final`): the cosine of each feature's decoder direction at every snapshot with
  its direction at the last snapshot, where the feature is present; and :func:`adjacent_cosine` between
  consecutive snapshots, whose population minimum is the **directional turning point** (the paper: nearly all
  features turn at once, around Pythia step 1000, to nearly orthogonal directions).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "adjacent_cosine",
    "cosine_to_final",
    "decaying_initial_features",
    "decoder_norm_matrix",
    "emergence_index",
    "present_mask",
    "turning_point",
]


def decoder_norm_matrix(w_dec: np.ndarray) -> np.ndarray:
    """``||W_dec,i^θ||`` of a crosscoder decoder ``[F, T, d]``: the ``[F, T]`` decoder-norm matrix of Ge et al."""
    w = np.asarray(w_dec, dtype=np.float64)
    if w.ndim != 3:
        raise ValueError(f"the crosscoder decoder has shape {w.shape}, expected [features, snapshots, d_model].")
    return np.linalg.norm(w, axis=-1)


def present_mask(norms: np.ndarray, fraction: float) -> np.ndarray:
    """Where each feature is present, ``[F, T]``: its norm is at least ``fraction`` of its maximum (and positive)."""
    peak = norms.max(axis=1, keepdims=True)
    return (norms >= fraction * peak) & (peak > 0)


def emergence_index(norms: np.ndarray, fraction: float, alive: np.ndarray | None = None) -> np.ndarray:
    """Emergence snapshot of every feature, ``[F]``: the first ``θ`` with ``||W_dec,i^θ|| >= fraction * max_θ``.

    ``-1`` for features not ``alive`` (a boolean ``[F]``, e.g. never active on held-out tokens) or with zero norm.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"emergence fraction {fraction} must lie in (0, 1].")
    present = present_mask(norms, fraction)
    first = np.where(present.any(axis=1), present.argmax(axis=1), -1)
    if alive is not None:
        first = np.where(np.asarray(alive, dtype=bool), first, -1)
    return first.astype(np.int64)


def decaying_initial_features(norms: np.ndarray, emergence: np.ndarray, decay_fraction: float) -> np.ndarray:
    """Initialisation features that decay, boolean ``[F]``: emerged at snapshot 0, and at the last snapshot a norm
    below ``decay_fraction`` of the feature's maximum."""
    peak = norms.max(axis=1)
    return (emergence == 0) & (norms[:, -1] < decay_fraction * peak)


def _unit(w_dec: np.ndarray) -> np.ndarray:
    w = np.asarray(w_dec, dtype=np.float64)
    return w / np.maximum(np.linalg.norm(w, axis=-1, keepdims=True), 1e-12)


def cosine_to_final(w_dec: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
    """Cosine of each feature's decoder direction at every snapshot with its last one, ``[F, T]`` (Ge et al.'s
    directional analysis); ``NaN`` where ``present`` (``[F, T]``) says the feature is absent."""
    unit = _unit(w_dec)
    cos = np.einsum("ftd,fd->ft", unit, unit[:, -1])
    return np.where(present, cos, np.nan) if present is not None else cos


def adjacent_cosine(w_dec: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
    """Cosine of each feature's decoder direction between consecutive snapshots ``θ-1, θ``, ``[F, T-1]``; ``NaN``
    unless the feature is present at both."""
    unit = _unit(w_dec)
    cos = np.einsum("ftd,ftd->ft", unit[:, 1:], unit[:, :-1])
    if present is None:
        return cos
    both = present[:, 1:] & present[:, :-1]
    return np.where(both, cos, np.nan)


def turning_point(adjacent: np.ndarray) -> tuple[int, np.ndarray]:
    """The directional turning point: the snapshot ``θ`` (``>= 1``) whose step ``θ-1 -> θ`` has the lowest median
    adjacent cosine over features, and the median curve ``[T-1]`` (``NaN`` where no feature is present at both)."""
    with np.errstate(all="ignore"):
        counts = np.isfinite(adjacent).sum(axis=0)
        median = np.full(adjacent.shape[1], np.nan)
        for j in np.flatnonzero(counts):
            median[j] = np.nanmedian(adjacent[:, j])
    if not np.isfinite(median).any():
        raise ValueError("no feature is present at two consecutive snapshots; there is no turning point.")
    return int(np.nanargmin(median)) + 1, median
