"""The fused training step (saetrack.sae.step) against autograd on SAELens' own standard SAE, in float64."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig
from sae_lens.saes.sae import TrainStepInput

from saetrack.config import ChainConfig
from saetrack.sae.model import SAETrackSAE, build_sae
from saetrack.sae.step import standard_sae_step

pytestmark = pytest.mark.usefixtures("one_thread")

D_IN, EXPANSION, BATCH, L1 = 12, 4, 40, 0.05


def _sae(decoder_norm: str, apply_b_dec: bool) -> SAETrackSAE:
    chain = ChainConfig(schedule=(0,), expansion_factor=EXPANSION, l1_coefficient=L1, decoder_norm=decoder_norm)
    sae = build_sae(D_IN, dataclasses.replace(chain, apply_b_dec_to_input=apply_b_dec), seed=0, dtype="float64")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # random biases and, for Eq. 4, decoder rows of different norms
        sae.b_enc.copy_(0.3 * torch.randn(sae.b_enc.shape, generator=gen, dtype=torch.float64))
        sae.b_dec.copy_(torch.randn(sae.b_dec.shape, generator=gen, dtype=torch.float64))
        if decoder_norm == "weighted":
            sae.W_dec.mul_(torch.linspace(0.5, 2.0, sae.cfg.d_sae, dtype=torch.float64)[:, None])
    return sae


def _batch(seed: int = 2) -> torch.Tensor:
    return 2 * torch.randn(BATCH, D_IN, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _step(sae: SAETrackSAE, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """Losses and parameter gradients of one training forward/backward pass."""
    sae.zero_grad(set_to_none=True)
    step = TrainStepInput(sae_in=x, coefficients={"l1": L1}, dead_neuron_mask=None, n_training_steps=0,
                          is_logging_step=False)  # fmt: skip
    out = sae.training_forward_pass(step)
    out.loss.backward()
    values = {**{k: v.detach() for k, v in out.losses.items()}, "loss": out.loss.detach()}
    values |= {"feature_acts": out.feature_acts, "sae_out": out.sae_out, "hidden_pre": out.hidden_pre}
    return values, [p.grad.clone() for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec)]


@pytest.mark.parametrize("apply_b_dec", [True, False])
@pytest.mark.parametrize("decoder_norm", ["unit", "weighted"])
def test_fused_step_equals_autograd_path(decoder_norm: str, apply_b_dec: bool) -> None:
    fused, general = _sae(decoder_norm, apply_b_dec), _sae(decoder_norm, apply_b_dec)
    general.fused_step = False
    assert fused.fused_step_applies(_batch())
    values, grads = _step(fused, _batch())
    expected_values, expected_grads = _step(general, _batch())
    for key, value in values.items():
        torch.testing.assert_close(value, expected_values[key], rtol=1e-12, atol=1e-12, msg=key)
    for name, grad, expected in zip(("W_enc", "b_enc", "W_dec", "b_dec"), grads, expected_grads, strict=True):
        assert expected.abs().max() > 0, name
        torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_weighted_step_equals_sae_lens_standard_training_sae(apply_b_dec: bool) -> None:
    """Eq. 4 through the fused step has the losses and gradients of SAELens' own StandardTrainingSAE."""
    ours = _sae("weighted", apply_b_dec)
    cfg = StandardTrainingSAEConfig(d_in=D_IN, d_sae=ours.cfg.d_sae, dtype="float64", l1_coefficient=L1,
                                    apply_b_dec_to_input=apply_b_dec)  # fmt: skip
    theirs = StandardTrainingSAE(cfg)
    theirs.load_state_dict(ours.state_dict())
    values, grads = _step(ours, _batch())
    theirs.zero_grad(set_to_none=True)
    step = TrainStepInput(sae_in=_batch(), coefficients={"l1": L1}, dead_neuron_mask=None, n_training_steps=0,
                          is_logging_step=False)  # fmt: skip
    out = theirs.training_forward_pass(step)
    out.loss.backward()
    torch.testing.assert_close(values["mse_loss"], out.losses["mse_loss"].detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(values["l1_loss"], out.losses["l1_loss"].detach(), rtol=1e-12, atol=0)
    for grad, param in zip(grads, (theirs.W_enc, theirs.b_enc, theirs.W_dec, theirs.b_dec), strict=True):
        torch.testing.assert_close(grad, param.grad, rtol=1e-10, atol=1e-12)


def test_input_gradient_matches_autograd() -> None:
    gen = torch.Generator().manual_seed(3)
    x, w_enc, b_enc, w_dec, b_dec = (
        torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=True)
        for shape in ((BATCH, D_IN), (D_IN, 32), (32,), (32, D_IN), (D_IN,))
    )
    weights = torch.rand(32, generator=gen, dtype=torch.float64, requires_grad=True)
    tensors = (x, w_enc, b_enc, w_dec, b_dec, weights)
    mse, l1, *_ = standard_sae_step(*tensors, apply_b_dec=True)
    grads = torch.autograd.grad(3 * mse + 7 * l1, tensors)
    feats = torch.relu((x - b_dec) @ w_enc + b_enc)
    ref_mse = (feats @ w_dec + b_dec - x).pow(2).sum(-1).mean()
    ref_l1 = (feats * weights).sum(-1).mean()
    expected = torch.autograd.grad(3 * ref_mse + 7 * ref_l1, tensors)
    torch.testing.assert_close(mse, ref_mse)
    for grad, ref in zip(grads, expected, strict=True):
        torch.testing.assert_close(grad, ref, rtol=1e-10, atol=1e-12)


def test_hooks_or_other_norms_use_sae_lens_path() -> None:
    sae = _sae("weighted", True)
    x = _batch()
    assert sae.fused_step_applies(x)
    handle = sae.hook_sae_acts_post.register_forward_hook(lambda module, args, out: out)
    assert not sae.fused_step_applies(x)
    handle.remove()
    assert sae.fused_step_applies(x) and not sae.fused_step_applies(x[None])
    sae.cfg.lp_norm = 2.0
    assert not sae.fused_step_applies(x)


def test_unit_decoder_renormalised_after_any_in_place_change() -> None:
    sae = _sae("unit", True)
    x = _batch()
    _step(sae, x)
    assert sae.unit_norm.is_normalized(sae.W_dec)
    with torch.no_grad():
        sae.W_dec.mul_(3.0)  # e.g. an optimizer step without train_sae's post-step hook
    assert not sae.unit_norm.is_normalized(sae.W_dec)
    _step(sae, x)
    torch.testing.assert_close(sae.W_dec.detach().norm(dim=1), torch.ones(sae.cfg.d_sae, dtype=torch.float64))
