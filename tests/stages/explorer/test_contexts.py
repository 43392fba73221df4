"""The explorer's shaded contexts: window rows stop at their context's edges, each (feature, row) pair's activation is
Eq. 2's (one dot product, each analysis row read once and in order), the activating tokens are checked against the
formation stage's stored values, and every window token is shaded by its share of the feature's top activation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saetrack.sae.weights import SAEWeights, feature_activations
from saetrack.stages.explorer.contexts import (
    SHADES,
    _blocks,
    check_activating_tokens,
    context_windows,
    pair_activations,
    shade,
    window_rows,
)


def _weights(d_in: int = 6, d_sae: int = 5, seed: int = 0, apply_b_dec: bool = True) -> SAEWeights:
    """A random SAE whose biases are nonzero (the ``b_dec`` shift and ``b_enc`` both matter)."""
    g = torch.Generator().manual_seed(seed)
    return SAEWeights(
        W_enc=torch.randn(d_in, d_sae, generator=g),
        b_enc=0.3 * torch.randn(d_sae, generator=g),
        W_dec=torch.randn(d_sae, d_in, generator=g),
        b_dec=0.5 * torch.randn(d_in, generator=g),
        apply_b_dec_to_input=apply_b_dec,
    )


class _Reader:
    """``read_rows`` over an array that records every call's rows."""

    def __init__(self, acts: np.ndarray) -> None:
        self.acts = acts
        self.calls: list[np.ndarray] = []

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        self.calls.append(np.asarray(rows).copy())
        return self.acts[rows]


def test_window_rows_stop_at_the_context_edges_and_skip_missing_datapoints() -> None:
    offsets = np.array([-4, -1, 0, 1, 7])
    rows, valid = window_rows(np.array([[3, 12, -1]]), offsets, context_length=10)
    assert rows.shape == valid.shape == (1, 3, 5)
    # row 3 is position 3 of context 0: offset -4 runs before its start, +7 past its end (position 10)
    assert rows[0, 0].tolist() == [-1, 2, 3, 4, -1]
    assert valid[0, 0].tolist() == [False, True, True, True, False]
    # row 12 is position 2 of context 1: -4 would be row 8 of context 0; +7 is position 9, the context's last token
    assert rows[0, 1].tolist() == [-1, 11, 12, 13, 19]
    assert valid[0, 1].tolist() == [False, True, True, True, True]
    # no datapoint: nothing valid
    assert rows[0, 2].tolist() == [-1] * 5
    assert not valid[0, 2].any()


def test_blocks_split_sorted_rows_at_block_boundaries() -> None:
    rows = np.array([0, 1, 7, 8, 9, 20, 23, 40])
    assert list(_blocks(rows, 8)) == [(0, 3), (3, 5), (5, 7), (7, 8)]
    assert list(_blocks(rows, 1000)) == [(0, 8)]
    assert list(_blocks(np.zeros(0, dtype=np.int64), 8)) == []


@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_pair_activations_match_eq2_reading_each_row_once_in_order(apply_b_dec: bool) -> None:
    rng = np.random.default_rng(1)
    weights = _weights(d_in=6, d_sae=9, seed=1, apply_b_dec=apply_b_dec)
    acts = rng.normal(size=(100, 6)).astype(np.float32)
    rows = rng.integers(0, 100, size=300)
    features = rng.integers(0, 9, size=300)
    reader = _Reader(acts)

    got = pair_activations(weights, reader, rows, features, block_rows=16, pair_chunk=7)

    expected = feature_activations(weights, acts).numpy()[rows, features]
    assert got.dtype == np.float32 and got.shape == (300,)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert (got > 0).any() and (got == 0).any()  # the ReLU both passes and cuts
    read = np.concatenate(reader.calls)
    assert len(reader.calls) > 3  # several blocks
    assert read.tolist() == sorted(set(rows.tolist()))  # each row once, increasing
    assert all(np.unique(c // 16).size == 1 for c in reader.calls)  # one block per read


def test_pair_activations_of_no_pairs_reads_nothing() -> None:
    reader = _Reader(np.zeros((4, 6), dtype=np.float32))
    got = pair_activations(_weights(), reader, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    assert got.shape == (0,) and reader.calls == []


def test_check_activating_tokens_tolerance_and_failure() -> None:
    stored = np.array([[10.0, 4.0], [12.0, 3.0], [8.0, 1.0], [1e-6, 0.0]], dtype=np.float32)
    check_activating_tokens(stored.copy(), stored, step=5)
    # float noise on a near-zero top activation is judged against the link's median top activation (9), not 1e-6
    noisy = stored.copy()
    noisy[3, 0] += 5e-4
    check_activating_tokens(noisy, stored, step=5)
    # 1% off on feature 1's top datapoint (12, above the median): raises, naming the feature, the step and the share
    off = stored.copy()
    off[1, 0] *= 1.01
    with pytest.raises(RuntimeError, match=r"step 7 .*feature 1 .* by 1\.00% .*allowed 0\.10%"):
        check_activating_tokens(off, stored, step=7)
    # 0.5% off on feature 2's second datapoint (1.0): 0.056% of the scale max(8, median 9), within tolerance
    second = stored.copy()
    second[2, 1] += 5e-3
    check_activating_tokens(second, stored, step=7)
    # 1% of feature 2's top (8) is judged against the median 9: 0.89% > 0.1%, raises naming feature 2
    with pytest.raises(RuntimeError, match=r"feature 2 .* by 0\.89%"):
        check_activating_tokens(np.where(np.arange(4)[:, None] == 2, stored * 1.01, stored), stored, step=7)
    # a link where nothing fired passes on zeros, and an empty one passes
    check_activating_tokens(np.zeros((3, 2)), np.zeros((3, 2)), step=0)
    check_activating_tokens(np.zeros((0, 2)), np.zeros((0, 2)), step=0)


def test_shade_levels_and_outside_tokens() -> None:
    activations = np.array([[[0.0, 1.0, 10.0, 20.0, -1.0, 2.5]], [[3.0, 0.0, 0.0, 0.0, 0.0, 0.0]]])
    top = np.array([[[10.0]], [[0.0]]])
    valid = np.ones(activations.shape, dtype=bool)
    valid[0, 0, 5] = False
    levels = shade(activations, top, valid)
    assert levels.dtype == np.uint8
    # 0.1 * 63 = 6.3 -> 6; the top -> SHADES; above the top and below zero clipped; outside -> 255
    assert levels[0, 0].tolist() == [0, 6, SHADES, SHADES, 0, 255]
    assert levels[1, 0].tolist() == [0] * 6  # no top activation: no shade


def _top_k(acts: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The formation stage's top-k per feature ``[F, k]`` (values, rows) of activations ``[N, F]``."""
    order = np.argsort(-acts, axis=0, kind="stable")[:k].T
    return np.take_along_axis(acts.T, order, axis=1), order


def test_context_windows_end_to_end() -> None:
    rng = np.random.default_rng(2)
    n_ctx, length, d_in, d_sae, k, before, after = 6, 10, 6, 5, 4, 3, 2
    steps = [0, 100]
    links = {s: _weights(d_in, d_sae, seed=10 + i) for i, s in enumerate(steps)}
    links[100].b_enc[4] = -1e3  # feature 4 never fires at step 100: no contexts
    analysis = {s: rng.normal(size=(n_ctx * length, d_in)).astype(np.float32) for s in steps}
    full = {s: feature_activations(links[s], analysis[s]).numpy() for s in steps}
    tops = [_top_k(full[s], k) for s in steps]
    top_values = np.stack([v for v, _ in tops])
    top_indices = np.stack([r for _, r in tops])

    windows = context_windows(
        analysis.__getitem__, links.__getitem__, steps, top_values, top_indices,
        context_length=length, n_contexts=3, before=before, after=after,
    )  # fmt: skip

    width = before + after + 1
    assert windows.offsets.tolist() == list(range(-before, after + 1))
    assert windows.shading.shape == (2, d_sae, 3, width) and windows.shading.dtype == np.uint8
    assert (windows.rows[1, 4] == -1).all() and (windows.values[1, 4] == 0).all()
    assert (windows.shading[1, 4] == 255).all()
    shown = windows.rows >= 0
    assert shown.sum() > 20
    np.testing.assert_array_equal(windows.rows[shown], top_indices[:, :, :3][shown])
    # the top context's activating token is the top activation itself
    assert (windows.shading[:, :, 0, before][shown[:, :, 0]] == SHADES).all()
    for t, s in enumerate(steps):
        rows, valid = window_rows(windows.rows[t], windows.offsets, length)
        assert (windows.shading[t][~valid] == 255).all()
        for f in range(d_sae):
            top = float(windows.values[t, f, 0])
            for c in range(3):
                inside = valid[f, c]
                exact = np.clip(full[s][rows[f, c][inside], f].astype(np.float64) / top * SHADES, 0, SHADES)
                # each level is the rounding of the token's exact share (float32 sums may only tip a tie)
                assert np.all(np.abs(windows.shading[t, f, c][inside] - exact) <= 0.5 + 1e-3)


def test_context_windows_raise_when_the_link_changed() -> None:
    rng = np.random.default_rng(3)
    link = _weights(seed=4)
    acts = rng.normal(size=(40, 6)).astype(np.float32)
    values, rows = _top_k(feature_activations(link, acts).numpy(), 3)
    changed = SAEWeights(link.W_enc * 1.05, link.b_enc, link.W_dec, link.b_dec)
    with pytest.raises(RuntimeError, match="at step 9 the recomputed activation"):
        context_windows(
            lambda s: acts, lambda s: changed, [9], values[None], rows[None],
            context_length=8, n_contexts=2, before=2, after=1,
        )  # fmt: skip
