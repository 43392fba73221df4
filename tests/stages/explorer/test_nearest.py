"""Each feature's nearest features by decoder cosine, computed in blocks, equal the brute-force answer."""

from __future__ import annotations

import numpy as np
import torch

from saetrack.sae.weights import SAEWeights
from saetrack.stages.explorer.nearest import nearest_features


def _weights(n_features: int, d_in: int = 6, seed: int = 0) -> SAEWeights:
    """A random SAE with decoder rows of unequal norms (the cosine must normalise them)."""
    g = torch.Generator().manual_seed(seed)
    w_dec = torch.randn(n_features, d_in, generator=g) * torch.rand(n_features, 1, generator=g).add(0.1) * 5
    return SAEWeights(
        W_enc=torch.randn(d_in, n_features, generator=g),
        b_enc=torch.zeros(n_features),
        W_dec=w_dec,
        b_dec=torch.zeros(d_in),
    )


def _brute_force(weights: SAEWeights) -> np.ndarray:
    """The cosine matrix of the decoder rows with the diagonal excluded (-inf), float64."""
    w = weights.W_dec.double().numpy()
    unit = w / np.linalg.norm(w, axis=1, keepdims=True)
    cos = unit @ unit.T
    np.fill_diagonal(cos, -np.inf)
    return cos


def test_nearest_features_match_brute_force_in_blocks() -> None:
    weights = _weights(13)
    index, cosine = nearest_features(weights, k=4, chunk=5)
    cos = _brute_force(weights)
    expected = np.argsort(-cos, axis=1, kind="stable")[:, :4]
    assert index.shape == cosine.shape == (13, 4)
    assert index.dtype == np.int64 and cosine.dtype == np.float32
    np.testing.assert_array_equal(index, expected)
    np.testing.assert_allclose(cosine, np.take_along_axis(cos, expected, axis=1), atol=1e-5)
    assert (index != np.arange(13)[:, None]).all()  # never itself
    assert (np.diff(cosine, axis=1) <= 0).all()  # best first


def test_nearest_features_clip_k_to_the_other_features() -> None:
    weights = _weights(7, seed=1)
    index, cosine = nearest_features(weights, k=50, chunk=3)
    assert index.shape == cosine.shape == (7, 6)
    for f in range(7):
        assert sorted(index[f].tolist()) == [g for g in range(7) if g != f]
    np.testing.assert_allclose(cosine, np.sort(_brute_force(weights), axis=1)[:, ::-1][:, :6], atol=1e-5)


def test_nearest_features_of_a_single_feature_is_empty() -> None:
    index, cosine = nearest_features(_weights(1), k=8)
    assert index.shape == cosine.shape == (1, 0)
