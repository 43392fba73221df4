"""Eq. 5's unit-norm decoder constraint: row rescaling, the gradient projection, and keeping rows unit after steps."""

from __future__ import annotations

import pytest
import torch
from sae_lens.saes.sae import TrainStepInput

from saetrack.sae.model import build_sae
from saetrack.sae.unit_norm import (
    UnitNormDecoder,
    normalize_rows_,
    project_gradient,
    project_gradient_unit_rows_,
    rows_unit_norm,
)
from tests.sae.helpers import D_IN, chain_config, float64_batch, float64_sae, forward_backward

pytestmark = pytest.mark.usefixtures("one_thread")


def _random(rows: int = 12, cols: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_normalize_rows_gives_unit_rows_and_keeps_zero_rows_zero() -> None:
    w = _random() * torch.linspace(0.1, 5.0, 12, dtype=torch.float64)[:, None]
    w[3] = 0.0
    directions = w / w.norm(dim=1, keepdim=True)
    normalize_rows_(w)
    norms = w.norm(dim=1)
    torch.testing.assert_close(norms[torch.arange(12) != 3], torch.ones(11, dtype=torch.float64))
    assert torch.equal(w[3], torch.zeros(7, dtype=torch.float64))
    torch.testing.assert_close(w[:3], directions[:3])  # only the length changes
    assert not rows_unit_norm(w)  # the zero row is not of unit norm
    assert rows_unit_norm(torch.eye(3)) and not rows_unit_norm(2 * torch.eye(3))
    assert rows_unit_norm(torch.eye(3) * (1 + 1e-6)) and not rows_unit_norm(torch.eye(3) * (1 + 1e-6), tol=1e-7)


def test_project_gradient_removes_the_component_along_each_row() -> None:
    w, grad = _random(seed=1) * 3.0, _random(seed=2)
    projected = project_gradient(grad, w)
    along = (projected * w).sum(dim=1)
    torch.testing.assert_close(along, torch.zeros(12, dtype=torch.float64), rtol=0, atol=1e-12)  # orthogonal
    # what is removed is parallel to the row: grad - projected = a_i * w_i
    removed = grad - projected
    ratio = removed / w
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio))
    torch.testing.assert_close(project_gradient(projected, w), projected)  # a projection: idempotent
    # by hand: row (1, 0), gradient (3, 4) -> (0, 4)
    torch.testing.assert_close(project_gradient(torch.tensor([[3.0, 4.0]]), torch.tensor([[2.0, 0.0]])),
                               torch.tensor([[0.0, 4.0]]))  # fmt: skip


def test_unit_rows_fast_path_equals_the_general_projection() -> None:
    w, grad = _random(seed=3), _random(seed=4)
    normalize_rows_(w)
    expected = project_gradient(grad, w)
    in_place = grad.clone()
    project_gradient_unit_rows_(in_place, w)
    torch.testing.assert_close(in_place, expected, rtol=0, atol=1e-12)


def test_ensure_normalized_only_after_a_change() -> None:
    constraint = UnitNormDecoder()
    w = torch.nn.Parameter(_random(seed=5) * 2.0)
    assert not constraint.is_normalized(w)
    constraint.ensure_normalized(w)
    assert rows_unit_norm(w) and constraint.is_normalized(w)
    version = w._version
    constraint.ensure_normalized(w)  # unchanged since: no rescaling, no write
    assert w._version == version
    with torch.no_grad():
        w.mul_(3.0)  # an in-place change (e.g. an optimizer step)
    assert not constraint.is_normalized(w)
    constraint.ensure_normalized(w)
    assert rows_unit_norm(w) and constraint.is_normalized(w)
    assert not constraint.is_normalized(torch.nn.Parameter(w.detach().clone()))  # another tensor


def test_gradient_hook_is_attached_once_per_parameter() -> None:
    constraint = UnitNormDecoder()
    w = torch.nn.Parameter(_random(seed=6))
    constraint.attach_gradient_projection(w)
    constraint.attach_gradient_projection(w)  # a second call adds no second hook
    assert constraint.has_gradient_projection(w)
    assert not constraint.has_gradient_projection(torch.nn.Parameter(w.detach().clone()))
    upstream = _random(seed=7)
    (w * upstream).sum().backward()
    torch.testing.assert_close(w.grad, project_gradient(upstream, w))


def test_rows_stay_unit_after_every_optimizer_step() -> None:
    sae = build_sae(D_IN, chain_config(decoder_norm="unit"), seed=0)
    optimizer = torch.optim.Adam(sae.parameters(), lr=0.1)
    with torch.no_grad():
        sae.W_dec.mul_(2.0)
    sae.unit_norm.after_optimizer_steps(optimizer, sae)
    assert rows_unit_norm(sae.W_dec)  # rescaled at once
    for _ in range(3):
        optimizer.zero_grad()
        (sae.W_dec**3).sum().backward()  # a gradient with a component along the rows
        optimizer.step()
        assert rows_unit_norm(sae.W_dec) and sae.unit_norm.is_normalized(sae.W_dec)


def test_unit_norm_gradient_has_no_component_along_decoder_rows() -> None:
    sae = build_sae(D_IN, chain_config(decoder_norm="unit"), seed=0)
    x = torch.randn(64, D_IN) * 3
    step = TrainStepInput(sae_in=x, coefficients={"l1": 1e-3}, dead_neuron_mask=None, n_training_steps=0,
                          is_logging_step=False)  # fmt: skip
    sae.training_forward_pass(step).loss.backward()
    grad = sae.W_dec.grad
    assert grad is not None and grad.abs().max() > 0
    parallel = (grad * sae.W_dec.detach()).sum(dim=1)
    assert parallel.abs().max() < 1e-5 * grad.norm()


def test_unit_decoder_renormalised_after_any_in_place_change() -> None:
    sae = float64_sae("unit", True)
    x = float64_batch()
    forward_backward(sae, x)
    assert sae.unit_norm.is_normalized(sae.W_dec)
    with torch.no_grad():
        sae.W_dec.mul_(3.0)  # e.g. an optimizer step without train_sae's post-step hook
    assert not sae.unit_norm.is_normalized(sae.W_dec)
    forward_backward(sae, x)
    torch.testing.assert_close(sae.W_dec.detach().norm(dim=1), torch.ones(sae.cfg.d_sae, dtype=torch.float64))
