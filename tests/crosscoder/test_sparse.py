"""The sparse training step equals the dense one: the same loss and gradients, and training stays on the same path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saetrack.crosscoder.model import Crosscoder, CrosscoderShape
from saetrack.crosscoder.sparse import DENSE_ABOVE, jumprelu_decode, sparse_linear, sparse_rows_times_dense

pytestmark = pytest.mark.usefixtures("one_thread")

#: Stated tolerance: loss and every gradient of the sparse step equal the dense step's to this relative error.
RTOL = 1e-4
F = 256


def _sparse_code(shape: tuple[int, int], density: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(shape, generator=g) + 0.5
    return values * (torch.rand(shape, generator=g) < density)


def _model_and_batch(seed: int, l0: float) -> tuple[Crosscoder, torch.Tensor, torch.Tensor]:
    """A crosscoder whose code has about ``l0`` active features per token, a batch, and a dead-feature mask."""
    g = torch.Generator().manual_seed(seed)
    model = Crosscoder(CrosscoderShape(5, 12, F, bandwidth=0.05), generator=g)
    x = torch.randn(96, 5, 12, generator=g) / 12**0.5
    with torch.no_grad():
        model.b_dec.normal_(0, 0.1, generator=g)
        model.W_dec.mul_(1 + torch.rand(F, 5, 1, generator=g))  # uneven norms across snapshots
        pre = model.pre_activation(x)
        thresholds = torch.quantile(pre, 1 - l0 / F, dim=0).clamp(min=1e-3)  # per feature
        model.log_threshold.copy_(thresholds.log())
    dead = torch.zeros(F, dtype=torch.bool)
    dead[::100] = True
    return model, x, dead


def _loss_and_grads(model: Crosscoder, x: torch.Tensor, dead: torch.Tensor, sparse: bool) -> tuple[float, dict]:
    model.zero_grad(set_to_none=True)
    out = model.loss(x, 0.7, 0.05, pre_act_coefficient=0.1, dead=dead, sparse=sparse)
    out.total.backward()
    return float(out.total.detach()), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("density", [0.03, 0.5])  # the sparse kernel, and the dense product above DENSE_ABOVE
def test_sparse_rows_times_dense_is_the_matrix_product(density: float) -> None:
    code = _sparse_code((40, 30), density, 0)
    dense = torch.randn(30, 17, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(sparse_rows_times_dense(code, dense), code @ dense, rtol=1e-5, atol=1e-6)
    empty = torch.zeros(3, 30)  # rows without a nonzero entry give zero rows
    assert torch.equal(sparse_rows_times_dense(empty, dense), torch.zeros(3, 17))


def test_sparse_linear_gives_the_weight_gradient_of_a_sparse_output_gradient() -> None:
    g = torch.Generator().manual_seed(2)
    x, w, b = torch.randn(20, 9, generator=g), torch.randn(9, 15, generator=g), torch.randn(15, generator=g)
    upstream = _sparse_code((20, 15), 0.05, 3)
    assert 0 < int(torch.count_nonzero(upstream)) <= DENSE_ABOVE * upstream.numel()  # the sparse kernel runs
    w1, b1 = w.clone().requires_grad_(), b.clone().requires_grad_()
    (sparse_linear(x, w1, b1) * upstream).sum().backward()
    w2, b2 = w.clone().requires_grad_(), b.clone().requires_grad_()
    ((x @ w2 + b2) * upstream).sum().backward()
    torch.testing.assert_close(w1.grad, w2.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b1.grad, b2.grad)


def test_jumprelu_decode_gives_the_code_and_its_decoding() -> None:
    g = torch.Generator().manual_seed(4)
    pre, threshold, w = torch.randn(30, 20, generator=g), torch.rand(20, generator=g), torch.randn(20, 7, generator=g)
    f, decoded = jumprelu_decode(pre, threshold, w, 0.1)
    assert torch.equal(f, pre * (pre > threshold))
    torch.testing.assert_close(decoded, f @ w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("l0", [5.0, 60.0])  # 2% dense (sparse kernels) and 23% (dense products)
def test_the_sparse_loss_and_every_gradient_equal_the_dense_ones(l0: float) -> None:
    model, x, dead = _model_and_batch(seed=5, l0=l0)
    with torch.no_grad():
        pre = model.pre_activation(x)
    near = ((pre - model.threshold) / model.shape.bandwidth).abs() < 0.5
    assert near.any()  # entries in the threshold's kernel, where the code's gradient is sampled though f = 0
    used = float(((pre > model.threshold) | near).float().mean())
    assert (used <= DENSE_ABOVE) == (l0 < 10)  # the sparse kernels run at the low L0, the dense products at the high
    dense_loss, dense_grads = _loss_and_grads(model, x, dead, sparse=False)
    sparse_loss, sparse_grads = _loss_and_grads(model, x, dead, sparse=True)
    assert sparse_loss == pytest.approx(dense_loss, rel=RTOL)
    for name, grad in dense_grads.items():
        assert grad.abs().max() > 0, name  # every parameter gets a gradient, so the comparison means something
        error = float((sparse_grads[name] - grad).norm() / grad.norm())
        assert error < RTOL, f"{name}: relative gradient error {error:.2e}"


def test_training_steps_stay_on_the_dense_path() -> None:
    """Twenty Adam steps: the sparse step with fused Adam (training's) against the dense step with Adam's loop
    (the step before it) end at the same weights to 1e-4 relative."""
    runs = []
    for sparse in (False, True):
        model, x, dead = _model_and_batch(seed=6, l0=8.0)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=sparse)
        for _ in range(20):
            out = model.loss(x, 0.7, 0.05, pre_act_coefficient=0.1, dead=dead, sparse=sparse)
            optimizer.zero_grad(set_to_none=True)
            out.total.backward()
            optimizer.step()
        runs.append({name: p.detach().clone() for name, p in model.named_parameters()})
    for name, value in runs[0].items():
        error = float((runs[1][name] - value).norm() / value.norm())
        assert error < RTOL, f"{name}: {error:.2e}"
    assert not np.allclose(runs[0]["W_dec"].numpy(), _model_and_batch(seed=6, l0=8.0)[0].W_dec.detach().numpy())
