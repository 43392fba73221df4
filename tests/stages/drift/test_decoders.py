"""The drift stage's per-link decoder pass against the former stacked float64 path, its memory bound and formula."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

from saetrack.analysis import drift as dr
from saetrack.config import RunConfig
from saetrack.sae.io import save_sae
from saetrack.sae.model import build_sae
from saetrack.stages.drift import decoder_stack
from saetrack.stages.drift import decoders as dec
from saetrack.stages.drift.trajectories import trajectory_arrays

D_IN = 16


def _chain(smoke: RunConfig, folder: Path, steps: tuple[int, ...] = (0, 2, 5, 9, 20)) -> dict[int, Path]:
    """Links saved as SAELens folders whose decoders drift towards the last one (random, seeded), with a zero row at
    the first link and at the final one, saved in shuffled step order."""
    rng = np.random.default_rng(0)
    d_sae = D_IN * smoke.chain.expansion_factor
    final = rng.standard_normal((d_sae, D_IN)).astype(np.float32)
    folders = {}
    for t, step in enumerate(reversed(steps)):
        sae = build_sae(D_IN, smoke.chain, seed=t)
        w = final + t * 0.4 * rng.standard_normal(final.shape).astype(np.float32) * rng.uniform(0.1, 3.0)
        if t in (0, len(steps) - 1):
            w[3 if t else 5] = 0.0  # a zero vector (row 5 at the final link, row 3 at the first): NaN
        sae.W_dec.data = torch.from_numpy(w)
        save_sae(sae, folder / f"step{step}")
        folders[step] = folder / f"step{step}"
    return folders


def _old_path(folders: dict[int, Path], features: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The drift stage before the per-link pass: the ``[T, F, d]`` stack and its float64 cosine to final."""
    stack = decoder_stack(folders, progress=False)
    return dr.cosine_to_final(stack), stack[:, features]


def test_per_link_pass_equals_the_stacked_float64_path(smoke: RunConfig, tmp_path: Path) -> None:
    folders = _chain(smoke, tmp_path)
    features = [7, 0, 3, 40]
    cosine, rows = dec.link_drift(folders, features, progress=False)
    old_cosine, old_rows = _old_path(folders, features)
    assert cosine.shape == old_cosine.shape == (5, D_IN * smoke.chain.expansion_factor)
    np.testing.assert_array_equal(cosine, old_cosine)  # bit for bit on the CPU, NaN where the old path had NaN
    assert np.isnan(cosine[:, 5]).all() and np.isnan(cosine[0, 3]) and not np.isnan(cosine[1:, 3]).any()
    assert np.nanmin(cosine[:-1]) < 0.9 and np.nanmax(np.abs(cosine[-1] - 1.0)) < 1e-12
    np.testing.assert_array_equal(rows, old_rows)  # decoder rows exactly as saved, in step order
    assert rows.dtype == np.float32
    # Fig. 7's arrays from the rows are those the stack gave, bit for bit
    new, old = trajectory_arrays(rows, [2, 0, -1, 4], 3), trajectory_arrays(old_rows, [2, 0, -1, 4], 3)
    for name in old:
        np.testing.assert_array_equal(new[name], old[name])
    assert dec.link_drift(folders, [], progress=False)[1].shape == (5, 0, D_IN)


def test_at_most_two_decoders_are_held_at_once(
    smoke: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folders = _chain(smoke, tmp_path, steps=tuple(range(0, 40, 5)))
    loaded: list[weakref.ref[torch.Tensor]] = []
    alive_at_load: list[int] = []
    original = dec.load_decoder

    def counting(folder: Path, device: str = "cpu") -> torch.Tensor:
        gc.collect()
        alive_at_load.append(sum(ref() is not None for ref in loaded))
        tensor = original(folder, device)
        loaded.append(weakref.ref(tensor))
        return tensor

    monkeypatch.setattr(dec, "load_decoder", counting)
    dec.link_drift(folders, [1, 2], progress=False)
    assert len(alive_at_load) == 8  # each link read once (the final one first, and not again)
    assert alive_at_load[0] == 0 and max(alive_at_load) == 1  # the final link, and nothing else, when one loads


def test_peak_bytes_formula() -> None:
    # pythia-410m layer 4: T = 29 links, F = 65,536, d = 1,024, 6 trajectory features, 8 noise-floor links
    t, f, d = 29, 65_536, 1_024
    peak = dec.drift_peak_bytes(t, f, d, 6, n_noise=8)
    assert peak == 2 * f * d * 4 + 3 * 4096 * d * 8 + 4 * t * f * 8 + t * 6 * d * 4 + 2 * 8 * f * 8
    assert 0.70e9 < peak < 0.71e9 and peak < t * f * d * 4 / 10  # a tenth of the stack's fp32 bytes alone
    assert dec.drift_peak_bytes(t, f, d, 6) == peak + 2 * (28 - 8) * f * 8  # M defaults to T - 1
    assert dec.drift_peak_bytes(29, 131_072, 2_048, 6, n_noise=8) < 2.5e9  # pythia-1.4b layer 3
    assert dec.drift_peak_bytes(2, 100, 8, 1, n_noise=0) == 2 * 100 * 8 * 4 + 3 * 100 * 8 * 8 + 4 * 2 * 100 * 8 + 64
    with pytest.raises(ValueError):
        dec.drift_peak_bytes(-1, f, d, 6)
