"""The random-walk null of feature trajectories (Def. 6.1, Fig. 7): what a trajectory with the same step sizes but
no direction to its steps looks like.

PCA of any random walk puts most of its variance on a first component whose projection is a horseshoe (about 61% on
PC1 and 15% on PC2 for Brownian motion), so the shape of Fig. 7 says nothing by itself. :func:`random_walk_null`
keeps a trajectory's start and its step lengths and walks on the unit sphere (where directions live) in uniformly
random tangent directions; the real
trajectory's PCA shares and its straightness (end-to-end distance over path length: 1 for a straight path, about
``1 / sqrt(T - 1)`` for a random walk) are then read against the null's.
"""

from __future__ import annotations

import numpy as np

from saetrack.analysis.drift import trajectory_projection

__all__ = [
    "random_walk_null",
    "step_sizes",
    "straightness",
    "unit_directions",
]


def unit_directions(vectors: np.ndarray) -> np.ndarray:
    """A feature's decoder vectors ``[T, d]`` scaled to unit length (its direction, Sec. 6.1); zero rows stay zero."""
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] < 2:
        raise ValueError(f"vectors must be [T >= 2, d], got shape {v.shape}.")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)


def step_sizes(vectors: np.ndarray) -> np.ndarray:
    """The length of each step ``|u_{t+1} - u_t|`` of a feature's unit direction between checkpoints, ``[T - 1]``."""
    return np.linalg.norm(np.diff(unit_directions(vectors), axis=0), axis=1)


def straightness(vectors: np.ndarray) -> float:
    """End-to-end distance over path length of a feature's unit-direction trajectory (1: a straight path; NaN when
    the direction never moves)."""
    unit = unit_directions(vectors)
    path = float(step_sizes(vectors).sum())
    return float(np.linalg.norm(unit[-1] - unit[0]) / path) if path > 0 else float("nan")


def random_walk_null(vectors: np.ndarray, n_walks: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA shares and straightness of ``n_walks`` random walks with the trajectory's start and step lengths.

    Each walk starts at the feature's first unit direction and moves on the unit sphere by the same chord lengths as
    the real trajectory (:func:`step_sizes`), each step along a tangent direction drawn uniformly at random
    (``numpy.random.default_rng(seed)``); its points are projected like Fig. 7's
    (:func:`~saetrack.analysis.drift.trajectory_projection`). Returns the explained-variance shares of PC1 and PC2,
    ``[n_walks, 2]``, and each walk's straightness, ``[n_walks]``.
    """
    if n_walks < 1:
        raise ValueError(f"n_walks must be >= 1, got {n_walks}.")
    unit = unit_directions(vectors)
    sizes = step_sizes(vectors)
    angles = 2 * np.arcsin(np.clip(sizes / 2, 0.0, 1.0))  # the geodesic angle of each chord
    rng = np.random.default_rng(seed)
    shares, straight = np.zeros((n_walks, 2)), np.full(n_walks, np.nan)
    path = float(sizes.sum())
    for w in range(n_walks):
        walk = np.zeros((sizes.size + 1, unit.shape[1]))
        walk[0] = unit[0]
        for t, angle in enumerate(angles):
            r = rng.standard_normal(unit.shape[1])
            tangent = r - (r @ walk[t]) * walk[t]
            tangent /= np.linalg.norm(tangent)
            walk[t + 1] = np.cos(angle) * walk[t] + np.sin(angle) * tangent
        shares[w] = trajectory_projection(walk)[1]
        if path > 0:
            straight[w] = np.linalg.norm(walk[-1] - walk[0]) / path
    return shares, straight
