"""The sparse assignment: candidates from blocks of cosines, the exact assignment on them, equal to the Hungarian
assignment where the optimal pairs are candidates, and ``k`` doubled when the candidates hold no full matching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from saetrack.analysis.matching import EXACT_MAX_CELLS, cosine_matrix, match_features
from saetrack.analysis.sparse_matching import candidate_cosines, pair_cosines, sparse_assignment


def _chain_like(n: int, d: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two dictionaries whose features have clear partners (a shuffled, noisy copy), and the shuffle."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d))
    order = rng.permutation(n)
    return a, a[order] + noise * rng.normal(size=(n, d)), order


def _exact(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cos = cosine_matrix(a, b)
    rows, cols = linear_sum_assignment(cos, maximize=True)
    return rows, cols, cos[rows, cols]


def test_features_with_clear_partners_match_exactly_as_the_hungarian_assignment_does() -> None:
    a, b, order = _chain_like(400, 32, 0.3, seed=0)
    rows, cols, cosines = sparse_assignment(a, b, k=4, chunk=64)
    exact_rows, exact_cols, exact_cosines = _exact(a, b)
    assert np.array_equal(rows, exact_rows) and np.array_equal(cols, exact_cols)
    assert np.array_equal(order[cols], np.arange(400))  # the shuffle undone
    np.testing.assert_allclose(cosines, exact_cosines, rtol=0, atol=1e-12)  # float64 cosines of the pairs


@pytest.mark.parametrize(("n_a", "n_b"), [(200, 150), (150, 200)])
def test_unrelated_dictionaries_of_unequal_size_match_exactly_given_enough_candidates(n_a: int, n_b: int) -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(n_a, 16)), rng.normal(size=(n_b, 16))
    rows, cols, _cosines = sparse_assignment(a, b, k=16)
    exact_rows, exact_cols, exact_cosines = _exact(a, b)
    assert rows.size == min(n_a, n_b)
    assert np.array_equal(rows, exact_rows) and np.array_equal(cols, exact_cols)
    rows4, _, cosines4 = sparse_assignment(a, b, k=4)  # few candidates: a small, measured loss
    assert rows4.size == min(n_a, n_b) and 0 <= exact_cosines.sum() - cosines4.sum() < 1e-2 * exact_cosines.sum()


def test_candidates_are_each_sides_best_partners_whatever_the_block_size() -> None:
    a, b, _ = _chain_like(97, 8, 1.0, seed=2)
    cos = cosine_matrix(a, b)
    found = {}
    for chunk in (7, 1024):
        rows, cols, values = candidate_cosines(a, b, 3, chunk=chunk)
        found[chunk] = set(zip(rows.tolist(), cols.tolist(), strict=True))
        np.testing.assert_allclose(values, cos[rows, cols], atol=1e-5)
    assert found[7] == found[1024]
    best_of_rows = {(i, int(j)) for i in range(97) for j in np.argsort(-cos[i])[:3]}
    best_of_cols = {(int(i), j) for j in range(97) for i in np.argsort(-cos[:, j])[:3]}
    assert found[7] == best_of_rows | best_of_cols


def test_a_candidate_graph_without_a_full_matching_doubles_k() -> None:
    rng = np.random.default_rng(3)
    hub = rng.normal(size=16)
    a = hub + 0.01 * rng.normal(size=(40, 16))  # every feature of A is closest to the same few of B
    b = np.vstack([hub + 0.01 * rng.normal(size=(2, 16)), rng.normal(size=(38, 16))])
    rows, cols, cosines = sparse_assignment(a, b, k=1)
    _exact_rows, _exact_cols, exact_cosines = _exact(a, b)
    assert rows.size == 40 and np.unique(cols).size == 40
    assert cosines.sum() == pytest.approx(exact_cosines.sum(), abs=1e-9)


def test_pair_cosines_are_float64_cosines_of_the_pairs_from_arrays_or_tensors() -> None:
    a, b, _ = _chain_like(50, 8, 0.5, seed=4)
    idx_a, idx_b = np.arange(50), np.arange(50)[::-1].copy()
    expected = cosine_matrix(a, b)[idx_a, idx_b]
    np.testing.assert_allclose(pair_cosines(a, b, idx_a, idx_b, chunk=7), expected, atol=1e-12)
    np.testing.assert_allclose(pair_cosines(torch.as_tensor(a), torch.as_tensor(b), idx_a, idx_b), expected, atol=1e-12)


def test_match_features_goes_sparse_beyond_the_exact_limit_with_the_same_pairs(monkeypatch) -> None:
    a, b, _ = _chain_like(300, 16, 0.3, seed=5)
    live_a, live_b = np.arange(300) % 7 != 0, np.arange(300) % 5 != 0
    exact = match_features(a, b, subset_a=live_a, subset_b=live_b, method="exact")
    sparse = match_features(torch.as_tensor(a), torch.as_tensor(b), subset_a=live_a, subset_b=live_b, method="sparse")
    assert np.array_equal(exact.index_a, sparse.index_a) and np.array_equal(exact.index_b, sparse.index_b)
    assert np.array_equal(exact.permutation, sparse.permutation)
    assert sparse.mean_cosine == pytest.approx(exact.mean_cosine, abs=1e-12)
    assert EXACT_MAX_CELLS >= 1024 * 1024  # nano's dictionaries stay exact by default
    monkeypatch.setattr("saetrack.analysis.matching.EXACT_MAX_CELLS", 100)
    auto = match_features(a, b, subset_a=live_a, subset_b=live_b)
    assert np.array_equal(auto.index_b, exact.index_b)
    with pytest.raises(ValueError, match="method must be"):
        match_features(a, b, method="greedy")
