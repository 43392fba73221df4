"""Training an SAE from an array of activations with SAELens' trainer: batches, determinism, Adam moments, NaN guard."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest
import torch

from saetrack.sae.model import SAETrackSAE, build_sae
from saetrack.sae.recurrent import recurrent_init
from saetrack.sae.training import (
    NonFiniteLossError,
    sae_trainer,
    shuffled_batches,
    synthetic_activations,
    train_sae,
)
from saetrack.sae.weights import feature_activations
from tests.sae.helpers import D_IN, chain_config

pytestmark = pytest.mark.usefixtures("one_thread")


def test_shuffled_batches_cover_each_epoch_once_from_a_memmap(tmp_path) -> None:
    rows = np.arange(1000, dtype=np.float16)[:, None].repeat(3, axis=1)
    np.save(tmp_path / "acts.npy", rows)
    memmap = np.load(tmp_path / "acts.npy", mmap_mode="r")
    it = shuffled_batches(memmap, 100, seed=5, chunk_tokens=300)
    epoch = torch.cat([next(it) for _ in range(10)])
    assert epoch.dtype == torch.float32 and epoch.shape == (1000, 3)
    assert sorted(epoch[:, 0].tolist()) == list(range(1000))
    assert not torch.equal(epoch[:, 0], torch.arange(1000, dtype=torch.float32))  # shuffled
    again = shuffled_batches(torch.from_numpy(rows), 100, seed=5, chunk_tokens=300)
    assert torch.equal(torch.cat([next(again) for _ in range(10)]), epoch)  # same order for a tensor input
    # the chunk size only changes how rows are read, never the batches
    reference = shuffled_batches(memmap, 70, seed=5, chunk_tokens=300)
    expected = [next(reference) for _ in range(40)]  # almost three epochs
    for chunk in (None, 70, 137, 5000):
        other = shuffled_batches(memmap, 70, seed=5, chunk_tokens=chunk)
        assert all(torch.equal(next(other), batch) for batch in expected), chunk
    # batches that do not divide the data straddle epochs and stay full
    odd = shuffled_batches(memmap, 300, seed=0)
    assert all(next(odd).shape == (300, 3) for _ in range(7))


def test_train_sae_is_deterministic_and_learns(data: np.ndarray) -> None:
    chain = chain_config()
    results = []
    for seed in (0, 0, 1):
        sae = build_sae(D_IN, chain, seed=0)
        results.append(
            train_sae(sae, data, n_tokens=12_000, lr=3e-3, warmup_steps=3, batch_size=256, seed=seed, progress=False)
        )
    first, same, other = results
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(first.sae, name), getattr(same.sae, name))
    assert not torch.equal(first.sae.W_dec, other.sae.W_dec)
    assert first.n_steps == 47 and first.n_tokens == 47 * 256  # ceil(12000 / 256) steps
    curve = first.loss_curve
    assert curve["step"][0] == 1 and curve["step"][-1] == 47 and curve["tokens"][-1] == first.n_tokens
    assert curve["mse_loss"][-1] < 0.5 * curve["mse_loss"][0]
    np.testing.assert_allclose(curve["lr"][:1], [1e-3])  # warm-up starts at lr / warmup_steps
    np.testing.assert_allclose(curve["lr"][-1], 3e-3)
    torch.testing.assert_close(first.sae.W_dec.norm(dim=1), torch.ones(chain.expansion_factor * D_IN))
    assert first.tokens_per_s > 0 and first.feature_frequency.shape == (chain.expansion_factor * D_IN,)
    assert first.summary()["n_steps"] == 47


def test_train_sae_carries_adam_moments_but_not_lr(data: np.ndarray) -> None:
    chain = chain_config()
    first = train_sae(build_sae(D_IN, chain, seed=0), data, n_tokens=1280, lr=1e-3, warmup_steps=0, batch_size=256,
                      seed=0, progress=False)  # fmt: skip
    link = recurrent_init(first.sae, chain)
    second = train_sae(link, data, n_tokens=512, lr=1e-4, warmup_steps=0, batch_size=256, seed=1,
                       optimizer_state=first.optimizer_state, progress=False)  # fmt: skip
    steps = [float(s["step"]) for s in second.optimizer_state["state"].values()]
    assert steps == [5.0 + 2.0] * len(steps)
    assert second.optimizer_state["param_groups"][0]["lr"] == 1e-4
    assert second.loss_curve["lr"] == [1e-4, 1e-4]
    fresh = train_sae(recurrent_init(first.sae, chain), data, n_tokens=512, lr=1e-4, warmup_steps=0, batch_size=256,
                      seed=1, progress=False)  # fmt: skip
    assert [float(s["step"]) for s in fresh.optimizer_state["state"].values()] == [2.0] * len(steps)
    assert not torch.equal(fresh.sae.W_dec, second.sae.W_dec)
    # the previous result's optimizer state is not mutated by the next link
    assert [float(s["step"]) for s in first.optimizer_state["state"].values()] == [5.0] * len(steps)


def test_train_sae_uses_each_links_l1(data: np.ndarray) -> None:
    chain = chain_config(decoder_norm="weighted")
    sae = build_sae(D_IN, chain, seed=0)
    strong = recurrent_init(sae, chain, l1_coefficient=1.0)
    weak = recurrent_init(sae, chain, l1_coefficient=1e-6)
    kw = dict(n_tokens=2560, lr=3e-3, warmup_steps=0, batch_size=256, seed=0, progress=False)
    r_strong, r_weak = train_sae(strong, data, **kw), train_sae(weak, data, **kw)
    assert r_strong.l1_coefficient == 1.0 and r_weak.l1_coefficient == 1e-6
    x = torch.from_numpy(data)
    l0_strong = (feature_activations(strong, x) > 0).float().sum(-1).mean()
    l0_weak = (feature_activations(weak, x) > 0).float().sum(-1).mean()
    assert l0_strong < 0.75 * l0_weak
    assert r_strong.feature_frequency.sum() < 0.75 * r_weak.feature_frequency.sum()


def test_non_finite_loss_names_step_and_tokens(data: np.ndarray) -> None:
    bad = data[:1024].copy()
    bad[::7] = np.inf
    with pytest.raises(NonFiniteLossError, match=r"step 1 after 256 training tokens") as info:
        train_sae(build_sae(D_IN, chain_config(), seed=0), bad, n_tokens=1024, lr=1e-3, warmup_steps=0, batch_size=256,
                  seed=0, progress=False)  # fmt: skip
    assert info.value.step == 1 and info.value.n_tokens == 256


def test_train_sae_rejects_wrong_width(data: np.ndarray) -> None:
    with pytest.raises(ValueError, match="d_in=32"):
        train_sae(build_sae(32, chain_config(), seed=0), data, n_tokens=256, lr=1e-3, warmup_steps=0, batch_size=256,
                  seed=0, progress=False)  # fmt: skip


def test_synthetic_activations_are_seeded_sparse_combinations() -> None:
    x, directions = synthetic_activations(500, 8, seed=3, noise=0.0, offset=0.0, firing_probability=0.05)
    again, _ = synthetic_activations(500, 8, seed=3, noise=0.0, offset=0.0, firing_probability=0.05)
    assert x.shape == (500, 8) and x.dtype == np.float32 and directions.shape == (32, 8)
    np.testing.assert_array_equal(x, again)
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0, rtol=1e-6)
    # without noise or offset a row is zero exactly when none of the 32 features fired: (1 - 0.05)^32 = 0.19
    assert 0.12 < np.mean(np.all(x == 0, axis=1)) < 0.27
    assert not np.array_equal(synthetic_activations(500, 8, seed=4)[0], synthetic_activations(500, 8, seed=3)[0])


def _old_train_sae(
    sae: SAETrackSAE, x: np.ndarray, *, n_tokens: int, lr: float, warmup_steps: int, batch_size: int, seed: int,
    log_every: int, optimizer_state: dict[str, Any] | None = None,
) -> tuple[dict[str, list[float]], dict[str, Any], torch.Tensor]:  # fmt: skip
    """A frozen copy of train_sae's step loop before the host syncs were taken out (one bool() per step, three
    float() per log point, the optimizer state deep-copied where it lives): the reference for bit-identity."""
    n_steps = math.ceil(n_tokens / batch_size)
    data = shuffled_batches(x, batch_size, seed=seed, dtype=sae.dtype, device=str(sae.device))
    trainer = sae_trainer(sae, data, n_steps=n_steps, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps)
    if optimizer_state is not None:
        current = trainer.optimizer.state_dict()
        current["state"] = copy.deepcopy(optimizer_state["state"])
        trainer.optimizer.load_state_dict(current)
    curve: dict[str, list[float]] = {k: [] for k in ("step", "tokens", "mse_loss", "l1_loss", "loss", "lr")}
    sae.train()
    for step in range(1, n_steps + 1):
        lr_now = trainer.optimizer.param_groups[0]["lr"]
        out = trainer.step(next(data))
        trainer.n_training_steps += 1
        assert bool(torch.isfinite(out.loss))
        if step == 1 or step % log_every == 0 or step == n_steps:
            losses = out.losses
            point = {"mse_loss": float(losses["mse_loss"].detach()), "l1_loss": float(losses["l1_loss"].detach()),
                     "loss": float(out.loss.detach())}  # fmt: skip
            for key, value in {"step": step, "tokens": trainer.n_training_samples, **point, "lr": lr_now}.items():
                curve[key].append(value)
    trainer.set_final_sae_metadata()
    sae.eval()
    return curve, copy.deepcopy(trainer.optimizer.state_dict()), trainer.feature_sparsity.detach().cpu()


@pytest.mark.parametrize("decoder_norm", ["unit", "weighted"])
def test_train_sae_is_bit_identical_to_the_loop_with_host_syncs(data: np.ndarray, decoder_norm: str) -> None:
    chain = chain_config(decoder_norm=decoder_norm)
    first_kw = dict(n_tokens=5000, lr=3e-3, warmup_steps=3, batch_size=128, seed=3)  # 40 steps, 2 windows
    new = train_sae(build_sae(D_IN, chain, seed=0), data, log_every=4, progress=False, **first_kw)
    old_sae = build_sae(D_IN, chain, seed=0)
    old_curve, old_state, old_frequency = _old_train_sae(old_sae, data, log_every=4, **first_kw)
    link_kw = dict(n_tokens=3000, lr=1e-3, warmup_steps=1, batch_size=128, seed=4, log_every=5)  # carried moments
    new_link = train_sae(recurrent_init(new.sae, chain), data, optimizer_state=new.optimizer_state, progress=False,
                         **link_kw)  # fmt: skip
    old_link = recurrent_init(old_sae, chain)
    old_link_curve, old_link_state, _ = _old_train_sae(old_link, data, optimizer_state=old_state, **link_kw)
    for result, sae, curve, state, frequency in (
        (new, old_sae, old_curve, old_state, old_frequency),
        (new_link, old_link, old_link_curve, old_link_state, None),
    ):
        assert all(torch.equal(v, sae.state_dict()[k]) for k, v in result.sae.state_dict().items())
        assert result.loss_curve == curve  # the same Python floats at the same steps
        for index, entry in state["state"].items():
            for key, value in entry.items():
                assert result.optimizer_state["state"][index][key].device.type == "cpu"
                assert torch.equal(result.optimizer_state["state"][index][key], value)
        assert frequency is None or torch.equal(result.feature_frequency, frequency)
    assert len(new.loss_curve["step"]) == 11 and new_link.loss_curve["step"] == [1, 5, 10, 15, 20, 24]


def test_train_sae_can_skip_the_optimizer_state(data: np.ndarray) -> None:
    kw = dict(n_tokens=512, lr=1e-3, warmup_steps=0, batch_size=256, seed=0, progress=False)
    kept = train_sae(build_sae(D_IN, chain_config(), seed=0), data, **kw)
    skipped = train_sae(build_sae(D_IN, chain_config(), seed=0), data, keep_optimizer_state=False, **kw)
    assert skipped.optimizer_state is None and kept.optimizer_state is not None
    assert torch.equal(kept.sae.W_dec, skipped.sae.W_dec)


def test_non_finite_loss_in_a_later_window_names_its_step(data: np.ndarray) -> None:
    batches = [torch.from_numpy(data[i * 64 : (i + 1) * 64]) for i in range(60)]
    batches[45] = batches[45].clone().fill_(math.nan)  # step 46, in the second window of 32 steps
    with pytest.raises(NonFiniteLossError, match=r"step 46 after 2944 training tokens") as info:
        train_sae(build_sae(D_IN, chain_config(), seed=0), iter(batches), n_tokens=60 * 64, lr=1e-3, warmup_steps=0,
                  batch_size=64, seed=0, log_every=1, progress=False)  # fmt: skip
    assert info.value.step == 46 and info.value.n_tokens == 46 * 64
