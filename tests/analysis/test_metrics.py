"""SAE quality metrics on held-out activations, with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from saetrack.analysis.metrics import ce_loss_recovered, feature_frequencies, reconstruction_metrics
from saetrack.config import ChainConfig
from saetrack.sae.model import SAETrackSAE, build_sae

D = 32
HOOK = "blocks.1.hook_resid_pre"


pytestmark = pytest.mark.usefixtures("one_thread")


def _chain(expansion: int = 2) -> ChainConfig:
    return ChainConfig(schedule=(0,), expansion_factor=expansion, decoder_norm="unit")


def perfect_sae(d: int = D) -> SAETrackSAE:
    """``d_sae = 2 d`` with features ``+e_i`` and ``-e_i``: ``ReLU(x) - ReLU(-x) = x`` reconstructs exactly."""
    sae = build_sae(d, _chain(2), seed=0)
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def zero_decoder_sae(d: int = D) -> SAETrackSAE:
    """An SAE whose reconstruction is identically 0 (zero decoder weights and bias)."""
    sae = build_sae(d, _chain(2), seed=0)
    with torch.no_grad():
        sae.W_dec.zero_()
        sae.b_dec.zero_()
    return sae


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    cfg = HookedTransformerConfig(
        n_layers=2, d_model=D, n_ctx=16, d_head=8, n_heads=4, d_mlp=64, d_vocab=50, act_fn="gelu",
        normalization_type="LN", seed=0,
    )  # fmt: skip
    model = HookedTransformer(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(30):  # learn "next token = token + 1 (mod 50)", so the residual stream carries information
        batch = _counting_tokens(32, seed=100 + step)
        loss = model(batch, return_type="loss")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def _counting_tokens(n: int, seed: int) -> torch.Tensor:
    start = torch.randint(0, 50, (n, 1), generator=torch.Generator().manual_seed(seed))
    return (start + torch.arange(16)) % 50


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return _counting_tokens(10, seed=0)


def test_perfect_sae_has_unit_explained_variance_and_known_sparsity() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, D)).astype(np.float32)
    x[:, 0] = np.abs(x[:, 0]) + 0.1  # coordinate 0 is always positive: feature -e_0 never fires
    x[:150, 1] = 5.0  # +e_1 fires on 150 / 1000 tokens ...
    x[150:, 1] = -1.0  # ... and -e_1 on the other 850
    m = reconstruction_metrics(perfect_sae(), x, batch_size=128)
    assert m["mse"] == pytest.approx(0.0, abs=1e-12) and m["mse_per_token"] == pytest.approx(0.0, abs=1e-12)
    assert m["explained_variance"] == pytest.approx(1.0, abs=1e-9)
    assert m["l0"] == pytest.approx(D)  # exactly one of +e_i, -e_i per nonzero coordinate
    assert m["l1"] == pytest.approx(np.abs(x).sum(1).mean(), rel=1e-6)
    assert m["dead_fraction"] == pytest.approx(1 / (2 * D))  # only -e_0
    freq = feature_frequencies(perfect_sae(), x, batch_size=333)
    assert freq[0] == 1.0 and freq[D] == 0.0 and freq[1] == pytest.approx(0.15) and freq[D + 1] == pytest.approx(0.85)
    expected_dense = float((freq > 0.1).mean())
    assert m["dense_fraction"] == pytest.approx(expected_dense)
    assert reconstruction_metrics(perfect_sae(), x, dense_threshold=0.5)["dense_fraction"] < expected_dense


def test_zero_decoder_explains_no_variance_of_centred_data() -> None:
    x = np.random.default_rng(1).standard_normal((512, D)) * 3.0
    x = (x - x.mean(0)).astype(np.float32)
    m = reconstruction_metrics(zero_decoder_sae(), x, batch_size=100)
    assert m["explained_variance"] == pytest.approx(0.0, abs=1e-6)
    assert m["mse_per_token"] == pytest.approx(float((x.astype(np.float64) ** 2).sum(1).mean()), rel=1e-6)
    assert m["mse"] == pytest.approx(m["mse_per_token"] / D)


def test_reconstruction_metrics_do_not_depend_on_batch_size() -> None:
    x = (np.random.default_rng(2).standard_normal((777, D)) + 4.0).astype(np.float32)
    sae = build_sae(D, _chain(4), seed=1)
    a = reconstruction_metrics(sae, x, batch_size=64)
    b = reconstruction_metrics(sae, torch.from_numpy(x), batch_size=777)
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key
    assert 0 < a["l0"] <= sae.cfg.d_sae and a["l1_weighted"] == pytest.approx(a["l1"], rel=1e-5)  # unit decoder
    with pytest.raises(ValueError, match="d_in=32"):
        reconstruction_metrics(sae, x[:, :8])


def test_ce_loss_recovered_known_answers(model: HookedTransformer, tokens: torch.Tensor) -> None:
    perfect = ce_loss_recovered(model, perfect_sae(), tokens, HOOK, batch_size=4)
    assert perfect["sae_loss"] == pytest.approx(perfect["clean_loss"], abs=1e-5)
    assert perfect["ce_recovered"] == pytest.approx(1.0, abs=1e-4)
    assert perfect["zero_loss"] > perfect["clean_loss"]
    assert perfect["n_predictions"] == 10 * 15
    zero = ce_loss_recovered(model, zero_decoder_sae(), tokens, HOOK, batch_size=3)
    assert zero["ce_recovered"] == pytest.approx(0.0, abs=1e-9)
    assert zero["clean_loss"] == pytest.approx(perfect["clean_loss"], rel=1e-6)  # batching does not matter
    clean = model(tokens, return_type="loss").item()
    assert perfect["clean_loss"] == pytest.approx(clean, rel=1e-5)


def test_ce_recovered_is_undefined_when_ablation_costs_nothing(model: HookedTransformer, tokens: torch.Tensor) -> None:
    result = ce_loss_recovered(model, perfect_sae(), tokens, HOOK, batch_size=4)
    gap = result["ablation_gap"]
    assert gap == pytest.approx(result["zero_loss"] - result["clean_loss"])
    below = ce_loss_recovered(model, perfect_sae(), tokens, HOOK, batch_size=4, min_gap=gap * 1.01)
    assert np.isnan(below["ce_recovered"]) and below["sae_loss"] == pytest.approx(result["sae_loss"])


def test_ce_loss_recovered_of_a_random_sae_is_consistent(model: HookedTransformer, tokens: torch.Tensor) -> None:
    result = ce_loss_recovered(model, build_sae(D, _chain(4), seed=0), tokens, HOOK)
    assert result["ce_delta"] == pytest.approx(result["sae_loss"] - result["clean_loss"])
    assert np.isfinite(result["ce_recovered"])
    with pytest.raises(ValueError, match="not a hook"):
        ce_loss_recovered(model, perfect_sae(), tokens, "blocks.9.hook_resid_pre")
