"""The analysis view of an SAE: its tensors, feature activations (Eq. 2), decoder directions and decoding (Eq. 1)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from saetrack.sae.io import SAE_CFG_FILE, save_sae
from saetrack.sae.model import build_sae
from saetrack.sae.weights import SAEWeights, decode, decoder_directions, feature_activations, load_decoder
from saetrack.store import StaleArtifactError
from tests.sae.helpers import D_IN, chain_config, randomise_biases


def _hand_weights(apply_b_dec: bool) -> SAEWeights:
    """d_in 2, d_sae 3: f = ReLU((x - c b_dec) @ W_enc + b_enc) with numbers small enough to do by hand."""
    return SAEWeights(
        W_enc=torch.tensor([[1.0, 0.0, 1.0], [0.0, 2.0, -1.0]]),
        b_enc=torch.tensor([0.0, -1.0, 0.5]),
        W_dec=torch.tensor([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]]),
        b_dec=torch.tensor([1.0, 1.0]),
        apply_b_dec_to_input=apply_b_dec,
    )


def test_decoder_directions_and_weights_roundtrip(tmp_path) -> None:
    sae = build_sae(D_IN, chain_config(decoder_norm="weighted"), seed=0)
    dirs = decoder_directions(sae)
    assert dirs.shape == (sae.cfg.d_sae, D_IN)
    torch.testing.assert_close(dirs.norm(dim=1), torch.ones(sae.cfg.d_sae))
    save_sae(sae, tmp_path / "w")
    torch.testing.assert_close(decoder_directions(SAEWeights.load(tmp_path / "w")), dirs)


def test_feature_activations_and_decode_by_hand() -> None:
    x = np.array([[2.0, 3.0], [0.0, 0.0]], dtype=np.float64)  # any dtype: cast to the weights' float32
    # c = 1: x - b_dec = (1, 2), (-1, -1) -> pre = (1, 3, -0.5), (-1, -3, 0.5)
    f = feature_activations(_hand_weights(True), x)
    assert f.dtype == torch.float32
    torch.testing.assert_close(f, torch.tensor([[1.0, 3.0, 0.0], [0.0, 0.0, 0.5]]))
    # c = 0: pre = (2, 5, -0.5), (0, -1, 0.5)
    torch.testing.assert_close(
        feature_activations(_hand_weights(False), x), torch.tensor([[2.0, 5.0, 0.0], [0.0, 0.0, 0.5]])
    )
    # x_hat = f @ W_dec + b_dec
    torch.testing.assert_close(decode(_hand_weights(True), f), torch.tensor([[4.0, 11.0], [1.5, 1.0]]))
    torch.testing.assert_close(
        decoder_directions(_hand_weights(True)), torch.tensor([[0.6, 0.8], [0.0, 1.0], [1.0, 0.0]])
    )
    with pytest.raises(ValueError, match="d_in = 2"):
        feature_activations(_hand_weights(True), np.zeros((1, 3)))
    with pytest.raises(TypeError, match="got int"):
        feature_activations(3, x)  # type: ignore[arg-type]


def test_weights_of_a_module_a_folder_and_a_refused_folder(tmp_path) -> None:
    sae = build_sae(D_IN, chain_config(apply_b_dec_to_input=False), seed=0)
    randomise_biases(sae)
    save_sae(sae, tmp_path / "link")
    from_module, from_folder = SAEWeights.from_sae(sae), SAEWeights.load(tmp_path / "link")
    assert from_module.apply_b_dec_to_input is False and from_folder.apply_b_dec_to_input is False
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(from_module, name), getattr(from_folder, name)), name
    assert not from_module.W_enc.requires_grad  # detached
    x = torch.randn(5, D_IN)
    torch.testing.assert_close(feature_activations(tmp_path / "link", x), feature_activations(sae, x))
    cfg = json.loads((tmp_path / "link" / SAE_CFG_FILE).read_text())
    (tmp_path / "link" / SAE_CFG_FILE).write_text(
        json.dumps({**cfg, "normalize_activations": "expected_average_only_in"})
    )
    with pytest.raises(StaleArtifactError, match="normalize_activations"):
        SAEWeights.load(tmp_path / "link")


def test_load_decoder_reads_w_dec_alone_and_refuses_normalised_saes(tmp_path) -> None:
    sae = build_sae(D_IN, chain_config(), seed=4)
    save_sae(sae, tmp_path / "link")
    torch.testing.assert_close(load_decoder(tmp_path / "link"), sae.W_dec.detach(), rtol=0, atol=0)
    torch.testing.assert_close(
        load_decoder(tmp_path / "link"), SAEWeights.load(tmp_path / "link").W_dec, rtol=0, atol=0
    )
    cfg = json.loads((tmp_path / "link" / SAE_CFG_FILE).read_text())
    (tmp_path / "link" / SAE_CFG_FILE).write_text(json.dumps({**cfg, "normalize_activations": "layer_norm"}))
    with pytest.raises(StaleArtifactError, match="normalize_activations"):
        load_decoder(tmp_path / "link")
