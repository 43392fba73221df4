"""The density study's fixed rules on known answers: checkpoints, convergence, persistence, null, recommendation."""

from __future__ import annotations

import numpy as np
import pytest

from saetrack.analysis.method_comparison import MATCH_THRESHOLD
from saetrack.stages.drift.density_rules import (
    CONVERGENCE_TOLERANCE,
    DENSITY_RULE,
    SAME_FEATURE_COSINE,
    density_positions,
    null_share,
    persistence_share,
    recommend_stride,
    tokens_to_converge,
)


def test_positions_take_every_sth_checkpoint_and_always_the_final_one() -> None:
    assert density_positions(8, 1) == tuple(range(8))
    assert density_positions(8, 2) == (0, 2, 4, 6, 7)
    assert density_positions(8, 4) == (0, 4, 7) and density_positions(8, 8) == (0, 7)
    assert density_positions(9, 4) == (0, 4, 8)  # the final one falls on the stride: not repeated
    assert len(density_positions(28, 8)) == 5  # nano: 0 8 16 24 27
    with pytest.raises(ValueError):
        density_positions(8, 0)


def test_the_same_feature_threshold_is_the_projects_agreement_threshold() -> None:
    assert SAME_FEATURE_COSINE == MATCH_THRESHOLD == 0.7 and "0.7" in DENSITY_RULE


def test_convergence_on_a_step_curve_is_where_the_running_mean_enters_the_band() -> None:
    # 100 points: loss 2 for the first 50, then 1; final 1; running mean over 5 points reaches 1.02 only once every
    # point of its window is 1 (at 1.2 with one point of 2 left), so at point 54 (tokens 550)
    tokens = np.arange(1, 101) * 10.0
    loss = np.where(np.arange(100) < 50, 2.0, 1.0)
    assert tokens_to_converge(tokens, loss) == 550.0
    # a flat curve has converged at its first point; one 1.5% above its final loss there too (within 2%)
    assert CONVERGENCE_TOLERANCE == 0.02
    assert tokens_to_converge(tokens, np.full(100, 1.015)) == 10.0
    assert tokens_to_converge(tokens, np.r_[1.015, np.ones(99)]) == 10.0
    assert tokens_to_converge(tokens, np.r_[1.03, np.ones(99)]) == 20.0  # 3% above: the window must dilute it


def test_persistence_counts_features_alive_in_both() -> None:
    cos = np.array([0.9, 0.7, 0.69, -1.0, np.nan])
    out = persistence_share(cos, np.array([1, 1, 1, 1, 1], bool), np.array([1, 1, 1, 0, 1], bool))
    assert out == {"share": pytest.approx(2 / 3), "median_cosine": pytest.approx(0.7), "alive": 3}
    assert persistence_share(cos, None, None)["alive"] == 4  # no firing frequency saved: every finite feature
    assert np.isnan(persistence_share(cos, np.zeros(5, bool), None)["share"])


def test_the_null_of_identical_decoders_is_near_zero_and_of_constant_rows_one() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((200, 64))
    assert persistence_share(np.ones(200), None, None)["share"] == 1.0  # same index, same direction
    assert null_share(w, w, None, None, seed=0) < 0.02  # random directions in 64-d are far below 0.7 apart
    same = np.tile(rng.standard_normal(64), (200, 1))
    assert null_share(same, same, None, None, seed=0) == 1.0  # all rows one direction: permuting changes nothing
    assert null_share(w, w, None, None, seed=1) == null_share(w, w, None, None, seed=1)  # seeded
    assert np.isnan(null_share(w, w, np.zeros(200, bool), None, seed=0))


def test_recommendation_is_the_largest_passing_stride_with_every_denser_one_passing() -> None:
    out = recommend_stride({1: 0.8, 2: 0.76, 4: 0.74, 8: 0.78})  # bar 0.75: 4 fails, so 8 is not reached
    assert out["stride"] == 2 and out["bar"] == pytest.approx(0.75)
    assert out["passed"] == {1: True, 2: True, 4: False, 8: True}
    assert recommend_stride({1: 0.8})["stride"] == 1
