"""The fused training step (saetrack.sae.step) against autograd on SAELens' own standard SAE, in float64."""

from __future__ import annotations

import pytest
import torch
from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig
from sae_lens.saes.sae import TrainStepInput

from saetrack.sae.step import standard_sae_step
from tests.sae.helpers import STEP_BATCH as BATCH
from tests.sae.helpers import STEP_D_IN as D_IN
from tests.sae.helpers import STEP_L1 as L1
from tests.sae.helpers import float64_batch, float64_sae, forward_backward

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("apply_b_dec", [True, False])
@pytest.mark.parametrize("decoder_norm", ["unit", "weighted"])
def test_fused_step_equals_autograd_path(decoder_norm: str, apply_b_dec: bool) -> None:
    fused, general = float64_sae(decoder_norm, apply_b_dec), float64_sae(decoder_norm, apply_b_dec)
    general.fused_step = False
    assert fused.fused_step_applies(float64_batch())
    values, grads = forward_backward(fused, float64_batch())
    expected_values, expected_grads = forward_backward(general, float64_batch())
    for key, value in values.items():
        torch.testing.assert_close(value, expected_values[key], rtol=1e-12, atol=1e-12, msg=key)
    for name, grad, expected in zip(("W_enc", "b_enc", "W_dec", "b_dec"), grads, expected_grads, strict=True):
        assert expected.abs().max() > 0, name
        torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_weighted_step_equals_sae_lens_standard_training_sae(apply_b_dec: bool) -> None:
    """Eq. 4 through the fused step has the losses and gradients of SAELens' own StandardTrainingSAE."""
    ours = float64_sae("weighted", apply_b_dec)
    cfg = StandardTrainingSAEConfig(d_in=D_IN, d_sae=ours.cfg.d_sae, dtype="float64", l1_coefficient=L1,
                                    apply_b_dec_to_input=apply_b_dec)  # fmt: skip
    theirs = StandardTrainingSAE(cfg)
    theirs.load_state_dict(ours.state_dict())
    values, grads = forward_backward(ours, float64_batch())
    theirs.zero_grad(set_to_none=True)
    step = TrainStepInput(sae_in=float64_batch(), coefficients={"l1": L1}, dead_neuron_mask=None, n_training_steps=0,
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
