"""SAE-Track against the crosscoder: per-snapshot matching, emergence vs formation, phase-boundary agreement."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ortho_group

from saetrack.analysis.method_comparison import (
    boundary_agreement,
    emergence_vs_formation,
    match_per_snapshot,
    random_matching_baseline,
    rank_agreement,
)


def test_match_per_snapshot_finds_permuted_copies() -> None:
    rng = np.random.default_rng(0)
    f, t, d = 6, 3, 8
    dec = rng.standard_normal((f, t, d))
    steps = (0, 10, 20)
    perms = [rng.permutation(f) for _ in steps]
    # the chain's links at steps 0 and 20: rescaled, permuted copies of the crosscoder's rows there; none at 10
    chain = {0: 3.0 * dec[perms[0], 0], 20: 0.5 * dec[perms[2], 2]}
    live = {step: np.ones(f, dtype=bool) for step in chain}
    present = np.ones((f, t), dtype=bool)
    out = match_per_snapshot(dec, present, steps, chain, live)
    assert sorted(out) == [0, 20]
    for cosines in out.values():
        assert cosines.shape == (f,)
        np.testing.assert_allclose(cosines, 1.0, atol=1e-12)
    # only present crosscoder features and live chain features take part; a snapshot with none is left out
    present[:, 0] = False
    present[:2, 2] = False
    live[20] = np.isin(np.arange(f), np.argsort(perms[2])[2:])  # the chain copies of crosscoder features 2..5
    out = match_per_snapshot(dec, present, steps, chain, live)
    assert list(out) == [20]
    np.testing.assert_allclose(out[20], 1.0, atol=1e-12)
    assert out[20].shape == (4,)


def _planted_pairs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eight orthonormal crosscoder directions in R^16 and a chain holding seven of them, permuted, plus one
    direction orthogonal to all eight (its crosscoder partner is left with cosine 0)."""
    basis = ortho_group.rvs(16, random_state=0)
    crosscoder = basis[:8]
    chain_order = np.array([5, 2, 7, 0, 3, 6, 1, 4])  # chain feature j is crosscoder feature chain_order[j]
    chain = crosscoder[chain_order].copy()
    chain[2] = basis[12]  # crosscoder feature 7 has no counterpart
    return crosscoder, chain, chain_order


def test_emergence_vs_formation_recovers_a_monotone_relation() -> None:
    crosscoder, chain, order = _planted_pairs()
    emergence = np.array([0, 100, 200, 300, 400, 500, 600, 700])
    # formation a monotone function of the matched crosscoder feature's emergence: 3 e + 50
    formation = 3 * emergence[order] + 50
    formation[order.tolist().index(4)] = -1  # the chain copy of crosscoder feature 4 never forms
    emergence[6] = -1  # crosscoder feature 6 never emerges
    alive, live = np.ones(8, dtype=bool), np.ones(8, dtype=bool)
    result = emergence_vs_formation(crosscoder, alive, emergence, chain, live, formation, threshold=0.7)
    assert result.n_matched == 7  # feature 7's pair has cosine 0
    assert sorted(result.crosscoder_features.tolist()) == [0, 1, 2, 3, 5]
    assert np.array_equal(order[result.chain_features], result.crosscoder_features)
    np.testing.assert_allclose(result.cosines, 1.0, atol=1e-12)
    np.testing.assert_array_equal(result.formation_step, 3 * result.emergence_step + 50)
    assert result.rho == pytest.approx(1.0)
    assert result.p_value < 0.05
    summary = result.to_dict()
    assert summary["pairs"] == 5 and summary["matched_above_threshold"] == 7
    assert summary["spearman_rho"] == pytest.approx(1.0) and summary["median_cosine"] == pytest.approx(1.0)
    # formation decreasing in emergence: rho = -1
    reverse = np.where(formation >= 0, 10_000 - formation, -1)
    assert emergence_vs_formation(crosscoder, alive, emergence, chain, live, reverse).rho == pytest.approx(-1.0)


def test_emergence_vs_formation_needs_three_timed_pairs() -> None:
    crosscoder, chain, order = _planted_pairs()
    emergence = np.array([0, 100, 200, 300, 400, 500, 600, 700])
    formation = np.full(8, -1)
    formation[:2] = [10, 20]  # only two chain features formed
    alive = np.ones(8, dtype=bool)
    result = emergence_vs_formation(crosscoder, alive, emergence, chain, alive, formation)
    assert result.crosscoder_features.size == 2 and np.isnan(result.rho) and np.isnan(result.p_value)
    summary = result.to_dict()
    assert summary["spearman_rho"] is None and summary["p_value"] is None and summary["pairs"] == 2
    # features outside the alive / live masks are not matched at all
    alive[:4] = False
    restricted = emergence_vs_formation(crosscoder, alive, emergence, chain, np.ones(8, dtype=bool), 10 * order)
    assert sorted(restricted.crosscoder_features.tolist()) == [4, 5, 6]  # 7's only partner has cosine 0
    assert restricted.rho == pytest.approx(1.0)


def test_boundary_agreement_counts_checkpoints_apart_on_the_grid() -> None:
    grid = [0, 10, 20, 30, 40, 50, 60]
    boundaries = {"drift": [10, 40], "progress": [20, 40], "crosscoder": [10, 60], "statistics": [30]}
    out = boundary_agreement(boundaries, grid)
    assert out["drift vs progress"] == {"comparable": True, "checkpoints_apart": [1, 0], "max_apart": 1}
    assert out["drift vs crosscoder"] == {"comparable": True, "checkpoints_apart": [0, 2], "max_apart": 2}
    assert out["progress vs crosscoder"] == {"comparable": True, "checkpoints_apart": [1, 2], "max_apart": 2}
    for other in ("drift", "progress", "crosscoder"):
        assert out[f"{other} vs statistics"] == {"comparable": False}
    assert len(out) == 6
    assert boundary_agreement({"a": [], "b": []}, grid) == {"a vs b": {"comparable": False}}
    # the grid need not be given sorted
    assert boundary_agreement({"a": [0], "b": [50]}, grid[::-1])["a vs b"]["checkpoints_apart"] == [5]


def test_kendall_tau_b_handles_ties_as_by_hand() -> None:
    # pairs: 6 concordant, 0 discordant; 3 tied in emergence (the three 0s), 2 tied in formation: 6 / sqrt(7 * 8)
    out = rank_agreement(np.array([0, 0, 0, 1, 2]), np.array([1, 1, 2, 2, 3]), permutations=200, seed=0)
    assert out["kendall_tau_b"] == pytest.approx(6 / np.sqrt(56))
    assert out["n"] == 5 and 0 < out["permutation_p"] <= 1


def test_the_permutation_null_of_tau_b_keeps_the_ties_and_separates_signal_from_noise() -> None:
    rng = np.random.default_rng(1)
    formation = rng.integers(0, 10, size=60)
    tied = np.where(rng.random(60) < 0.5, 0, formation)  # half tied at the first snapshot, the rest agree
    signal = rank_agreement(tied, formation, permutations=999, seed=2)
    assert signal["kendall_tau_b"] > signal["null_q975"] and signal["permutation_p"] == pytest.approx(1 / 1000)
    noise = rank_agreement(rng.permutation(tied), formation, permutations=999, seed=2)
    assert noise["null_q025"] < noise["kendall_tau_b"] < noise["null_q975"] and noise["permutation_p"] > 0.05
    assert noise["null_q025"] < 0 < noise["null_q975"]
    assert rank_agreement(np.zeros(5), np.arange(5), permutations=10, seed=0)["kendall_tau_b"] is None  # constant


def test_the_random_matching_baseline_is_the_chance_level_of_matched_cosines() -> None:
    rng = np.random.default_rng(3)
    medians = {}
    for d in (64, 256):
        directions = rng.standard_normal((300, d))
        cosines = random_matching_baseline(directions, 300, seed=4)
        assert cosines.shape == (300,) and np.all(np.abs(cosines) <= 1)
        medians[d] = float(np.median(cosines))
        # above a typical random cosine (about 0.8 / sqrt(d)), below the best single pair (about sqrt(2 ln n^2 / d))
        assert 0.8 / np.sqrt(d) < medians[d] < np.sqrt(4 * np.log(300) / d)
    assert medians[64] / medians[256] == pytest.approx(2.0, rel=0.15)  # chance cosines shrink as 1 / sqrt(d)
    again = random_matching_baseline(directions, 300, seed=4)
    np.testing.assert_array_equal(again, cosines)  # seeded
