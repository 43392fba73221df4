"""The sparse assignment: candidates from blocks of cosines, the exact assignment on them, proven equal to the
Hungarian assignment where the certificate holds, and never claimed equal where it is not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from saetrack.analysis.matching import EXACT_MAX_CELLS, cosine_matrix, index_stability, match_features
from saetrack.analysis.sparse_matching import candidate_cosines, candidate_pool, pair_cosines, sparse_assignment


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


def test_features_with_clear_partners_match_exactly_and_are_certified_from_few_candidates() -> None:
    a, b, order = _chain_like(400, 32, 0.3, seed=0)
    found = sparse_assignment(a, b, k=4, chunk=64)
    exact_rows, exact_cols, exact_cosines = _exact(a, b)
    assert found.certified and found.k == 4
    assert np.array_equal(found.rows, exact_rows) and np.array_equal(found.cols, exact_cols)
    assert np.array_equal(order[found.cols], np.arange(400))  # the shuffle undone
    np.testing.assert_allclose(found.cosines, exact_cosines, rtol=0, atol=1e-12)  # float64 cosines of the pairs


@pytest.mark.parametrize(("n_a", "n_b", "seed"), [(60, 60, 1), (60, 45, 2), (45, 60, 3), (80, 80, 4)])
def test_a_certified_answer_is_the_exact_optimum_and_an_uncertified_one_is_never_better(
    n_a: int, n_b: int, seed: int, monkeypatch
) -> None:
    monkeypatch.setattr("saetrack.analysis.sparse_matching.REPAIR_ROUNDS", 0)  # the certificate on candidates alone
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(n_a, 8)), rng.normal(size=(n_b, 8))
    _, _, exact_cosines = _exact(a, b)
    outcomes = set()
    for k in (1, 2, 4, 8, 64):
        found = sparse_assignment(a, b, k=k, max_k=k)
        assert found.rows.size == min(n_a, n_b) and np.unique(found.cols).size == min(n_a, n_b)
        assert found.cosines.sum() <= exact_cosines.sum() + 1e-9
        if found.certified:
            assert found.cosines.sum() == pytest.approx(exact_cosines.sum(), abs=1e-9)
        outcomes.add(found.certified)
    assert found.certified  # k = 64 covers a whole side
    assert outcomes == {True, False}  # unrelated dictionaries: a few candidates are not enough, and it is said


def test_unproven_answers_widen_the_candidates_until_proven() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(70, 8)), rng.normal(size=(70, 8))
    exact_rows, exact_cols, _ = _exact(a, b)
    found = sparse_assignment(a, b, k=1)
    assert found.certified and found.k > 1
    assert np.array_equal(found.rows, exact_rows) and np.array_equal(found.cols, exact_cols)


def test_candidates_are_each_sides_best_partners_whatever_the_block_size() -> None:
    a, b, _ = _chain_like(97, 8, 1.0, seed=2)
    cos = cosine_matrix(a, b)
    found = {}
    for chunk in (7, 1024):
        cands = candidate_cosines(a, b, 3, chunk=chunk)
        found[chunk] = set(zip(cands.rows.tolist(), cands.cols.tolist(), strict=True))
        np.testing.assert_allclose(cands.cosines, cos[cands.rows, cands.cols], atol=1e-5)
        left_out = np.ones_like(cos, dtype=bool)
        left_out[cands.rows, cands.cols] = False
        bound = np.minimum(cands.row_kth[:, None], cands.col_kth[None, :])
        assert np.all(cos[left_out] <= bound[left_out])  # the k-th values bound every left-out pair
        assert np.array_equal(cands.top_partner, cos.argmax(axis=1))
    assert found[7] == found[1024]
    best_of_rows = {(i, int(j)) for i in range(97) for j in np.argsort(-cos[i])[:3]}
    best_of_cols = {(int(i), j) for j in range(97) for i in np.argsort(-cos[:, j])[:3]}
    assert found[7] == best_of_rows | best_of_cols


def test_a_candidate_graph_without_a_full_matching_widens_k() -> None:
    rng = np.random.default_rng(3)
    hub = rng.normal(size=16)
    a = hub + 0.01 * rng.normal(size=(40, 16))  # every feature of A is closest to the same few of B
    b = np.vstack([hub + 0.01 * rng.normal(size=(2, 16)), rng.normal(size=(38, 16))])
    found = sparse_assignment(a, b, k=1)
    _exact_rows, _exact_cols, exact_cosines = _exact(a, b)
    assert found.rows.size == 40 and np.unique(found.cols).size == 40 and found.k > 1
    assert found.cosines.sum() == pytest.approx(exact_cosines.sum(), abs=1e-9)


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
    assert np.array_equal(exact.permutation, sparse.permutation) and sparse.certified and exact.certified
    assert sparse.mean_cosine == pytest.approx(exact.mean_cosine, abs=1e-12)
    assert EXACT_MAX_CELLS >= 1024 * 1024  # nano's dictionaries stay exact by default
    monkeypatch.setattr("saetrack.analysis.matching.EXACT_MAX_CELLS", 100)
    auto = match_features(a, b, subset_a=live_a, subset_b=live_b)
    assert np.array_equal(auto.index_b, exact.index_b)
    with pytest.raises(ValueError, match="method must be"):
        match_features(a, b, method="greedy")


def test_index_stability_is_the_same_from_the_sparse_path() -> None:
    rng = np.random.default_rng(6)
    prev = rng.normal(size=(200, 16))
    nxt = prev + 0.4 * rng.normal(size=(200, 16))
    nxt[[3, 4]] = nxt[[4, 3]]  # two features swapped: not the same index
    live = np.arange(200) % 3 != 0
    exact = index_stability(prev, nxt, features=live, method="exact")
    sparse = index_stability(prev, nxt, features=live, method="sparse")
    assert exact.keys() == sparse.keys() and sparse["matching_certified"]
    for key, value in exact.items():
        assert sparse[key] == pytest.approx(value, abs=1e-12), key
    assert exact["hungarian_same_index"] < 1.0


def test_a_pool_of_many_partners_gives_the_candidates_of_any_smaller_k() -> None:
    a, b, _ = _chain_like(120, 8, 1.0, seed=8)
    pool = candidate_pool(a, b, 32, chunk=50)
    for k in (1, 4, 16):
        sliced, direct = pool.candidates(k), candidate_cosines(a, b, k)
        assert np.array_equal(sliced.rows, direct.rows) and np.array_equal(sliced.cols, direct.cols)
        np.testing.assert_array_equal(sliced.row_kth, direct.row_kth)
        np.testing.assert_array_equal(sliced.col_kth, direct.col_kth)


@pytest.mark.parametrize(("n_a", "n_b", "seed"), [(300, 300, 0), (300, 280, 1), (280, 300, 2), (200, 200, 3)])
def test_column_generation_completes_the_unproven_features_to_the_proven_exact_optimum(
    n_a: int, n_b: int, seed: int, monkeypatch
) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(n_a, 16)), rng.normal(size=(n_b, 16))  # no clear partners: 4 candidates are not enough
    exact_rows, exact_cols, exact_cosines = _exact(a, b)
    monkeypatch.setattr("saetrack.analysis.sparse_matching.REPAIR_ROUNDS", 0)
    assert not sparse_assignment(a, b, k=4, max_k=4).certified
    monkeypatch.setattr("saetrack.analysis.sparse_matching.REPAIR_ROUNDS", 4)
    found = sparse_assignment(a, b, k=4, max_k=4)
    assert found.certified
    assert np.array_equal(found.rows, exact_rows) and np.array_equal(found.cols, exact_cols)
    assert found.cosines.sum() == pytest.approx(exact_cosines.sum(), abs=1e-9)
    monkeypatch.setattr("saetrack.analysis.sparse_matching.MAX_REPAIR_FEATURES", 0)  # too many to complete: said
    assert not sparse_assignment(a, b, k=4, max_k=4).certified
