"""The crosscoder's maths on hand-sized examples: shapes, JumpReLU, decode, the loss terms, the threshold gradient."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from saetrack.crosscoder.model import Crosscoder, CrosscoderShape

pytestmark = pytest.mark.usefixtures("one_thread")

T, D, F = 3, 4, 5


def _model(seed: int = 0, **kwargs: float) -> Crosscoder:
    return Crosscoder(CrosscoderShape(T, D, F, **kwargs), generator=torch.Generator().manual_seed(seed))


def test_shapes_and_initialisation() -> None:
    model = _model(initial_threshold=0.2, initial_decoder_norm=0.3)
    assert model.W_enc.shape == (T, D, F) and model.W_dec.shape == (F, T, D)
    assert model.b_enc.shape == (F,) and model.b_dec.shape == (T, D) and model.log_threshold.shape == (F,)
    torch.testing.assert_close(model.decoder_norms(), torch.full((F, T), 0.3))
    torch.testing.assert_close(model.threshold, torch.full((F,), 0.2))
    # the encoder starts as the decoder transposed, so its rows have norm 1/sqrt(T) at every snapshot
    torch.testing.assert_close(model.W_enc.norm(dim=1), torch.full((T, F), 1 / math.sqrt(T)))
    x = torch.randn(7, T, D)
    assert model.pre_activation(x).shape == (7, F) and model.encode(x).shape == (7, F)
    assert model(x).shape == (7, T, D)
    with pytest.raises(ValueError, match=r"shape \(7, 4, 4\), expected \[batch, 3, 4\]"):
        model(torch.randn(7, 4, D))
    assert torch.equal(_model(seed=1).W_dec, _model(seed=1).W_dec)
    assert not torch.equal(_model(seed=1).W_dec, _model(seed=2).W_dec)


@pytest.mark.parametrize("field", ["n_snapshots", "d_model", "d_sae"])
def test_shape_rejects_non_positive_sizes(field: str) -> None:
    sizes = {"n_snapshots": T, "d_model": D, "d_sae": F, field: 0}
    with pytest.raises(ValueError, match=rf"crosscoder {field} = 0 is invalid: must be >= 1\."):
        CrosscoderShape(**sizes)
    with pytest.raises(ValueError, match=r"crosscoder bandwidth = 0.0 is invalid: must be > 0\."):
        CrosscoderShape(T, D, F, bandwidth=0.0)


def test_pre_activation_sums_every_snapshots_projection() -> None:
    model = _model()
    with torch.no_grad():
        model.b_enc.copy_(torch.arange(F, dtype=torch.float32))
    x = torch.randn(6, T, D)
    expected = sum(x[:, t] @ model.W_enc[t] for t in range(T)) + model.b_enc
    torch.testing.assert_close(model.pre_activation(x), expected)


def test_encode_is_jumprelu_of_the_pre_activation() -> None:
    model = _model()
    with torch.no_grad():
        model.log_threshold.copy_(torch.log(torch.tensor([0.01, 0.1, 0.3, 0.5, 1.0])))
    x = torch.randn(64, T, D)
    pre, f = model.pre_activation(x), model.encode(x)
    above = pre > model.threshold
    assert above.any() and (~above).any()  # both sides of the threshold are exercised
    assert torch.equal(f[above], pre[above])
    assert torch.all(f[~above] == 0)


def test_decode_of_zero_activations_is_the_decoder_bias() -> None:
    model = _model()
    with torch.no_grad():
        model.b_dec.copy_(torch.randn(T, D))
    out = model.decode(torch.zeros(4, F))
    assert torch.equal(out, model.b_dec.expand(4, T, D))
    one_hot = torch.zeros(1, F)
    one_hot[0, 2] = 2.0
    torch.testing.assert_close(model.decode(one_hot)[0], 2.0 * model.W_dec[2] + model.b_dec)


def _hand_loss(model: Crosscoder, x: torch.Tensor, lam: float, c: float) -> tuple[float, float, float]:
    """The loss of Ge et al. in numpy, one token and one feature at a time."""
    w_enc, b_enc = model.W_enc.detach().double().numpy(), model.b_enc.detach().double().numpy()
    w_dec, b_dec = model.W_dec.detach().double().numpy(), model.b_dec.detach().double().numpy()
    tau = model.threshold.detach().double().numpy()
    xs = x.double().numpy()
    mse = sparsity = 0.0
    for token in xs:
        pre = np.einsum("td,tdf->f", token, w_enc) + b_enc
        f = np.where(pre > tau, pre, 0.0)
        x_hat = np.einsum("f,ftd->td", f, w_dec) + b_dec
        mse += sum(float(np.sum((token[t] - x_hat[t]) ** 2)) for t in range(T))
        sparsity += sum(math.tanh(c * f[i] * sum(np.linalg.norm(w_dec[i, t]) for t in range(T))) for i in range(F))
    n = len(xs)
    return mse / n, sparsity / n, mse / n + lam * sparsity / n


def test_loss_terms_equal_a_hand_computation() -> None:
    model = _model(initial_threshold=0.1)
    with torch.no_grad():
        model.W_dec.mul_(torch.rand(F, T, 1, generator=torch.Generator().manual_seed(3)) * 10)  # unequal norms
        model.b_dec.copy_(0.1 * torch.randn(T, D))
    x = torch.randn(8, T, D, generator=torch.Generator().manual_seed(4))
    out = model.loss(x, sparsity_coefficient=0.7, tanh_scale=0.5)
    mse, sparsity, total = _hand_loss(model, x, 0.7, 0.5)
    assert out.sparsity > 0 and out.l0 > 0
    assert float(out.mse) == pytest.approx(mse, rel=1e-5)
    assert float(out.sparsity) == pytest.approx(sparsity, rel=1e-5)
    assert out.total.item() == pytest.approx(total, rel=1e-5)
    f = model.encode(x)
    assert float(out.l0) == pytest.approx(float((f > 0).sum()) / 8)
    assert torch.equal(out.activations, f.detach()) and not out.activations.requires_grad


def test_threshold_gets_the_straight_through_gradient_within_half_a_bandwidth() -> None:
    model = Crosscoder(CrosscoderShape(1, 1, 2, bandwidth=0.1, initial_threshold=0.5))
    with torch.no_grad():
        model.W_enc.fill_(1.0)
        model.b_enc.zero_()
    # feature pre-activations equal the input: 0.53 is within bandwidth/2 of tau = 0.5, so both features get
    # d f / d tau = -(tau / bandwidth), through log tau: * tau; 0.7 is outside the kernel and gives none
    model.encode(torch.tensor([[[0.53]], [[0.7]]])).sum().backward()
    assert model.log_threshold.grad is not None
    expected = -(0.5 / 0.1) * 0.5
    torch.testing.assert_close(model.log_threshold.grad, torch.full((2,), expected))
    model.zero_grad()
    model.encode(torch.tensor([[[0.47]]])).sum().backward()  # below tau, still within the kernel: same gradient
    torch.testing.assert_close(model.log_threshold.grad, torch.full((2,), expected))
    model.zero_grad()
    model.encode(torch.tensor([[[0.7]], [[0.2]]])).sum().backward()
    assert torch.equal(model.log_threshold.grad, torch.zeros(2))


def test_pre_activation_loss_acts_only_on_dead_features() -> None:
    model = _model(initial_threshold=0.3)
    x = torch.randn(16, T, D, generator=torch.Generator().manual_seed(5))
    plain = model.loss(x, 1.0, 0.05)
    assert model.loss(x, 1.0, 0.05, pre_act_coefficient=0.5).total.item() == plain.total.item()  # no mask
    none_dead = torch.zeros(F, dtype=torch.bool)
    assert model.loss(x, 1.0, 0.05, pre_act_coefficient=0.5, dead=none_dead).total.item() == plain.total.item()
    dead = torch.tensor([True, False, True, False, False])
    assert model.loss(x, 1.0, 0.05, pre_act_coefficient=0.0, dead=dead).total.item() == plain.total.item()
    with_dead = model.loss(x, 1.0, 0.05, pre_act_coefficient=0.5, dead=dead)
    # 0.5 * mean over tokens of sum over dead features of ReLU(tau - pre) * sum_theta ||W_dec,i^theta||
    pre = model.pre_activation(x).detach()
    weight = model.decoder_norms().detach().sum(dim=1)
    hand = 0.5 * ((0.3 - pre).clamp(min=0) * dead * weight).sum(dim=1).mean()
    assert float(hand) > 0
    assert with_dead.total.item() == pytest.approx(plain.total.item() + float(hand), rel=1e-6)
    # its gradient reaches the dead features' encoder, not the live ones'
    model.zero_grad()
    (with_dead.total - plain.total).backward()
    assert model.W_enc.grad is not None
    assert torch.all(model.W_enc.grad[:, :, ~dead] == 0) and model.W_enc.grad[:, :, dead].abs().sum() > 0


@pytest.mark.parametrize("sparse", [False, True])
def test_the_loss_is_invariant_under_a_joint_permutation_of_the_snapshots(sparse: bool) -> None:
    """Permuting the snapshots of the input and of every per-snapshot block (encoder, decoder, decoder bias) together
    leaves the loss unchanged and permutes the gradients alike: the basis of the permuted-label null (ii), which then
    needs no retraining (the initialisation draws every snapshot's block i.i.d.)."""
    g = torch.Generator().manual_seed(7)
    model = Crosscoder(CrosscoderShape(6, D, 16, initial_threshold=0.05), generator=g)
    with torch.no_grad():
        model.b_dec.normal_(0, 0.2, generator=g)
        model.b_enc.normal_(0, 0.1, generator=g)
    x = torch.randn(40, 6, D, generator=g)
    dead = torch.zeros(16, dtype=torch.bool)
    dead[3] = True
    order = torch.tensor([4, 0, 5, 2, 1, 3])
    permuted = Crosscoder(CrosscoderShape(6, D, 16, initial_threshold=0.05))
    with torch.no_grad():
        permuted.W_enc.copy_(model.W_enc[order])
        permuted.W_dec.copy_(model.W_dec[:, order])
        permuted.b_dec.copy_(model.b_dec[order])
        permuted.b_enc.copy_(model.b_enc)
        permuted.log_threshold.copy_(model.log_threshold)
    losses, grads = [], []
    for m, inputs in ((model, x), (permuted, x[:, order])):
        out = m.loss(inputs, 0.8, 0.05, pre_act_coefficient=0.1, dead=dead, sparse=sparse)
        out.total.backward()
        losses.append(out.total.detach())
        grads.append({name: p.grad for name, p in m.named_parameters()})
    assert 0 < float(grads[0]["W_dec"].abs().max())  # gradients are there to compare
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grads[1]["W_enc"], grads[0]["W_enc"][order], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grads[1]["W_dec"], grads[0]["W_dec"][:, order], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grads[1]["b_dec"], grads[0]["b_dec"][order], rtol=1e-5, atol=1e-7)
    for name in ("b_enc", "log_threshold"):  # shared across snapshots: unchanged
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("sparse", [False, True])
def test_one_block_read_at_every_snapshot_is_the_block_repeated(sparse: bool) -> None:
    """``x`` ``[B, 1, d]`` gives the loss and gradients of the same activation repeated at all ``T`` snapshots (the
    repeated-snapshot null trains this way, with the encoder's work divided by ``T``)."""
    g = torch.Generator().manual_seed(8)
    x = torch.randn(30, 1, D, generator=g)
    results = []
    for inputs in (x, x.expand(30, T, D).contiguous()):
        model = _model(seed=9)
        out = model.loss(inputs, 0.8, 0.05, pre_act_coefficient=0.1, dead=torch.tensor([True] + [False] * (F - 1)),
                         sparse=sparse)  # fmt: skip
        out.total.backward()
        results.append((out.total.detach(), {name: p.grad for name, p in model.named_parameters()}))
    (one, one_grads), (repeated, repeated_grads) = results
    torch.testing.assert_close(one, repeated, rtol=1e-6, atol=1e-6)
    for name, grad in repeated_grads.items():
        torch.testing.assert_close(one_grads[name], grad, rtol=1e-5, atol=1e-6)
    assert _model().pre_activation(x).shape == (30, F)
    with pytest.raises(ValueError, match=r"expected \[batch, 3, 4\] \(or \[batch, 1, 4\]"):
        _model().pre_activation(torch.randn(2, 2, D))


@pytest.mark.parametrize("n_dead", [0, 3])
def test_the_pre_act_loss_is_saelens_without_asking_whether_a_feature_is_dead(n_dead: int, monkeypatch) -> None:
    from sae_lens.saes.jumprelu_sae import calculate_pre_act_loss

    from saetrack.crosscoder.model import pre_act_loss

    gen = torch.Generator().manual_seed(0)
    pre = torch.randn(16, 10, generator=gen, requires_grad=True)
    threshold, weight = torch.rand(10, generator=gen), torch.rand(10, generator=gen)
    dead = torch.arange(10) < n_dead
    ours = pre_act_loss(0.1, threshold, pre, dead, weight)
    (grad,) = torch.autograd.grad(ours, pre)
    theirs = calculate_pre_act_loss(0.1, threshold, pre, dead, weight)
    assert torch.equal(ours.detach(), theirs.detach())
    if n_dead:
        assert torch.equal(grad, torch.autograd.grad(theirs, pre)[0])
    else:
        assert not grad.any()  # no dead feature: no gradient, as SAELens' constant zero gives none
    calls = []
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda self: calls.append(1) or True)
    pre_act_loss(0.1, threshold, pre, dead, weight)
    assert not calls  # nothing read back to the host
