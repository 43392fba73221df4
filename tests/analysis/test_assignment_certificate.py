"""The optimality certificate of a matching found on candidates: potentials from the residual graph, and the sweep
that checks every left-out pair against each side's k-th best cosine (brute force on small problems)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from saetrack.analysis.assignment_certificate import certifies_all_pairs, residual_potentials


def _dense_problem(n_rows: int, n_cols: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.tanh(rng.normal(size=(n_rows, n_cols)))


@pytest.mark.parametrize(("n_rows", "n_cols"), [(12, 12), (9, 14)])
def test_potentials_of_the_optimal_matching_have_non_negative_reduced_costs_and_tight_matched_pairs(
    n_rows: int, n_cols: int
) -> None:
    cos = _dense_problem(n_rows, n_cols, seed=n_rows)
    rows_opt, cols_opt = linear_sum_assignment(cos, maximize=True)
    rows, cols = np.nonzero(np.ones_like(cos))
    d_rows, d_cols = residual_potentials(n_rows, n_cols, rows, cols, cos[rows, cols], cols_opt[np.argsort(rows_opt)])
    reduced = -cos + d_rows[:, None] - d_cols[None, :]
    assert reduced.min() >= -1e-12
    np.testing.assert_allclose(reduced[rows_opt, cols_opt], 0.0, atol=1e-12)
    free = np.setdiff1d(np.arange(n_cols), cols_opt)
    assert np.all(d_cols[free] >= d_cols[cols_opt].max() - 1e-12)  # free columns sit at the sink's level or above


def test_a_matching_that_is_not_optimal_on_its_own_candidates_is_refused() -> None:
    cos = np.array([[0.9, 0.1], [0.2, 0.8]])
    rows, cols = np.nonzero(np.ones_like(cos))
    with pytest.raises(ArithmeticError, match="negative cycle"):
        residual_potentials(2, 2, rows, cols, cos[rows, cols], np.array([1, 0]))


@pytest.mark.parametrize("seed", range(6))
def test_the_sweep_agrees_with_checking_every_pair_by_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    d_rows, d_cols = rng.normal(size=30), rng.normal(size=40)
    row_kth, col_kth = rng.normal(size=30), rng.normal(size=40)
    row_kth[:3] = -np.inf  # rows with every column a candidate
    brute = (-np.minimum(row_kth[:, None], col_kth[None, :]) + d_rows[:, None] - d_cols[None, :] >= -1e-9).all(axis=1)
    assert np.array_equal(certifies_all_pairs(d_rows, d_cols, row_kth, col_kth), brute)
    assert 0 < brute.sum() < 30  # both outcomes exercised
