"""The crosscoder's training step with the JumpReLU code's sparsity used: the same loss and gradients, less work.

A JumpReLU code is a few percent dense (on nano, L0 about 43 of 1024 features), yet the dense step
(:meth:`Crosscoder.loss <saetrack.crosscoder.model.Crosscoder.loss>` with autograd) multiplies full ``[B, F]``
matrices five times: the encoder forward, the decoder forward ``f W_dec``, and in the backward pass
``f^T ∂x̂`` (decoder gradient), ``∂x̂ W_dec^T`` (gradient of the code) and ``x^T ∂pre`` (encoder gradient). Only the
encoder forward needs every entry. Here

* the decoder forward and the decoder gradient sum over the *active* entries of ``f`` only (``embedding_bag`` with
  per-entry weights: a sparse-times-dense product, row bags of the code and column bags of its transpose);
* the gradient of the code is needed only where it is used: at active entries (the JumpReLU passes it to the
  pre-activation there) and at entries within half a ``bandwidth`` of the threshold (the rectangle kernel of the
  threshold's straight-through gradient, SAELens' ``JumpReLU.backward``), so it is a sampled product ``∂x̂ W_dec^T``
  on that pattern only (``torch.sparse.sampled_addmm``);
* the encoder gradient ``x^T ∂pre`` sums over the nonzero entries of ``∂pre`` (active entries, plus every token of
  the dead features that get the pre-activation loss).

Everything is float32, as the dense step. The results equal the dense step's up to the order of summation
(``tests/crosscoder/test_sparse.py`` asserts loss and every gradient to a relative 1e-4; the speed-up is measured
side by side in ``benchmarks/bench_crosscoder.py``).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "DENSE_ABOVE",
    "jumprelu_decode",
    "sparse_linear",
    "sparse_rows_times_dense",
    "squared_error",
]

#: Above this share of nonzero entries a product is computed dense (the same numbers; early in training, before the
#: sparsity penalty has warmed up, the code is a quarter dense and the sparse kernels are slower than a matmul).
DENSE_ABOVE = 0.1


def _csr(dense: torch.Tensor) -> torch.Tensor:
    """``dense.to_sparse_csr()`` without torch's one-time "beta state" warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state", category=UserWarning)
        return dense.to_sparse_csr()


def sparse_rows_times_dense(sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """``sparse @ dense`` for a mostly-zero ``[n, k]`` matrix, summing over its nonzero entries only, ``[n, m]``.

    Each row of ``sparse`` is a bag of rows of ``dense`` weighted by its nonzero values (``embedding_bag``); above
    :data:`DENSE_ABOVE` nonzero entries, the dense product.
    """
    if int(torch.count_nonzero(sparse)) > DENSE_ABOVE * sparse.numel():
        return sparse @ dense
    csr = _csr(sparse)
    return F.embedding_bag(
        csr.col_indices(),
        dense,
        csr.crow_indices(),
        mode="sum",
        per_sample_weights=csr.values(),
        include_last_offset=True,
    )


class _SparseGradLinear(torch.autograd.Function):
    """``x @ w + b`` whose backward sums ``x^T ∂out`` over the nonzero entries of ``∂out`` only (no grad for x)."""

    @staticmethod
    def forward(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.addmm(b, x, w)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        del output
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[None, torch.Tensor, torch.Tensor]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        grad_w = sparse_rows_times_dense(grad_out.t().contiguous(), x).t()
        return None, grad_w, grad_out.sum(0)


def sparse_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``x @ w + b`` (``[B, k] @ [k, F] + [F]``) for an encoder whose output gradient is mostly zero: the gradient
    of ``w`` sums over the nonzero entries of the output's gradient only; ``x`` gets no gradient."""
    return _SparseGradLinear.apply(x, w, b)


class _JumpReLUDecode(torch.autograd.Function):
    """``f = JumpReLU_τ(pre)`` and ``x̂ = f @ w_dec`` in one function, so the backward knows which entries matter."""

    @staticmethod
    def forward(  # type: ignore[override]
        pre: torch.Tensor, threshold: torch.Tensor, w_dec: torch.Tensor, bandwidth: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        f = pre * (pre > threshold)
        return f, sparse_rows_times_dense(f, w_dec)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, torch.Tensor]) -> None:
        pre, threshold, w_dec, bandwidth = inputs
        ctx.save_for_backward(pre, threshold, w_dec, output[0])
        ctx.bandwidth = bandwidth

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_f: torch.Tensor | None, grad_x_hat: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, None]:
        pre, threshold, w_dec, f = ctx.saved_tensors
        active = pre > threshold
        near = ((pre - threshold) / ctx.bandwidth).abs() < 0.5  # SAELens' rectangle kernel
        grad = torch.zeros_like(pre) if grad_f is None else grad_f
        grad_w = None
        if grad_x_hat is not None:
            used = active | near
            if used.sum() > DENSE_ABOVE * used.numel():
                grad = grad + grad_x_hat @ w_dec.t()
            else:
                sampled = torch.sparse.sampled_addmm(_csr(used.to(pre.dtype)), grad_x_hat, w_dec.t(), beta=0.0)
                grad = grad + sampled.to_dense()
            grad_w = sparse_rows_times_dense(f.t().contiguous(), grad_x_hat)
        grad_threshold = -(threshold / ctx.bandwidth) * (grad * near).sum(0)
        return grad * active, grad_threshold, grad_w, None


def jumprelu_decode(
    pre: torch.Tensor, threshold: torch.Tensor, w_dec: torch.Tensor, bandwidth: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The code ``f = JumpReLU_τ(pre)`` ``[B, F]`` and its decoding ``f @ w_dec`` ``[B, m]`` (no bias).

    Gradients as SAELens' ``JumpReLU`` (straight-through to the threshold through the rectangle kernel of width
    ``bandwidth``, none to ``pre`` outside the active entries) composed with the product, computed only where they
    are nonzero (see the module docstring).
    """
    return _JumpReLUDecode.apply(pre, threshold, w_dec, bandwidth)


class _SquaredError(torch.autograd.Function):
    """``mean_b Σ ||decoded + b_dec - x||²`` with the residual formed once and kept for the backward pass."""

    @staticmethod
    def forward(ctx: Any, decoded: torch.Tensor, b_dec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        residual = decoded.view(x.shape[0], *b_dec.shape) + b_dec
        residual -= x
        ctx.save_for_backward(residual)
        flat = residual.view(-1)
        return torch.dot(flat, flat) / x.shape[0]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:  # type: ignore[override]
        (residual,) = ctx.saved_tensors
        grad_residual = residual * (2 * grad / residual.shape[0])
        return grad_residual.view(residual.shape[0], -1), grad_residual.sum(0), None


def squared_error(decoded: torch.Tensor, b_dec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The crosscoder's reconstruction error ``mean_b Σ_θ ||x^θ - x̂^θ||²`` with ``x̂ = decoded + b_dec``
    (``decoded`` ``[B, T d]``, ``b_dec`` ``[T, d]``, ``x`` ``[B, T, d]`` or ``[B, 1, d]``), in one pass forward and one
    backward (``x`` gets no gradient)."""
    return _SquaredError.apply(decoded, b_dec, x)
