"""The standard SAE's training step (Eq. 1-5) as one autograd function with a hand-written backward.

Autograd on SAELens' ``StandardTrainingSAE`` spends a CPU step mostly outside the matrix products: the
bias additions, the ReLU, the L1 gradient broadcast and the ReLU gradient are separate passes over the
``[batch, d_sae]`` activations, and the gradient of ``b_dec`` through the encoder input (``c = 1`` in Eq. 2)
is computed as a full ``[batch, d_sae] @ [d_sae, d_in]`` product that is then summed over the batch.
:class:`StandardSAEStep` computes the same losses and gradients with

* forward: ``h = addmm(b_enc, x - c b_dec, W_enc)``, ``f = ReLU(h)``, ``x_hat = addmm(b_dec, f, W_dec)``;
* backward: ``g_f = addmm(g_l1 w / B, g_xhat, W_dec^T)`` (the L1 gradient enters as the bias of the product),
  ``g_h = g_f [h > 0]`` in one pass, the weight gradients ``f^T g_xhat`` and ``(x - c b_dec)^T g_h``, and
  ``g_b_dec = sum_b g_xhat - c W_enc (sum_b g_h)``: a matrix-vector product in place of a matrix product.

That is five ``B x D x F`` products per step (10 BDF FLOPs) where autograd runs six (12 BDF). The L1 weights
``w`` enter as an input, so for Eq. 4 (``w_i = lambda ||W_dec[i]||``) autograd carries their gradient on to
``W_dec``, and for Eq. 5 they are the constant ``lambda``. ``tests/sae/test_step.py`` checks losses and every
gradient against autograd on SAELens' own ``StandardTrainingSAE`` in float64, and runs the step on the meta device
(no tensor made on another device, nothing read back).

``matmul_dtype=torch.bfloat16`` (``ChainConfig.matmul_precision="bf16"``) gives the five products bfloat16 operands
with float32 accumulation and float32 results (CUDA: ``torch.mm(..., out_dtype=torch.float32)``; the CPU, which has no
such kernel, multiplies the bf16-rounded operands in float32); the rest of the step stays float32.
"""

from __future__ import annotations

from typing import Any

import torch

from saetrack.sae.unit_norm import project_gradient_unit_rows_

__all__ = [
    "StandardSAEStep",
    "standard_sae_step",
]


#: Device types whose matrix products take ``out_dtype`` (low-precision inputs, float32 output from the kernel):
#: CUDA's cuBLAS, and the meta device, which checks the same code path's shapes and dtypes without a GPU.
_NATIVE_OUT_DTYPE = ("cuda", "meta")


def _low(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` rounded to ``dtype`` (e.g. bfloat16): an operand of a low-precision product."""
    return t.to(dtype)


def _mm(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """``a @ b``; with ``dtype`` (bfloat16) the operands are rounded to ``dtype`` and products accumulate in float32.

    On CUDA the kernel takes the ``dtype`` operands and writes float32 (``out_dtype``); elsewhere (the CPU has no such
    kernel) the rounded operands are multiplied in the operands' own precision (float32 for a float32 SAE), which gives
    the same exact products of ``dtype`` values summed in float32. ``dtype=None``: the plain product.
    """
    if dtype is None:
        return a @ b
    if a.device.type in _NATIVE_OUT_DTYPE:
        return torch.mm(_low(a, dtype), _low(b, dtype), out_dtype=torch.float32)
    return torch.mm(_low(a, dtype).to(a.dtype), _low(b, dtype).to(b.dtype))


def _addmm(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """``bias + a @ b`` (bias broadcast over rows), the product as in :func:`_mm`; ``dtype=None``: ``torch.addmm``."""
    if dtype is None:
        return torch.addmm(bias, a, b)
    return _mm(a, b, dtype).add_(bias)


class StandardSAEStep(torch.autograd.Function):
    """Losses of Eq. 3 for one batch, with the gradients of the standard SAE's parameters.

    ``forward(x, W_enc, b_enc, W_dec, b_dec, l1_weights, apply_b_dec, project_decoder_grad, matmul_dtype)`` returns
    ``(mse_loss, l1_loss, feature_acts, hidden_pre, sae_out)``:

    * ``mse_loss = mean_b ||x_b - x_hat_b||^2`` (SAELens' convention: summed over ``d_in``, mean over the batch);
    * ``l1_loss = mean_b sum_i w_i f_i(x_b)``, which equals ``mean_b ||w * f(x_b)||_1`` because ``f >= 0``;
    * ``feature_acts`` ``[B, F]``, ``hidden_pre`` ``[B, F]`` and ``sae_out`` ``[B, D]``, returned for SAELens'
      bookkeeping and not differentiable.

    Gradients flow to every tensor input that requires them (``x`` included). With ``project_decoder_grad``
    the gradient of ``W_dec`` is projected onto the tangent space of unit rows: ``g_i - (g_i . w_i) w_i``.
    With ``matmul_dtype`` (``torch.bfloat16``) the five ``B x D x F`` products (two forward, three backward) take
    operands rounded to that dtype and accumulate and return float32 (:func:`_mm`); everything else (biases, ReLU,
    losses, the ``b_dec`` matrix-vector product, the weights and their gradients) stays in the inputs' precision.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        W_enc: torch.Tensor,
        b_enc: torch.Tensor,
        W_dec: torch.Tensor,
        b_dec: torch.Tensor,
        l1_weights: torch.Tensor,
        apply_b_dec: bool,
        project_decoder_grad: bool,
        matmul_dtype: torch.dtype | None,
    ) -> tuple[torch.Tensor, ...]:
        sae_in = x - b_dec if apply_b_dec else x
        hidden_pre = _addmm(b_enc, sae_in, W_enc, matmul_dtype)
        feature_acts = torch.relu(hidden_pre)
        sae_out = _addmm(b_dec, feature_acts, W_dec, matmul_dtype)
        error = sae_out - x
        batch = x.shape[0]
        mse_loss = error.pow(2).sum() / batch
        feature_sums = feature_acts.sum(0)
        l1_loss = feature_sums @ l1_weights / batch
        ctx.apply_b_dec, ctx.project_decoder_grad, ctx.matmul_dtype = apply_b_dec, project_decoder_grad, matmul_dtype
        ctx.save_for_backward(sae_in, feature_acts, error, W_enc, W_dec, l1_weights, feature_sums)
        ctx.mark_non_differentiable(feature_acts, hidden_pre, sae_out)
        ctx.set_materialize_grads(False)
        return mse_loss, l1_loss, feature_acts, hidden_pre, sae_out

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        grad_mse, grad_l1 = grads[0], grads[1]
        sae_in, feature_acts, error, W_enc, W_dec, l1_weights, feature_sums = ctx.saved_tensors
        batch = sae_in.shape[0]
        zero = sae_in.new_zeros(())
        grad_mse = zero if grad_mse is None else grad_mse
        grad_l1 = zero if grad_l1 is None else grad_l1
        grad_out = error * (2.0 * grad_mse / batch)  # d mse / d x_hat, [B, D]
        low = ctx.matmul_dtype
        grad_feats = _addmm(l1_weights * (grad_l1 / batch), grad_out, W_dec.t(), low)  # + d l1 / d f, [B, F]
        grad_hidden = torch.ops.aten.threshold_backward(grad_feats, feature_acts, 0.0)  # ReLU: f > 0 iff h > 0
        needs = ctx.needs_input_grad
        grad_b_enc_full = grad_hidden.sum(0)
        grad_x = grad_W_enc = grad_b_enc = grad_W_dec = grad_b_dec = grad_weights = None
        if needs[0]:
            grad_x = _mm(grad_hidden, W_enc.t(), low) - grad_out
        if needs[1]:
            grad_W_enc = _mm(sae_in.t(), grad_hidden, low)
        if needs[2]:
            grad_b_enc = grad_b_enc_full
        if needs[3]:
            grad_W_dec = _mm(feature_acts.t(), grad_out, low)
            if ctx.project_decoder_grad:  # unit-norm rows (Eq. 5): drop each row's gradient along the row
                project_gradient_unit_rows_(grad_W_dec, W_dec)
        if needs[4]:
            grad_b_dec = grad_out.sum(0)
            if ctx.apply_b_dec:
                grad_b_dec = grad_b_dec - W_enc @ grad_b_enc_full
        if needs[5]:
            grad_weights = feature_sums * (grad_l1 / batch)
        return grad_x, grad_W_enc, grad_b_enc, grad_W_dec, grad_b_dec, grad_weights, None, None, None


def standard_sae_step(
    x: torch.Tensor,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    W_dec: torch.Tensor,
    b_dec: torch.Tensor,
    l1_weights: torch.Tensor,
    *,
    apply_b_dec: bool,
    project_decoder_grad: bool = False,
    matmul_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(mse_loss, l1_loss, feature_acts, hidden_pre, sae_out)`` of Eq. 1-5 for the batch ``x`` ``[B, d_in]``.

    ``l1_weights`` ``[d_sae]`` are ``lambda * ||W_dec[i]||`` (Eq. 4) or ``lambda`` (Eq. 5, unit-norm decoder).
    ``project_decoder_grad`` removes from each decoder row's gradient its component along the row, the
    constraint of Eq. 5's unit-norm decoder; the rows must then have unit norm. ``matmul_dtype`` (``None`` or
    ``torch.bfloat16``): the operand precision of the five matrix products, accumulated in float32 (``None``: the
    inputs' own precision, bit for bit the plain products). See :class:`StandardSAEStep`.
    """
    if x.ndim != 2 or x.shape[1] != W_enc.shape[0]:
        raise ValueError(f"x has shape {tuple(x.shape)}, expected [batch, d_in={W_enc.shape[0]}].")
    out = StandardSAEStep.apply(
        x, W_enc, b_enc, W_dec, b_dec, l1_weights, bool(apply_b_dec), bool(project_decoder_grad), matmul_dtype
    )
    return out  # type: ignore[no-any-return]
