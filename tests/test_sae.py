"""The SAE core: SAELens standard SAE (Eq. 1-5), saving/reloading with the L1 guard, and training from arrays."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from sae_lens import SAE, StandardSAE, StandardTrainingSAE, TrainingSAE
from sae_lens.saes.sae import TrainStepInput

from saetrack.config import ChainConfig, ConfigError
from saetrack.sae.io import SAE_CFG_FILE, SAE_SPARSITY_FILE, SAE_WEIGHTS_FILE, load_training_sae, save_sae
from saetrack.sae.model import HyperparameterMismatchError, SAETrackSAE, build_sae, check_hyperparameters
from saetrack.sae.recurrent import recurrent_init
from saetrack.sae.training import NonFiniteLossError, shuffled_batches, synthetic_activations, train_sae
from saetrack.sae.weights import SAEWeights, decoder_directions, feature_activations

D_IN = 16


def _chain(**overrides: object) -> ChainConfig:
    base = ChainConfig(schedule=(0, 1, 2), expansion_factor=4, l1_coefficient=3e-3, decoder_norm="unit")
    return dataclasses.replace(base, **overrides)


def _randomise_biases(sae: SAETrackSAE, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.b_enc.copy_(0.1 * torch.randn(sae.b_enc.shape, generator=gen))
        sae.b_dec.copy_(torch.randn(sae.b_dec.shape, generator=gen))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    x, _ = synthetic_activations(6000, D_IN, seed=1)
    return x


# ----------------------------------------------------------------------------------------------
# Building and the two L1 variants
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("decoder_norm, init_norm", [("unit", 1.0), ("weighted", 0.1)])
def test_build_sae_is_seeded_and_shaped(decoder_norm: str, init_norm: float) -> None:
    chain = _chain(decoder_norm=decoder_norm)
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
    build_sae(D_IN, _chain(), seed=0)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("decoder_norm", ["unit", "weighted"])
def test_l1_term_is_eq4_or_eq5(decoder_norm: str) -> None:
    sae = build_sae(D_IN, _chain(decoder_norm=decoder_norm, l1_coefficient=0.5), seed=0)
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


def test_unit_norm_gradient_has_no_component_along_decoder_rows() -> None:
    sae = build_sae(D_IN, _chain(decoder_norm="unit"), seed=0)
    x = torch.randn(64, D_IN) * 3
    step = TrainStepInput(sae_in=x, coefficients={"l1": 1e-3}, dead_neuron_mask=None, n_training_steps=0,
                          is_logging_step=False)  # fmt: skip
    sae.training_forward_pass(step).loss.backward()
    grad = sae.W_dec.grad
    assert grad is not None and grad.abs().max() > 0
    parallel = (grad * sae.W_dec.detach()).sum(dim=1)
    assert parallel.abs().max() < 1e-5 * grad.norm()


# ----------------------------------------------------------------------------------------------
# Saving, loading for inference, and the L1-coefficient reload trap
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_saved_sae_loads_in_sae_lens_with_same_encoding(tmp_path, apply_b_dec: bool) -> None:
    sae = build_sae(D_IN, _chain(apply_b_dec_to_input=apply_b_dec), seed=0, metadata={"hook_name": "blocks.1.x"})
    _randomise_biases(sae)
    hashes = save_sae(sae, tmp_path / "link", feature_sparsity=np.full(sae.cfg.d_sae, 0.01))
    assert set(hashes) == {SAE_CFG_FILE, SAE_WEIGHTS_FILE, SAE_SPARSITY_FILE}
    loaded = SAE.load_from_disk(tmp_path / "link")
    assert isinstance(loaded, StandardSAE) and loaded.cfg.metadata.hook_name == "blocks.1.x"
    x = torch.randn(50, D_IN) * 2
    ours = torch.relu((x - float(apply_b_dec) * sae.b_dec) @ sae.W_enc + sae.b_enc).detach()  # Eq. 2
    torch.testing.assert_close(feature_activations(sae, x), ours, rtol=0, atol=0)
    torch.testing.assert_close(loaded.encode(x), ours, rtol=0, atol=0)
    torch.testing.assert_close(feature_activations(tmp_path / "link", x), ours, rtol=0, atol=0)
    torch.testing.assert_close(loaded.decode(ours), ours @ sae.W_dec.detach() + sae.b_dec.detach())


def test_save_sae_replaces_existing_folder_atomically(tmp_path) -> None:
    folder = tmp_path / "link"
    folder.mkdir()
    (folder / "stale.txt").write_text("old")
    save_sae(build_sae(D_IN, _chain(), seed=0), folder)
    assert sorted(p.name for p in folder.iterdir()) == [SAE_CFG_FILE, SAE_WEIGHTS_FILE]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_sae_lens_reload_trap_exists_and_is_guarded(tmp_path) -> None:
    """sae_lens 6.54: an SAE saved for inference reloads as a training SAE with l1_coefficient = 1.0."""
    chain = _chain(l1_coefficient=8e-5)
    sae = build_sae(D_IN, chain, seed=0)
    sae.save_inference_model(tmp_path / "inference")  # what SAELens' runner writes at the end of training
    trapped = TrainingSAE.load_from_disk(tmp_path / "inference")
    assert trapped.cfg.l1_coefficient == 1.0  # the trap
    with pytest.raises(HyperparameterMismatchError, match="l1_coefficient"):
        check_hyperparameters(trapped, chain)
    reloaded = load_training_sae(tmp_path / "inference", chain)
    assert reloaded.cfg.l1_coefficient == 8e-5
    assert torch.equal(reloaded.W_dec, sae.W_dec) and torch.equal(reloaded.W_enc, sae.W_enc)
    # a link's own coefficient wins over the one saved with the previous link
    save_sae(sae, tmp_path / "full")
    assert load_training_sae(tmp_path / "full", chain, l1_coefficient=2e-4).cfg.l1_coefficient == 2e-4


def test_load_training_sae_rejects_incompatible_chain(tmp_path) -> None:
    save_sae(build_sae(D_IN, _chain(), seed=0), tmp_path / "link")
    with pytest.raises(ConfigError, match="expansion_factor"):
        load_training_sae(tmp_path / "link", _chain(expansion_factor=8))
    with pytest.raises(ConfigError, match="apply_b_dec_to_input"):
        load_training_sae(tmp_path / "link", _chain(apply_b_dec_to_input=False))
    with pytest.raises(FileNotFoundError, match="holds no SAELens SAE"):
        load_training_sae(tmp_path / "missing", _chain())


def test_init_from_copies_weights_with_new_hyperparameters() -> None:
    prev = build_sae(D_IN, _chain(decoder_norm="weighted", l1_coefficient=1e-3), seed=0)
    _randomise_biases(prev)
    nxt = recurrent_init(prev, _chain(decoder_norm="weighted"), l1_coefficient=5e-4)
    assert nxt is not prev and nxt.cfg.l1_coefficient == 5e-4
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(nxt, name), getattr(prev, name))
        assert getattr(nxt, name).data_ptr() != getattr(prev, name).data_ptr()
    # a weighted SAE seeding a unit-norm link: norms are folded into the encoder, the function is unchanged
    unit = recurrent_init(prev, _chain(decoder_norm="unit"))
    torch.testing.assert_close(unit.W_dec.norm(dim=1), torch.ones(unit.cfg.d_sae))
    x = torch.randn(20, D_IN)
    torch.testing.assert_close(unit(x), prev(x), rtol=1e-5, atol=1e-5)


def test_decoder_directions_and_weights_roundtrip(tmp_path) -> None:
    sae = build_sae(D_IN, _chain(decoder_norm="weighted"), seed=0)
    dirs = decoder_directions(sae)
    assert dirs.shape == (sae.cfg.d_sae, D_IN)
    torch.testing.assert_close(dirs.norm(dim=1), torch.ones(sae.cfg.d_sae))
    save_sae(sae, tmp_path / "w")
    torch.testing.assert_close(decoder_directions(SAEWeights.load(tmp_path / "w")), dirs)


# ----------------------------------------------------------------------------------------------
# Training with SAELens' trainer
# ----------------------------------------------------------------------------------------------


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
    chain = _chain()
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
    chain = _chain()
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
    chain = _chain(decoder_norm="weighted")
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
        train_sae(build_sae(D_IN, _chain(), seed=0), bad, n_tokens=1024, lr=1e-3, warmup_steps=0, batch_size=256,
                  seed=0, progress=False)  # fmt: skip
    assert info.value.step == 1 and info.value.n_tokens == 256


def test_train_sae_rejects_wrong_width(data: np.ndarray) -> None:
    with pytest.raises(ValueError, match="d_in=32"):
        train_sae(build_sae(32, _chain(), seed=0), data, n_tokens=256, lr=1e-3, warmup_steps=0, batch_size=256,
                  seed=0, progress=False)  # fmt: skip


def test_trained_link_saves_and_resumes(tmp_path, data: np.ndarray) -> None:
    chain = _chain()
    result = train_sae(build_sae(D_IN, chain, seed=0), data, n_tokens=1024, lr=1e-3, warmup_steps=0, batch_size=256,
                       seed=0, progress=False)  # fmt: skip
    save_sae(result.sae, tmp_path / "step0", feature_sparsity=result.feature_frequency)
    resumed = load_training_sae(tmp_path / "step0", chain, l1_coefficient=1e-3)
    assert torch.equal(resumed.W_dec, result.sae.W_dec) and resumed.cfg.l1_coefficient == 1e-3
    inference = SAE.load_from_disk(tmp_path / "step0")
    x = torch.from_numpy(data[:100])
    torch.testing.assert_close(inference.encode(x), feature_activations(result.sae, x), rtol=0, atol=0)


@pytest.mark.parametrize("decoder_norm", ["unit", "weighted"])
def test_l1_gradients_match_sae_lens_formula(decoder_norm: str) -> None:
    """The matvec/sum L1 has SAELens' ``(f * ||W_dec||).norm(p=1)`` gradients (norms are 1 for a unit decoder)."""
    sae = build_sae(D_IN, _chain(decoder_norm=decoder_norm), seed=0)
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
