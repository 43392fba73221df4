"""Hungarian feature matching by decoder cosine and index stability along a chain."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saetrack.analysis.matching import cosine_matrix, index_stability, match_features


def _dictionary(n: int = 64, d: int = 24, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


def test_hungarian_recovers_a_permuted_noisy_dictionary() -> None:
    rng = np.random.default_rng(1)
    w_a = _dictionary()
    perm = rng.permutation(64)
    w_b = 2.5 * w_a[perm] + 0.05 * rng.standard_normal(w_a.shape)  # row j of B is row perm[j] of A, rescaled
    result = match_features(torch.from_numpy(w_a).float(), w_b)
    inverse = np.argsort(perm)
    np.testing.assert_array_equal(result.permutation, inverse)
    np.testing.assert_array_equal(result.index_b, inverse[result.index_a])
    assert result.n_matched == 64 and result.mean_cosine > 0.99 and result.fraction_above == 1.0
    assert np.all(np.abs(result.cosines) <= 1.0)


def test_rectangular_and_subset_matching() -> None:
    w_a = _dictionary(40)
    w_b = np.concatenate([w_a[::-1], _dictionary(20, seed=5)])  # 60 features: A reversed, then 20 unrelated
    result = match_features(w_a, w_b)
    np.testing.assert_array_equal(result.permutation, 39 - np.arange(40))
    bigger_a = match_features(w_b, w_a)  # 60 -> 40: the 20 unrelated rows stay unmatched
    assert bigger_a.n_matched == 40 and np.all(bigger_a.permutation[40:] == -1)
    subset = match_features(w_a, w_b, subset_a=np.array([0, 5, 7]), subset_b=np.arange(40, 60))
    assert subset.n_matched == 3 and set(subset.index_b) <= set(range(40, 60))
    assert np.count_nonzero(subset.permutation >= 0) == 3 and subset.mean_cosine < 0.9
    mask = np.zeros(40, dtype=bool)
    mask[[1, 2]] = True
    np.testing.assert_array_equal(match_features(w_a, w_b, subset_a=mask).index_b, [38, 37])
    with pytest.raises(ValueError, match="subset_a"):
        match_features(w_a, w_b, subset_a=np.array([0, 0]))
    with pytest.raises(ValueError, match="d_in"):
        match_features(w_a, w_b[:, :5])


def test_threshold_counts_pairs_above() -> None:
    w = np.eye(4)
    w_b = np.array([[1.0, 0, 0, 0], [0, 1.0, 1.0, 0], [0, 0, 0, 1.0], [0, -1.0, 1.0, 0]])
    result = match_features(w, w_b, threshold=0.8)
    assert result.fraction_above == pytest.approx(0.5)  # two exact pairs, two at cosine 1/sqrt(2)
    assert result.mean_cosine == pytest.approx((2 + 2 / np.sqrt(2)) / 4)


def test_cosines_are_bounded_and_zero_rows_are_safe() -> None:
    w_a = _dictionary(30, seed=2) * 1e3
    w_b = _dictionary(30, seed=3)
    w_b[4] = 0.0
    cos = cosine_matrix(w_a, w_b)
    assert cos.shape == (30, 30) and np.all(cos <= 1.0) and np.all(cos >= -1.0)
    assert np.all(cos[:, 4] == 0.0)
    np.testing.assert_allclose(np.diag(cosine_matrix(w_a, w_a)), 1.0)


def test_index_stability_identical_and_permuted() -> None:
    w = _dictionary()
    same = index_stability(w, w.copy())
    assert same["hungarian_same_index"] == 1.0 and same["argmax_same_index"] == 1.0
    assert same["mean_same_index_cosine"] == pytest.approx(1.0) and same["fraction_matched_above"] == 1.0
    swapped = w.copy()
    swapped[[0, 1, 2, 3]] = swapped[[1, 0, 3, 2]]  # four features trade indices
    moved = index_stability(w, swapped)
    assert moved["hungarian_same_index"] == pytest.approx(60 / 64)
    assert moved["argmax_same_index"] == pytest.approx(60 / 64)
    assert moved["mean_matched_cosine"] == pytest.approx(1.0)
    live = index_stability(w, swapped, features=np.arange(4, 64))
    assert live["n_features"] == 60 and live["hungarian_same_index"] == 1.0
    with pytest.raises(ValueError, match="equal size"):
        index_stability(w, w[:10])
