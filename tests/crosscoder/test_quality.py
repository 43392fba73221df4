"""Crosscoder quality per snapshot: explained variance, L0, present / dead features on hand-built crosscoders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import ortho_group

from saetrack.crosscoder.model import Crosscoder, CrosscoderShape
from saetrack.crosscoder.quality import crosscoder_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

SCALES = np.array([0.5, 4.0])


def _exact_crosscoder() -> Crosscoder:
    """Two snapshots in R^3, four features: 0 and 1 at both snapshots, 2 only at snapshot 0, and 3 (decoder only at
    snapshot 1) never fires. Decoder rows at each snapshot are orthonormal and the encoder is their transpose divided
    by the number of snapshots the feature is at, so a token ``a * W_dec,i`` has pre-activation ``a`` on ``i``, 0
    elsewhere: with a threshold of 0.5 and ``a >= 1`` it is reconstructed exactly."""
    q = [ortho_group.rvs(3, random_state=seed) for seed in (0, 1)]
    w_dec = np.zeros((4, 2, 3))
    w_dec[0] = q[0][0], q[1][0]
    w_dec[1] = q[0][1], q[1][1]
    w_dec[2, 0] = q[0][2]
    w_dec[3, 1] = q[1][2]
    w_enc = np.zeros((2, 3, 4))
    for i, count in ((0, 2), (1, 2), (2, 1)):
        w_enc[:, :, i] = w_dec[i] / count
    model = Crosscoder(CrosscoderShape(2, 3, 4, initial_threshold=0.5))
    with torch.no_grad():
        model.W_dec.copy_(torch.as_tensor(w_dec))
        model.W_enc.copy_(torch.as_tensor(w_enc))
    return model


def test_exact_reconstruction_has_explained_variance_one() -> None:
    model = _exact_crosscoder()
    rng = np.random.default_rng(0)
    which = rng.integers(0, 3, size=50)
    amount = rng.uniform(1, 2, size=50)
    w_dec = model.W_dec.detach().double().numpy()
    heldout = amount[:, None, None] * w_dec[which] * SCALES[None, :, None]  # model units: normalised x scale
    out = crosscoder_metrics(model, heldout, SCALES, present_fraction=0.5, batch_size=7)
    np.testing.assert_allclose(out["explained_variance"], [1.0, 1.0], atol=1e-6)
    assert out["n_tokens"] == 50 and out["l0"] == 1.0
    np.testing.assert_array_equal(out["fire_counts"], [np.sum(which == i) for i in range(4)])
    assert out["dead_fraction"] == 0.25  # feature 3 never fires
    assert out["absent_fraction"] == [0.25, 0.25]  # feature 3 absent at 0, feature 2 at 1
    # every token's one active feature is present at snapshot 0; at snapshot 1 only features 0 and 1 are
    assert out["l0_present"] == pytest.approx([1.0, np.mean(which < 2)])


def test_metrics_match_a_hand_computation() -> None:
    model = Crosscoder(CrosscoderShape(2, 5, 6, initial_threshold=0.3), torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.b_dec.copy_(0.2 * torch.randn(2, 5, generator=torch.Generator().manual_seed(1)))
        model.W_dec[4, 1].mul_(0.1)  # feature 4 below half its peak at snapshot 1
    heldout = np.random.default_rng(2).standard_normal((40, 2, 5)) * SCALES[None, :, None]
    out = crosscoder_metrics(model, heldout, SCALES, present_fraction=0.5, batch_size=16)

    x = torch.as_tensor(heldout / SCALES[None, :, None], dtype=torch.float32)
    with torch.no_grad():
        f = model.encode(x).double().numpy()
        x_hat = model(x).double().numpy()
    xs = x.double().numpy()
    error = ((xs - x_hat) ** 2).sum(axis=(0, 2))
    variance = ((xs - xs.mean(axis=0)) ** 2).sum(axis=(0, 2))
    np.testing.assert_allclose(out["explained_variance"], 1 - error / variance, rtol=1e-6)
    active = f > 0
    assert 0 < out["l0"] < 6 and out["l0"] == pytest.approx(active.sum(axis=1).mean())
    np.testing.assert_array_equal(out["fire_counts"], active.sum(axis=0))
    assert out["dead_fraction"] == pytest.approx(np.mean(active.sum(axis=0) == 0))
    assert out["absent_fraction"] == pytest.approx([0.0, 1 / 6])
    assert out["l0_present"][0] == pytest.approx(out["l0"])
    assert out["l0_present"][1] == pytest.approx(np.delete(active, 4, axis=1).sum(axis=1).mean())


def test_heldout_of_the_wrong_shape_is_rejected() -> None:
    model = Crosscoder(CrosscoderShape(2, 3, 4))
    with pytest.raises(ValueError, match=r"held-out activations are \[n, 3, 3\]; the crosscoder reads \[n, 2, 3\]"):
        crosscoder_metrics(model, np.zeros((5, 3, 3)), np.ones(3), present_fraction=0.5)


def test_offsets_are_subtracted_as_in_centred_training() -> None:
    """With offsets, a token ``offset + a * scale * W_dec,i`` is read as ``a * W_dec,i``: exact again, and the
    explained variance of a per-snapshot affine normalisation is that of the model units."""
    model = _exact_crosscoder()
    rng = np.random.default_rng(3)
    which, amount = rng.integers(0, 3, size=40), rng.uniform(1, 2, size=40)
    offsets = rng.standard_normal((2, 3))
    w_dec = model.W_dec.detach().double().numpy()
    heldout = offsets[None] + amount[:, None, None] * w_dec[which] * SCALES[None, :, None]
    centred = crosscoder_metrics(model, heldout, SCALES, present_fraction=0.5, offsets=offsets)
    np.testing.assert_allclose(centred["explained_variance"], [1.0, 1.0], atol=1e-6)
    uncentred = crosscoder_metrics(model, heldout, SCALES, present_fraction=0.5)
    assert min(uncentred["explained_variance"]) < 0.99  # the same tokens without the offsets are not reconstructed
