"""The SAE of SAE-Track: SAELens' standard SAE with Eq. 4 or Eq. 5 as its L1 term, seeded, and its fused-step guard."""

from __future__ import annotations

import pytest
import torch
from sae_lens import StandardTrainingSAE
from sae_lens.saes.sae import TrainStepInput

from saetrack.config import ConfigError
from saetrack.sae.model import (
    HyperparameterMismatchError,
    SAETrackSAE,
    build_sae,
    check_hyperparameters,
    with_link_hyperparameters,
)
from saetrack.sae.weights import feature_activations
from tests.sae.helpers import D_IN, chain_config, float64_batch, float64_sae, randomise_biases

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("decoder_norm, init_norm", [("unit", 1.0), ("weighted", 0.1)])
def test_build_sae_is_seeded_and_shaped(decoder_norm: str, init_norm: float) -> None:
    chain = chain_config(decoder_norm=decoder_norm)
    a = build_sae(D_IN, chain, seed=3)
    b = build_sae(D_IN, chain, seed=3)
    c = build_sae(D_IN, chain, seed=4)
    assert isinstance(a, SAETrackSAE) and a.cfg.architecture() == "standard"
    assert a.W_enc.shape == (D_IN, 4 * D_IN) and a.W_dec.shape == (4 * D_IN, D_IN)
    assert torch.equal(a.W_dec, b.W_dec) and not torch.equal(a.W_dec, c.W_dec)
    torch.testing.assert_close(a.W_dec.norm(dim=1), torch.full((4 * D_IN,), init_norm))
    assert a.cfg.l1_coefficient == chain.l1_coefficient and a.cfg.normalize_activations == "none"


def test_build_sae_does_not_touch_global_rng() -> None:
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    build_sae(D_IN, chain_config(), seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_saes_built_in_parallel_threads_keep_their_own_seeds() -> None:
    import threading

    chain = chain_config()
    expected = {seed: build_sae(D_IN, chain, seed=seed).W_dec for seed in range(8)}
    built: dict[int, torch.Tensor] = {}

    def build(seed: int) -> None:
        for _ in range(5):  # many times, so unlocked draws would interleave
            built[seed] = build_sae(D_IN, chain, seed=seed).W_dec

    threads = [threading.Thread(target=build, args=(seed,)) for seed in expected]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(torch.equal(built[seed], weights) for seed, weights in expected.items())


@pytest.mark.parametrize("decoder_norm", ["unit", "weighted"])
def test_l1_term_is_eq4_or_eq5(decoder_norm: str) -> None:
    sae = build_sae(D_IN, chain_config(decoder_norm=decoder_norm, l1_coefficient=0.5), seed=0)
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.5, 2.0, sae.cfg.d_sae)[:, None])  # non-unit rows
    x = torch.randn(32, D_IN)
    step = TrainStepInput(sae_in=x, coefficients={"l1": 0.5}, dead_neuron_mask=None, n_training_steps=0,
                          is_logging_step=False)  # fmt: skip
    out = sae.training_forward_pass(step)
    feats = feature_activations(sae, x)  # after the forward pass (which renormalises a unit-norm decoder)
    norms = sae.W_dec.detach().norm(dim=1)
    if decoder_norm == "unit":
        torch.testing.assert_close(norms, torch.ones_like(norms))
        expected_l1 = 0.5 * feats.sum(-1).mean()  # Eq. 5
    else:
        expected_l1 = 0.5 * (feats * norms).sum(-1).mean()  # Eq. 4
    torch.testing.assert_close(out.losses["l1_loss"].detach(), expected_l1)
    recon = feats @ sae.W_dec.detach() + sae.b_dec.detach()
    torch.testing.assert_close(out.losses["mse_loss"].detach(), (x - recon).pow(2).sum(-1).mean())  # Eq. 3


@pytest.mark.parametrize("decoder_norm", ["unit", "weighted"])
def test_l1_gradients_match_sae_lens_formula(decoder_norm: str) -> None:
    """The matvec/sum L1 has SAELens' ``(f * ||W_dec||).norm(p=1)`` gradients (norms are 1 for a unit decoder)."""
    sae = build_sae(D_IN, chain_config(decoder_norm=decoder_norm), seed=0)
    x = torch.randn(64, D_IN) * 2
    step = TrainStepInput(sae_in=x, coefficients={"l1": 0.3}, dead_neuron_mask=None, n_training_steps=0,
                          is_logging_step=False)  # fmt: skip
    grads = []
    for formula in ("ours", "sae_lens"):
        sae.zero_grad()
        feats, hidden = sae.encode_with_hidden_pre(x)
        if formula == "ours":
            l1 = sae.calculate_aux_loss(step, feats, hidden, sae.decode(feats))["l1_loss"]
        else:
            l1 = StandardTrainingSAE.calculate_aux_loss(sae, step, feats, hidden, sae.decode(feats))["l1_loss"]
        l1.backward()
        params = (sae.W_enc, sae.b_enc, sae.b_dec) + ((sae.W_dec,) if decoder_norm == "weighted" else ())
        grads.append([p.grad.clone() for p in params])
    for ours, theirs in zip(*grads, strict=True):
        torch.testing.assert_close(ours, theirs)


def test_hooks_or_other_norms_use_sae_lens_path() -> None:
    sae = float64_sae("weighted", True)
    x = float64_batch()
    assert sae.fused_step_applies(x)
    handle = sae.hook_sae_acts_post.register_forward_hook(lambda module, args, out: out)
    assert not sae.fused_step_applies(x)
    handle.remove()
    assert sae.fused_step_applies(x) and not sae.fused_step_applies(x[None])
    sae.cfg.lp_norm = 2.0
    assert not sae.fused_step_applies(x)


def test_check_hyperparameters_names_every_mismatch() -> None:
    sae = build_sae(D_IN, chain_config(decoder_norm="weighted", l1_coefficient=1e-3), seed=0)
    check_hyperparameters(sae, chain_config(decoder_norm="weighted", l1_coefficient=1e-3))  # matches: no error
    check_hyperparameters(sae, chain_config(decoder_norm="weighted"), l1_coefficient=1e-3)  # the link's own lambda
    with pytest.raises(
        HyperparameterMismatchError, match=r"l1_coefficient = 0\.001, expected 0\.003; decoder_norm = 'weighted', "
    ):
        check_hyperparameters(sae, chain_config(decoder_norm="unit"))


def test_link_hyperparameters_replace_the_previous_ones_and_keep_the_function() -> None:
    prev = build_sae(D_IN, chain_config(decoder_norm="weighted"), seed=0, metadata={"hook_name": "blocks.1.x"})
    randomise_biases(prev)
    nxt = with_link_hyperparameters(prev, chain_config(), l1_coefficient=2e-4, metadata={"model_revision": "step8"})
    assert isinstance(nxt, SAETrackSAE) and nxt.cfg.decoder_norm == "unit" and nxt.cfg.l1_coefficient == 2e-4
    assert nxt.cfg.metadata.hook_name == "blocks.1.x" and nxt.cfg.metadata.model_revision == "step8"
    torch.testing.assert_close(nxt.W_dec.norm(dim=1), torch.ones(nxt.cfg.d_sae))  # norms folded into the encoder
    x = torch.randn(10, D_IN, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(nxt(x), prev(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match=r"expansion_factor = 8 does not fit"):
        with_link_hyperparameters(prev, chain_config(expansion_factor=8))
    with pytest.raises(ConfigError, match="apply_b_dec_to_input"):
        with_link_hyperparameters(prev, chain_config(apply_b_dec_to_input=False))


def test_fold_decoder_norms_moves_norms_into_the_encoder() -> None:
    sae = float64_sae("weighted", True)
    x = float64_batch()
    before, norms = sae(x).detach(), sae.W_dec.detach().norm(dim=1)
    w_enc = sae.W_enc.detach().clone()
    sae.fold_decoder_norms_()
    torch.testing.assert_close(sae.W_dec.detach().norm(dim=1), torch.ones_like(norms))
    torch.testing.assert_close(sae.W_enc.detach(), w_enc * norms)
    torch.testing.assert_close(sae(x).detach(), before)
