"""Tests of the toy feature regions (Sec. 5.1, Def. 5.1-5.3); Fig. 3 itself is tested in tests/plots."""

from __future__ import annotations

import numpy as np
import pytest

from saetrack.analysis.regions import (
    ToyRegions,
    faithful_thresholds,
    pre_activations,
    toy_activations,
    toy_feature_regions,
)

SMALL = {"n": 1500, "n_steps": 400, "grid_size": 60}


@pytest.fixture(scope="module")
def toy(one_thread: None) -> ToyRegions:
    return toy_feature_regions(seed=0, d_sae=6, **SMALL)


def test_toy_activations_seeded_and_non_negative_combinations() -> None:
    a, b, c = toy_activations(500, seed=3), toy_activations(500, seed=3), toy_activations(500, seed=4)
    assert a.shape == (500, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # Without noise every point is a non-negative combination of the 3 directions: far from the origin it lies
    # in one of the three sectors spanned by them, so no point is far beyond the convex cone's magnitude range.
    clean = toy_activations(2000, seed=0, noise=0.0)
    assert np.linalg.norm(clean, axis=1).max() <= 3 * 2.0 + 1e-5
    with pytest.raises(ValueError, match="n = 0"):
        toy_activations(0, seed=0)


def test_toy_regions_shapes_and_determinism(toy: ToyRegions) -> None:
    g = SMALL["grid_size"]
    assert toy.points.shape == (SMALL["n"], 2)
    assert toy.grid_x.shape == (g,) and toy.grid_y.shape == (g,)
    assert toy.pre_activation.shape == (6, g, g)
    assert toy.thresholds.shape == (6,)
    assert len(toy.features) == 3 and len(set(toy.features)) == 3
    # the grid covers the data
    assert toy.grid_x[0] < toy.points[:, 0].min() and toy.grid_x[-1] > toy.points[:, 0].max()
    assert toy.grid_y[0] < toy.points[:, 1].min() and toy.grid_y[-1] > toy.points[:, 1].max()
    again = toy_feature_regions(seed=0, d_sae=6, **SMALL)
    np.testing.assert_array_equal(again.pre_activation, toy.pre_activation)
    np.testing.assert_array_equal(again.thresholds, toy.thresholds)
    assert again.features == toy.features


def test_thresholds_positive_and_median_rule(toy: ToyRegions) -> None:
    assert np.all(toy.thresholds[toy.features] > 0)
    acts = np.maximum(pre_activations(toy.weights, toy.points), 0.0)
    for i in toy.features:
        assert toy.thresholds[i] == pytest.approx(np.median(acts[acts[:, i] > 0, i]))
    hand = np.array([[0.0, 1.0], [2.0, 0.0], [4.0, 0.0], [6.0, 0.0]])
    np.testing.assert_allclose(faithful_thresholds(hand), [4.0, 1.0])
    assert np.isinf(faithful_thresholds(np.zeros((5, 1))))[0]


def test_pre_activation_matches_sae_weights(toy: ToyRegions) -> None:
    w = toy.weights
    w_enc, b_enc, b_dec = w.W_enc.double().numpy(), w.b_enc.double().numpy(), w.b_dec.double().numpy()
    c = 1.0 if w.apply_b_dec_to_input else 0.0
    for row, col in [(0, 0), (7, 41), (30, 30), (59, 12)]:
        x = np.array([toy.grid_x[col], toy.grid_y[row]])
        for i in range(6):
            direct = float(w_enc[:, i] @ (x - c * b_dec) + b_enc[i])  # Eq. 8
            assert toy.pre_activation[i, row, col] == pytest.approx(direct, rel=1e-6, abs=1e-8)


def test_faithful_regions_non_empty(toy: ToyRegions) -> None:
    for i in toy.features:
        mask = toy.faithful_mask(i)
        assert mask.shape == toy.pre_activation.shape[1:]
        assert 0 < mask.sum() < mask.size
