"""Controls of crosscoder emergence on known answers: settling, fractions with ties, the permuted null, the dip."""

from __future__ import annotations

import numpy as np
import pytest

from saetrack.analysis.emergence_controls import (
    SETTLING_TOLERANCE,
    emergence_by_fraction,
    emergence_during_training,
    emergence_fractions,
    emergence_histogram,
    median_norm_dip,
    permuted_snapshot_null,
    relative_norm_changes,
    settling,
    share_at_first,
)


def _records(changes_per_step: list[float]) -> np.ndarray:
    """Norm matrices [R, 2, 2]: N(k) = (1 + c_k) N(k-1), so the change from k-1 to k is c_k / (1 + c_k)."""
    base = np.ones((2, 2))
    out = [base]
    for c in changes_per_step:
        out.append(out[-1] * (1 + c))
    return np.stack(out)


def test_relative_change_compares_each_record_with_the_last_one_a_window_before() -> None:
    records = _records([1.0, 0.0, 0.0, 0.5])  # N = 1, 2, 2, 2, 3 at steps 0, 10, 20, 30, 40
    steps, changes = relative_norm_changes([0, 10, 20, 30, 40], records, window=15)
    assert steps.tolist() == [20, 30, 40]  # step 10 has no record 15 steps before it
    # 20 vs 0: |2 - 1| / 2; 30 vs 10: 0; 40 vs 20: |3 - 2| / 3
    np.testing.assert_allclose(changes, [0.5, 0.0, 1 / 3])


def _shaped(steps: np.ndarray, middle: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Norm records [R, 2, 3]: feature 0 has norms (1, middle(s), 1) and feature 1 (1, 1, 1), all times scale(s)."""
    rows = np.ones((len(steps), 2, 3))
    rows[:, 0, 1] = middle
    return rows * scale[:, None, None]


def test_settling_reads_the_row_normalised_norms_and_ignores_a_growing_scale() -> None:
    steps = np.arange(0, 1001, 25)  # 41 records over 1000 steps; the window is 100 steps = 4 records
    approach = 1 - 0.5 * np.exp(-steps / 100)
    growing = 1 + steps / 100  # every norm grows eleven-fold: the scale is free, the shape settles
    result = settling(steps, _shaped(steps, approach, growing), 1000)
    assert result.window == 100 and result.settled
    expected = (approach[-1] - approach[-5]) / np.sqrt(5 + approach[-1] ** 2)  # R(1000) vs R(900)
    assert result.final_relative_change == pytest.approx(expected)
    assert result.absolute_changes[-1] == pytest.approx(1 - 10 / 11, rel=1e-3)  # the absolute matrix still moves
    assert result.steps[0] == 100 and result.steps[-1] == 1000
    drifting = 1 - steps / 2000  # the shape keeps changing by 0.05 every window
    late = settling(steps, _shaped(steps, drifting, np.ones(len(steps))), 1000)
    assert late.final_relative_change == pytest.approx(0.05 / np.sqrt(5 + 0.25))
    assert not late.settled and late.final_relative_change > SETTLING_TOLERANCE
    record = late.to_dict()
    assert record["settled"] is False and record["curve"]["step"] == late.steps.tolist()
    assert record["final_absolute_change"] == pytest.approx(late.final_relative_change)  # no scale change here


def test_settling_needs_a_record_at_the_last_step_and_a_full_window() -> None:
    with pytest.raises(ValueError, match="last norm record"):
        settling([0, 5], np.ones((2, 1, 1)), 10)
    short = settling([0, 1], np.ones((2, 1, 1)), 1)  # the window is one step: the only comparison is 1 vs 0
    assert short.settled and short.final_relative_change == 0.0


def test_emergence_is_read_at_the_four_fixed_fractions_and_the_runs_own() -> None:
    assert emergence_fractions(0.5) == (0.3, 0.5, 0.7, 0.9)
    assert emergence_fractions(0.6) == (0.3, 0.5, 0.6, 0.7, 0.9)


def test_emergence_by_fraction_ties_at_the_first_snapshot_and_moves_later_with_the_bar() -> None:
    norms = np.array(
        [
            [1.0, 1.0, 1.0, 1.0],  # present everywhere: ties at the first snapshot at every fraction
            [0.4, 0.6, 0.8, 1.0],  # a ramp: 0.3 -> 0, 0.5 -> 1, 0.7 -> 2, 0.9 -> 3
            [0.0, 0.0, 1.0, 0.0],  # a peak at 2
            [5.0, 5.0, 5.0, 5.0],  # not alive
        ]
    )
    alive = np.array([True, True, True, False])
    by = emergence_by_fraction(norms, alive)
    assert {f: e.tolist() for f, e in by.items()} == {
        0.3: [0, 0, 2, -1],
        0.5: [0, 1, 2, -1],
        0.7: [0, 2, 2, -1],
        0.9: [0, 3, 2, -1],
    }
    assert share_at_first(by[0.3]) == pytest.approx(2 / 3) and share_at_first(by[0.9]) == pytest.approx(1 / 3)
    assert share_at_first(np.array([-1, -1])) is None
    assert emergence_histogram(by[0.5], [0, 10, 20, 30]) == {"0": 1, "10": 1, "20": 1, "30": 0}


def test_the_permuted_null_of_a_planted_matrix_matches_its_expected_share() -> None:
    # feature k is present at snapshots 0..k: the permuted first position is one column c, at which 8 - c features
    # are present, so the null's share is uniform over {1/8, ..., 8/8} with mean 4.5/8
    t = 8
    norms = np.array([[1.0 if j <= k else 0.1 for j in range(t)] for k in range(t)])
    null = permuted_snapshot_null(norms, np.ones(t, dtype=bool), fractions=(0.5,), permutations=4000, seed=1)
    entry = null["0.5"]
    assert entry["emerged_at_first_mean"] == pytest.approx(4.5 / 8, abs=0.01)
    assert entry["emerged_at_first_q025"] == 1 / 8 and entry["emerged_at_first_q975"] == 1.0
    assert sum(entry["mean_histogram"]) == pytest.approx(t)  # every alive feature emerges somewhere
    # the identity order is the real reading: every feature at snapshot 0 -> share 1, inside the null's range
    assert share_at_first(emergence_by_fraction(norms, np.ones(t, dtype=bool), (0.5,))[0.5]) == 1.0
    again = permuted_snapshot_null(norms, np.ones(t, dtype=bool), fractions=(0.5,), permutations=4000, seed=1)
    assert again == null  # seeded


def test_a_feature_present_at_every_snapshot_is_at_the_first_under_every_permutation() -> None:
    null = permuted_snapshot_null(np.ones((5, 6)), np.ones(5, dtype=bool), fractions=(0.9,), permutations=20)
    assert null["0.9"]["emerged_at_first_mean"] == 1.0 == null["0.9"]["emerged_at_first_q95"]


def test_the_median_norm_dip_is_read_inside_its_window() -> None:
    steps = [0, 4, 8, 16, 64, 100]
    norms = np.array([[1.0, 1.0, 0.5, 0.4, 0.8, 1.0]] * 3 + [[2.0, 2.0, 2.0, 2.0, 2.0, 2.0]])
    alive = np.array([True, True, True, False])
    dip = median_norm_dip(norms, alive, steps, (8, 64))
    assert dip["dip"] == pytest.approx(0.6) and dip["step"] == 16  # 1 - 0.4 / 1.0
    assert median_norm_dip(norms, alive, steps, (200, 300))["dip"] is None  # no snapshot in the window
    assert median_norm_dip(np.ones((2, 6)), np.ones(2, dtype=bool), steps, (8, 64))["dip"] == 0.0


def test_emergence_during_training_reads_each_record() -> None:
    early = np.ones((3, 4))  # every feature present everywhere: all at the first snapshot
    late = np.array([[1.0, 1.0, 1.0, 1.0], [0.1, 1.0, 1.0, 1.0], [0.1, 0.1, 1.0, 1.0]])
    shares = emergence_during_training(np.stack([early, late]), 0.5, np.array([True, True, False]))
    assert shares == [1.0, 0.5]  # the third feature is not alive
