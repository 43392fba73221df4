"""The random-walk null of feature trajectories (Def. 6.1, Fig. 7) on known answers."""

from __future__ import annotations

import numpy as np
import pytest

from saetrack.analysis import random_walk as rw
from saetrack.analysis.drift import trajectory_projection


def _arc(n: int, angle: float, d: int = 64) -> np.ndarray:
    """A great-circle arc of ``n`` points through ``angle`` radians, in ``d`` dimensions."""
    e0, e1 = np.eye(d)[0], np.eye(d)[1]
    return np.array([np.cos(a) * e0 + np.sin(a) * e1 for a in np.linspace(0.0, angle, n)])


def test_step_sizes_and_straightness_of_an_arc() -> None:
    arc = _arc(11, 1.0) * 3.0  # the scale of a decoder vector does not matter, only its direction
    sizes = rw.step_sizes(arc)
    np.testing.assert_allclose(sizes, 2 * np.sin(0.05), rtol=1e-12)  # chord of 0.1 rad
    assert rw.straightness(arc) == pytest.approx(2 * np.sin(0.5) / (10 * 2 * np.sin(0.05)))
    assert np.isnan(rw.straightness(np.ones((5, 4))))  # a direction that never moves
    with pytest.raises(ValueError, match=r"\[T >= 2, d\]"):
        rw.unit_directions(np.ones(4))


def test_null_walks_keep_start_and_step_sizes_and_look_like_brownian_motion() -> None:
    rng = np.random.default_rng(0)
    steps = 0.2 * rng.standard_normal((27, 128)) / np.sqrt(128)
    trajectory = np.vstack([np.eye(128)[0], np.eye(128)[0] + np.cumsum(steps, axis=0)])
    shares, straight = rw.random_walk_null(trajectory, 300, seed=1)
    assert shares.shape == (300, 2) and straight.shape == (300,)
    # PCA of a random walk: about 61% on PC1, 15% on PC2; straightness about 1 / sqrt(27)
    assert shares[:, 0].mean() == pytest.approx(0.61, abs=0.05) and shares[:, 1].mean() == pytest.approx(0.15, abs=0.03)
    assert np.median(straight) == pytest.approx(1 / np.sqrt(27), rel=0.35)
    np.testing.assert_array_equal(shares, rw.random_walk_null(trajectory, 300, seed=1)[0])  # seeded


def test_a_directed_trajectory_lies_outside_its_null_and_a_random_one_inside() -> None:
    arc = _arc(28, 1.2)
    shares, straight = rw.random_walk_null(arc, 200, seed=2)
    real_shares = trajectory_projection(arc)[1]
    assert real_shares[0] > np.quantile(shares[:, 0], 0.95)
    assert rw.straightness(arc) > np.quantile(straight, 0.95)
    # a random walk itself is inside its own null
    walk_rng = np.random.default_rng(3)
    walk = np.eye(64)[0] + np.cumsum(0.05 * walk_rng.standard_normal((28, 64)) / 8, axis=0)
    _, null_straight = rw.random_walk_null(walk, 200, seed=4)
    assert np.quantile(null_straight, 0.02) < rw.straightness(walk) < np.quantile(null_straight, 0.98)
    with pytest.raises(ValueError, match="n_walks"):
        rw.random_walk_null(arc, 0, seed=0)
