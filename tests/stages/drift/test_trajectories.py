"""Fig. 7's trajectory features, projections and their random-walk null, on known answers."""

from __future__ import annotations

import numpy as np
import pytest

from saetrack.stages.drift.trajectories import (
    NULL_WALKS,
    TRAJECTORY_PATTERNS,
    trajectory_arrays,
    trajectory_features,
    trajectory_numbers,
)


def test_features_are_drawn_per_pattern_among_formed_ones_never_interrupted() -> None:
    patterns = np.array(["maintaining", "shifting", "grouping", "interrupted", "other", "shifting", "grouping"])
    live = np.arange(7)
    times = np.array([0, 3, 0, 2, 1, -1, 5])  # feature 5 never formed
    chosen, kinds = trajectory_features(patterns, live, times, per_pattern=2, seed=0)
    assert "interrupted" not in TRAJECTORY_PATTERNS and 3 not in chosen and 4 not in chosen and 5 not in chosen
    assert sorted(zip(kinds, chosen, strict=True)) == [("grouping", 6), ("maintaining", 0), ("shifting", 1)]
    assert trajectory_features(patterns, live, times, 2, 0) == (chosen, kinds)  # seeded


def _arc(n: int, d: int = 16) -> np.ndarray:
    angles = np.linspace(0, 1.2, n)
    return np.stack([np.cos(angles), np.sin(angles), *np.zeros((d - 2, n))], axis=1)


def test_arrays_hold_projection_null_and_step_sizes_before_and_after_formation() -> None:
    n, d = 12, 16
    decoders = np.zeros((n, 3, d))
    decoders[:, 0] = _arc(n, d)  # a directed path
    rng = np.random.default_rng(0)
    decoders[:, 1] = np.eye(d)[0] + np.cumsum(0.1 * rng.standard_normal((n, d)), axis=0)
    decoders[:, 2] = _arc(n, d) * np.linspace(1, 3, n)[:, None]  # scale does not matter
    out = trajectory_arrays(decoders, [4, 0, -1], seed=1)
    assert out["trajectory_coords"].shape == (3, n, 2) and out["null_variance"].shape == (3, NULL_WALKS, 2)
    assert out["trajectory_straightness"][0] > np.quantile(out["null_straightness"][0], 0.95)
    np.testing.assert_allclose(out["trajectory_straightness"][0], out["trajectory_straightness"][2])
    step = 2 * np.sin(1.2 / (n - 1) / 2)  # the arc's constant chord
    np.testing.assert_allclose([out["step_before"][0], out["step_after"][0]], [step, step])
    assert np.isnan(out["step_before"][1]) and not np.isnan(out["step_after"][1])  # formed at the first checkpoint
    assert np.isnan(out["step_before"][2]) and np.isnan(out["step_after"][2])  # never formed
    numbers = trajectory_numbers(out)
    assert numbers["trajectories"] == 3 and numbers["null_walks"] == NULL_WALKS and numbers["with_both_sides"] == 1
    assert 0 <= numbers["share_straightness_beyond_null_q95"] <= 1 and numbers["median_step_before_formation"] > 0
    assert trajectory_numbers(trajectory_arrays(decoders[:, :0], [], seed=0)) == {"trajectories": 0}
    with pytest.raises(ValueError, match=r"\[T, n=2, d\]"):
        trajectory_arrays(decoders, [4, 0], seed=1)  # one formation time per row
