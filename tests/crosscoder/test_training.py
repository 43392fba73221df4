"""Training the crosscoder: a planted feature's emergence step is found; seeded, resumable, and the loss falls."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from saetrack.analysis.evolution import decoder_norm_matrix, emergence_index
from saetrack.config.crosscoder import CrosscoderConfig
from saetrack.crosscoder import training
from saetrack.crosscoder.activations import snapshot_scales
from saetrack.crosscoder.model import Crosscoder
from saetrack.crosscoder.training import (
    STATE_FILE,
    crosscoder_shape,
    learning_rate,
    norm_record_every,
    train_crosscoder,
)

pytestmark = pytest.mark.usefixtures("one_thread")

N_SNAPSHOTS, D_MODEL, EMERGES_AT = 6, 16, 3


def planted_snapshots(n_tokens: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Snapshot-major ``[6, n, 16]`` activations: four background features at every snapshot, one planted from 3 on.

    Each background feature has its own random unit direction at each snapshot; a token's (sparse, positive)
    activation of it is the same at every snapshot. The planted feature, a fixed unit direction, is added to the
    token's activation only at snapshots >= 3. Returns the activations and the planted direction.
    """
    rng = np.random.default_rng(seed)
    background = rng.standard_normal((4, N_SNAPSHOTS, D_MODEL))
    background /= np.linalg.norm(background, axis=-1, keepdims=True)
    planted = rng.standard_normal(D_MODEL)
    planted /= np.linalg.norm(planted)
    coefficients = (rng.random((n_tokens, 4)) < 0.25) * rng.uniform(1, 2, (n_tokens, 4))
    planted_coefficient = (rng.random(n_tokens) < 0.25) * rng.uniform(1, 2, n_tokens)
    x = np.einsum("nk,ktd->tnd", coefficients, background)
    x[EMERGES_AT:] += planted_coefficient[None, :, None] * planted
    return x.astype(np.float32), planted


def _small(**kwargs: object) -> CrosscoderConfig:
    return CrosscoderConfig(**{"epochs": 3, "batch_size": 32, "save_every": 1000, **kwargs})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return planted_snapshots(256, seed=1)[0]


def test_planted_feature_emerges_at_its_snapshot(tmp_path: Path) -> None:
    x, planted = planted_snapshots(4096, seed=0)
    cfg = CrosscoderConfig(epochs=30, batch_size=256, lr=3e-3, save_every=10_000)
    trained = train_crosscoder(
        x, snapshot_scales(x), cfg, 16, seed=0, state_dir=tmp_path, key="planted", progress=False
    )
    w_dec = trained.model.W_dec.detach().numpy()
    last = w_dec[:, -1]
    cosine = last @ planted / np.linalg.norm(last, axis=-1)
    best = int(np.argmax(cosine))
    assert cosine[best] > 0.99  # the crosscoder found the planted direction at the last snapshot
    norms = decoder_norm_matrix(w_dec)
    assert emergence_index(norms, cfg.emergence_fraction)[best] == EMERGES_AT
    relative = norms[best] / norms[best].max()
    assert relative[:EMERGES_AT].max() < 0.05  # absent before: its decoder norm there was driven to ~0
    assert relative[EMERGES_AT:].min() > 0.5


def test_training_is_deterministic_for_a_seed(data: np.ndarray, tmp_path: Path) -> None:
    scales = snapshot_scales(data)
    runs = [
        train_crosscoder(data, scales, _small(), 8, seed=seed, state_dir=tmp_path / name, key="k", progress=False)
        for name, seed in (("a", 3), ("b", 3), ("c", 4))
    ]
    first, again, other = (run.model.state_dict() for run in runs)
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert runs[0].curve == runs[1].curve
    assert not torch.equal(first["W_dec"], other["W_dec"])
    assert runs[0].steps == 3 * (256 // 32)


def test_loss_decreases(data: np.ndarray, tmp_path: Path) -> None:
    trained = train_crosscoder(
        data, snapshot_scales(data), _small(epochs=10), 16, seed=0, state_dir=tmp_path, key="k", progress=False
    )
    mse = trained.curve["mse"]
    assert len(mse) == trained.steps == 80  # fewer steps than curve points: every step is recorded
    assert np.mean(mse[-8:]) < 0.5 * np.mean(mse[:8])
    assert trained.curve["step"] == list(range(80))
    assert not trained.model.training  # returned in eval mode


def test_interrupted_training_resumes_to_the_same_weights(
    data: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scales = snapshot_scales(data)
    cfg = _small(save_every=5)  # 24 steps; state saved after steps 5, 10, 15, 20
    straight = train_crosscoder(data, scales, cfg, 8, seed=2, state_dir=tmp_path / "straight", key="k", progress=False)

    original = Crosscoder.loss
    calls = {"n": 0}

    def crash_at_step_13(self: Crosscoder, *args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 13:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Crosscoder, "loss", crash_at_step_13)
    folder = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        train_crosscoder(data, scales, cfg, 8, seed=2, state_dir=folder, key="k", progress=False)
    assert int(torch.load(folder / STATE_FILE, weights_only=False)["step"]) == 10
    monkeypatch.setattr(Crosscoder, "loss", original)

    resumed = train_crosscoder(data, scales, cfg, 8, seed=2, state_dir=folder, key="k", progress=False)
    expected, got = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(expected[name], got[name]) for name in expected)
    assert resumed.curve == straight.curve
    assert resumed.norm_steps.tolist() == straight.norm_steps.tolist()  # the settling records survive a resume
    np.testing.assert_array_equal(resumed.norm_records, straight.norm_records)

    # a state saved for another key is not resumed from: the run starts afresh (and equals a fresh run)
    fresh = train_crosscoder(data, scales, cfg, 8, seed=5, state_dir=tmp_path / "fresh", key="k", progress=False)
    other = train_crosscoder(data, scales, cfg, 8, seed=5, state_dir=folder, key="another", progress=False)
    assert torch.equal(fresh.model.W_dec, other.model.W_dec)


def test_too_few_tokens_for_a_batch_is_a_clear_error(data: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"has 256 training tokens, fewer than one batch of 512\."):
        train_crosscoder(data, snapshot_scales(data), _small(batch_size=512), 8, seed=0, state_dir=tmp_path, key="k")


def test_crosscoder_shape_takes_the_configs_hyperparameters() -> None:
    shape = crosscoder_shape(CrosscoderConfig(bandwidth=0.2, initial_threshold=0.3, initial_decoder_norm=0.4), 5, 6, 7)
    assert (shape.n_snapshots, shape.d_model, shape.d_sae) == (5, 6, 7)
    assert (shape.bandwidth, shape.initial_threshold, shape.initial_decoder_norm) == (0.2, 0.3, 0.4)


def test_the_learning_rate_decays_linearly_to_zero_over_the_last_share_of_the_steps() -> None:
    cfg = CrosscoderConfig(lr=1e-3, lr_decay=0.25)
    rates = [learning_rate(cfg, step, 100) for step in range(100)]
    assert rates[:75] == [1e-3] * 75  # constant until the last quarter
    assert rates[75] == pytest.approx(1e-3) and rates[99] == pytest.approx(1e-3 / 25)  # then down to lr / 25
    assert np.all(np.diff(rates[75:]) < 0)
    assert learning_rate(CrosscoderConfig(lr=1e-3, lr_decay=0.0), 99, 100) == 1e-3


def test_decoder_norms_are_recorded_for_the_settling_rule(data: np.ndarray, tmp_path: Path) -> None:
    trained = train_crosscoder(
        data, snapshot_scales(data), _small(epochs=10), 8, seed=0, state_dir=tmp_path, key="k", progress=False
    )
    every = norm_record_every(80)
    assert every == 2 and trained.norm_steps.tolist() == list(range(0, 81, every))  # from the start to the last step
    assert trained.norm_records.shape == (41, 8, N_SNAPSHOTS)
    np.testing.assert_allclose(trained.norm_records[-1], trained.model.decoder_norms().detach().numpy())
    np.testing.assert_allclose(trained.norm_records[0], 0.1, rtol=1e-6)  # the initial decoder norm


def test_one_block_read_at_every_snapshot_trains_as_the_block_repeated(data: np.ndarray, tmp_path: Path) -> None:
    """The repeated-snapshot null trains on the last block ``[1, N, d]`` with ``n_snapshots = T``: the same run as on
    that block repeated ``T`` times, to float precision."""
    block = data[-1:]
    scale = snapshot_scales(block)
    one = train_crosscoder(
        block, scale, _small(), 8, seed=1, state_dir=tmp_path / "a", key="k", n_snapshots=N_SNAPSHOTS, progress=False
    )
    repeated = np.broadcast_to(block, (N_SNAPSHOTS, *block.shape[1:]))
    full = train_crosscoder(repeated, np.repeat(scale, N_SNAPSHOTS), _small(), 8, seed=1, state_dir=tmp_path / "b",
                            key="k", progress=False)  # fmt: skip
    for name, value in full.model.state_dict().items():
        torch.testing.assert_close(one.model.state_dict()[name], value, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="data holds 2 blocks"):
        train_crosscoder(data[:2], scale, _small(), 8, seed=1, state_dir=tmp_path, key="k", n_snapshots=N_SNAPSHOTS)


def test_batches_are_the_per_step_permutation_of_before(
    data: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One permutation per epoch, sliced: the rows of every step are those the former loop drew afresh each step
    (read in sorted order, as ``_batch`` always read them; data-parallel ranks take shares of the sorted rows)."""
    seen: list[np.ndarray] = []
    original = training._batch

    def recording(data: np.ndarray, rows: np.ndarray, *args: object) -> torch.Tensor:
        seen.append(rows.copy())
        return original(data, rows, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(training, "_batch", recording)
    cfg = _small()
    train_crosscoder(data, snapshot_scales(data), cfg, 8, seed=7, state_dir=tmp_path, key="k", progress=False)
    steps_per_epoch = 256 // cfg.batch_size
    assert len(seen) == cfg.epochs * steps_per_epoch
    for step, rows in enumerate(seen):
        epoch, position = divmod(step, steps_per_epoch)
        old = np.random.default_rng([7, epoch]).permutation(256)  # the former loop, every step
        np.testing.assert_array_equal(rows, np.sort(old[position * cfg.batch_size : (position + 1) * cfg.batch_size]))
    np.testing.assert_array_equal(training.epoch_rows(7, 2, 256), np.random.default_rng([7, 2]).permutation(256))


SYNCS = ("__bool__", "__float__", "__int__", "__index__", "item", "tolist", "numpy", "cpu", "nonzero")


def test_no_step_reads_the_device_back_but_recording_ones(
    data: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every read-back of a tensor to the host (a GPU sync) happens on a step that records the curve or the decoder
    norms, never on the others. (Without the pre-activation loss: SAELens' ``calculate_pre_act_loss`` reads its
    dead-feature mask back each step.)"""
    step = {"now": -1}
    synced: list[tuple[int, str]] = []
    original = training._batch

    def counting(*args: object) -> torch.Tensor:
        step["now"] += 1
        return original(*args)  # type: ignore[arg-type]

    def patched(name: str, method: object) -> object:
        def wrapper(self: torch.Tensor, *args: object, **kwargs: object) -> object:
            synced.append((step["now"], name))
            return method(self, *args, **kwargs)  # type: ignore[operator]

        return wrapper

    def setitem(self: torch.Tensor, key: object, value: object) -> None:
        if isinstance(key, torch.Tensor) and key.dtype == torch.bool:
            synced.append((step["now"], "boolean mask"))
        return torch._C.TensorBase.__setitem__(self, key, value)

    monkeypatch.setattr(training, "_batch", counting)
    monkeypatch.setattr(training, "CURVE_POINTS", 10)
    cfg = CrosscoderConfig(epochs=10, batch_size=8, save_every=1000, pre_act_coefficient=0.0)
    for name in SYNCS:
        monkeypatch.setattr(torch.Tensor, name, patched(name, getattr(torch.Tensor, name)))
    monkeypatch.setattr(torch.Tensor, "__setitem__", setitem)
    trained = train_crosscoder(data, snapshot_scales(data), cfg, 8, seed=0, state_dir=tmp_path, key="k",
                               progress=False, sparse=False)  # fmt: skip
    total = trained.steps
    assert total == 320
    records, norms = max(1, total // 10), norm_record_every(total)
    allowed = {s for s in range(total) if s % records == 0 or (s + 1) % norms == 0 or s == total - 1}
    assert len(allowed) < total / 5
    outside = sorted({(s, name) for s, name in synced if s >= 0 and s not in allowed})
    assert synced and not outside, outside[:5]


def test_a_non_finite_loss_stops_training_before_the_state_is_saved(
    data: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Crosscoder.loss
    calls = {"n": 0}

    def nan_from_step_3(self: Crosscoder, *args: object, **kwargs: object) -> object:
        out = original(self, *args, **kwargs)  # type: ignore[arg-type]
        calls["n"] += 1
        if calls["n"] == 4:  # step 3 (0-based)
            return dataclasses.replace(out, total=out.total * float("nan"))
        return out

    monkeypatch.setattr(Crosscoder, "loss", nan_from_step_3)
    monkeypatch.setattr(training, "CURVE_POINTS", 2)  # 24 steps: the curve is recorded at steps 0, 12 and 23
    with pytest.raises(training.NonFiniteCrosscoderLossError, match="after step 1, by step 5") as error:
        train_crosscoder(data, snapshot_scales(data), _small(save_every=5), 8, seed=0, state_dir=tmp_path, key="k",
                         progress=False)  # fmt: skip
    assert (error.value.after, error.value.by) == (1, 5)  # found where the state would have been saved
    assert not (tmp_path / STATE_FILE).exists()


def test_batches_go_to_an_accelerator_pinned_and_asynchronously(monkeypatch: pytest.MonkeyPatch) -> None:
    data = np.arange(2 * 6 * 3, dtype=np.float32).reshape(2, 6, 3)
    pinned: list[bool] = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: pinned.append(True) or self)
    norm = (torch.ones(2, device="meta"), None)
    x = training._batch(data, np.array([4, 1]), norm, "meta")
    assert pinned == [True] and x.shape == (2, 2, 3) and x.device.type == "meta"
    cpu = training._batch(data, np.array([4, 1]), (torch.tensor([1.0, 2.0]), torch.ones(2, 3)), "cpu")
    assert pinned == [True]  # not on the CPU
    np.testing.assert_array_equal(
        cpu.numpy(), (data[:, [1, 4]].transpose(1, 0, 2) - 1) / np.array([1, 2])[None, :, None]
    )
