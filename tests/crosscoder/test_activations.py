"""The crosscoder's aligned activations: one block per snapshot, resumable, restarted for another key; scales."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from saetrack import store
from saetrack.config import get_preset
from saetrack.crosscoder.activations import PROGRESS_FILE, build_aligned_activations, snapshot_moments, snapshot_scales

VOCAB, D_MODEL, STEPS = 11, 4, (4, 16, 32)
RUN = get_preset("smoke", {"cache.batch_contexts": 2, "cache.dtype": "float32"})


class FakeModel:
    """A stand-in hooked model: the activation of token ``v`` at checkpoint ``step`` is row ``v`` of a table seeded
    by the step (so every snapshot's block is different and known)."""

    def __init__(self, step: int) -> None:
        self.cfg = SimpleNamespace(d_model=D_MODEL)
        self.table = torch.randn(VOCAB, D_MODEL, generator=torch.Generator().manual_seed(step))

    def __call__(self, tokens: torch.Tensor, stop_at_layer: int) -> torch.Tensor:
        assert stop_at_layer == RUN.cache.layer
        return self.table[tokens]


class Loader:
    """``load_model`` that records which steps it was asked for and can fail at one of them."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls: list[int] = []
        self.fail_at = fail_at

    def __call__(self, step: int) -> FakeModel:
        if step == self.fail_at:
            raise RuntimeError("interrupted")
        self.calls.append(step)
        return FakeModel(step)


@pytest.fixture
def tokens() -> np.ndarray:
    return np.random.default_rng(0).integers(0, VOCAB, size=(5, 7))  # 5 contexts: batches of 2, 2 and 1


def _expected(tokens: np.ndarray) -> np.ndarray:
    """Block ``θ``, row ``c * ctx + q``: the activation of context ``c``, position ``q`` at snapshot ``θ``."""
    return np.stack([FakeModel(step).table.numpy()[tokens.reshape(-1)] for step in STEPS])


def _build(folder: Path, tokens: np.ndarray, loader: Loader, key: str = "k") -> np.ndarray:
    return build_aligned_activations(RUN, folder, tokens, STEPS, loader, key=key, progress=False)


def test_each_snapshot_block_holds_that_models_activations(tmp_path: Path, tokens: np.ndarray) -> None:
    loader = Loader()
    out = _build(tmp_path, tokens, loader)
    assert out.shape == (3, 35, D_MODEL) and out.dtype == np.float32
    np.testing.assert_array_equal(out, _expected(tokens))
    assert loader.calls == list(STEPS)
    assert store.read_json(tmp_path / PROGRESS_FILE) == {"key": "k", "done": list(STEPS), "steps": list(STEPS)}


def test_an_interrupted_build_resumes_at_the_missing_snapshots(tmp_path: Path, tokens: np.ndarray) -> None:
    with pytest.raises(RuntimeError, match="interrupted"):
        _build(tmp_path, tokens, Loader(fail_at=16))
    assert store.read_json(tmp_path / PROGRESS_FILE)["done"] == [4]
    loader = Loader()
    np.testing.assert_array_equal(_build(tmp_path, tokens, loader), _expected(tokens))
    assert loader.calls == [16, 32]  # snapshot 4 was not recomputed
    finished = Loader()
    np.testing.assert_array_equal(_build(tmp_path, tokens, finished), _expected(tokens))
    assert finished.calls == []


def test_another_key_starts_afresh(tmp_path: Path, tokens: np.ndarray) -> None:
    with pytest.raises(RuntimeError, match="interrupted"):
        _build(tmp_path, tokens, Loader(fail_at=32))
    other_tokens = (tokens + 1) % VOCAB
    loader = Loader()
    out = _build(tmp_path, other_tokens, loader, key="other")
    assert loader.calls == list(STEPS)
    np.testing.assert_array_equal(out, _expected(other_tokens))
    assert store.read_json(tmp_path / PROGRESS_FILE)["key"] == "other"


def test_snapshot_scales_are_mean_row_norms_per_snapshot() -> None:
    data = np.zeros((2, 4, 3))
    data[0, :, 0] = [1, 2, 3, 4]  # norms 1..4
    data[1] = [3.0, 4.0, 0.0]  # norm 5 everywhere
    data[1, 3] = [0.0, -6.0, 8.0]  # norm 10
    np.testing.assert_allclose(snapshot_scales(data), [2.5, 6.25])
    np.testing.assert_allclose(snapshot_scales(data, n_rows=2), [1.5, 5.0])
    data[1] = 0.0
    with pytest.raises(ValueError, match=r"not all finite and positive; the cache is broken\."):
        snapshot_scales(data)


def test_snapshot_moments_centre_each_snapshot_and_give_unit_rms_norm() -> None:
    data = np.zeros((2, 4, 3))
    data[0, :, 0] = [1, 2, 3, 4]  # mean (2.5, 0, 0); centred norms 1.5, 0.5, 0.5, 1.5 -> rms sqrt(1.25)
    data[1] = [10.0, 0.0, 0.0]  # a large shared mean direction ...
    data[1, :, 1] = [1, -1, 1, -1]  # ... and a small varying part: centred rms 1, while the mean norm is about 10
    means, rms = snapshot_moments(data)
    np.testing.assert_allclose(means, [[2.5, 0, 0], [10, 0, 0]])
    np.testing.assert_allclose(rms, [np.sqrt(1.25), 1.0])
    assert snapshot_scales(data)[1] > 10  # the uncentred scale is dominated by the mean
    centred = (data - means[:, None]) / rms[:, None, None]
    np.testing.assert_allclose(np.mean(np.sum(centred**2, axis=-1), axis=1), [1.0, 1.0])
    np.testing.assert_allclose(snapshot_moments(data, n_rows=2)[0][0], [1.5, 0, 0])
    with pytest.raises(ValueError, match=r"not all finite and positive; the cache is broken\."):
        snapshot_moments(np.ones((1, 3, 2)))
