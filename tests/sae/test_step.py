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
from tests.sae.helpers import DeviceRecorder, float64_batch, float64_sae, forward_backward, meta_step_tensors

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


@pytest.mark.parametrize("matmul_dtype", [None, torch.bfloat16])
@pytest.mark.parametrize("project", [False, True])
def test_step_on_the_meta_device_creates_nothing_elsewhere(matmul_dtype: torch.dtype | None, project: bool) -> None:
    """Every tensor the step makes, forward and backward, stays on the input's device (no host tensor, no sync).

    With bf16 the products take the ``out_dtype`` path that CUDA runs (bf16 operands, float32 results)."""
    tensors = meta_step_tensors()
    with DeviceRecorder() as recorder:
        outputs = standard_sae_step(*tensors, apply_b_dec=True, project_decoder_grad=project, matmul_dtype=matmul_dtype)
        grads = torch.autograd.grad(outputs[0] + outputs[1], tensors)
    assert recorder.outputs and recorder.off_device("meta") == []
    assert all(t.device.type == "meta" for t in (*outputs, *grads))
    assert all(t.dtype == torch.float32 for t in (*outputs, *grads))  # float32 out, also from bf16 products
    assert [g.shape for g in grads] == [t.shape for t in tensors]
    if matmul_dtype is not None:  # the five products ran on bf16 operands
        products = [o for o in recorder.outputs if "aten.mm.dtype" in o[0]]
        assert len(products) == 6  # five, and the input gradient (x requires it here)


def _step_and_grads(matmul_dtype: torch.dtype | None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Losses and all six gradients of a seeded float32 step (Eq. 4 weights, ``c = 1``)."""
    gen = torch.Generator().manual_seed(5)
    shapes = ((64, 16), (16, 64), (64,), (64, 16), (16,))
    tensors = [torch.randn(*shape, generator=gen).requires_grad_(True) for shape in shapes]
    tensors.append(torch.rand(64, generator=gen).requires_grad_(True))
    mse, l1, _, hidden, recon = standard_sae_step(*tensors, apply_b_dec=True, matmul_dtype=matmul_dtype)
    grads = torch.autograd.grad(mse + l1, tensors)
    return [mse, l1, hidden, recon], list(grads)


def test_bf16_products_stay_close_to_float32_and_match_rounded_operands() -> None:
    exact_values, exact_grads = _step_and_grads(None)
    values, grads = _step_and_grads(torch.bfloat16)
    names = ["mse", "l1", "hidden_pre", "sae_out", "x", "W_enc", "b_enc", "W_dec", "b_dec", "l1_weights"]
    for name, got, want in zip(names, [*values, *grads], [*exact_values, *exact_grads], strict=True):
        assert got.dtype == torch.float32 and not torch.equal(got, want), name  # bf16 operands change the products
        relative = float((got - want).detach().norm() / want.detach().norm())
        # 1% in norm (a few ReLU gates flip on this untrained SAE); the input gradient, a difference of two
        # products and not used in training, 5%
        assert relative < (5e-2 if name == "x" else 1e-2), (name, relative)
    # the forward products are exactly float32 products of bf16-rounded operands
    gen = torch.Generator().manual_seed(5)
    x, w_enc, b_enc = (
        torch.randn(64, 16, generator=gen),
        torch.randn(16, 64, generator=gen),
        torch.randn(64, generator=gen),
    )
    _, b_dec = torch.randn(64, 16, generator=gen), torch.randn(16, generator=gen)
    rounded = ((x - b_dec).bfloat16().float() @ w_enc.bfloat16().float()) + b_enc
    assert torch.equal(values[2], rounded)


def test_float32_step_is_unchanged_by_the_precision_argument() -> None:
    default_values, default_grads = _step_and_grads(None)
    gen = torch.Generator().manual_seed(5)
    shapes = ((64, 16), (16, 64), (64,), (64, 16), (16,))
    tensors = [torch.randn(*shape, generator=gen).requires_grad_(True) for shape in shapes]
    tensors.append(torch.rand(64, generator=gen).requires_grad_(True))
    mse, l1, *_ = standard_sae_step(*tensors, apply_b_dec=True)  # the call of before the argument existed
    grads = torch.autograd.grad(mse + l1, tensors)
    assert torch.equal(mse, default_values[0]) and torch.equal(l1, default_values[1])
    assert all(torch.equal(a, b) for a, b in zip(grads, default_grads, strict=True))
