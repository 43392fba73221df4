"""Decoder drift, formation times, trajectories and the change-point rule (paper Sec. 6, 4.1) on known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saetrack.analysis import drift as dr


def test_unchanged_decoder_has_drift_one_everywhere() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 16))
    decoders = np.stack([w * scale for scale in (0.5, 1.0, 3.0, 1.0)])  # same directions, any norm
    np.testing.assert_allclose(dr.cosine_to_final(decoders), 1.0, atol=1e-12)


def test_cosine_to_final_known_angles_and_zero_vectors() -> None:
    final = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    start = np.array([[0.0, 1.0], [0.0, -2.0], [0.0, 0.0]])
    cos = dr.cosine_to_final(np.stack([start, final]))
    np.testing.assert_allclose(cos[0, :2], [0.0, -1.0], atol=1e-12)
    assert np.isnan(cos[0, 2])  # a zero decoder vector has no direction
    np.testing.assert_allclose(cos[1], 1.0)
    with pytest.raises(ValueError, match=r"\[T, F, d\]"):
        dr.cosine_to_final(np.zeros((3, 4)))


def _drifting_stack(f: int, d: int) -> np.ndarray:
    """``[5, f, d]`` float32 decoders drifting towards the last one, a zero row at the first and at the last."""
    rng = np.random.default_rng(1)
    final = rng.standard_normal((f, d)).astype(np.float32)
    links = [final + s * rng.standard_normal(final.shape).astype(np.float32) for s in (3.0, 1.0, 0.1, 0.01)]
    links[0][7] = 0.0
    final[f - 1] = 0.0
    return np.stack([*links, final])


def test_link_cosine_is_the_stacked_formula_bit_for_bit_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    stack = _drifting_stack(1000, 96)
    reference = dr.cosine_to_final(stack)
    monkeypatch.setattr(dr, "COSINE_CHUNK_ROWS", 300)  # chunks that do not divide F
    got = np.stack([dr.link_cosine_to_final(torch.from_numpy(w), torch.from_numpy(stack[-1])) for w in stack])
    np.testing.assert_array_equal(np.stack([dr.link_cosine_to_final(w, stack[-1]) for w in stack]), got)  # arrays
    assert got.dtype == np.float64 and np.isnan(got[0, 7]) and np.isnan(got[:, -1]).all()
    np.testing.assert_array_equal(got, reference)  # NaN where the reference has NaN, every other value equal
    with pytest.raises(ValueError, match=r"\[F, d\]"):
        dr.link_cosine_to_final(stack[0], stack[-1][:2])


def test_link_cosine_on_an_accelerator_agrees_to_float_rounding(monkeypatch: pytest.MonkeyPatch) -> None:
    stack = _drifting_stack(700, 1024)
    reference = dr.cosine_to_final(stack)
    monkeypatch.setattr(dr, "COSINE_CHUNK_ROWS", 256)
    final = torch.from_numpy(stack[-1])
    for dtype, tolerance in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        got = np.stack([dr.torch_link_cosine(torch.from_numpy(w), final, dtype) for w in stack])
        np.testing.assert_array_equal(np.isnan(got), np.isnan(reference))
        assert np.nanmax(np.abs(got - reference)) < tolerance
    # tensors on a device are compared there (float32 on mps only): never copied to the host whole
    seen: list[tuple[str, torch.dtype]] = []
    monkeypatch.setattr(dr, "torch_link_cosine", lambda a, b, dtype: seen.append((b.device.type, dtype)) or 0)
    meta = final.to("meta")
    dr.link_cosine_to_final(meta, meta)
    dr.link_cosine_to_final(stack[0], meta)  # a host array beside a device tensor goes to the device
    assert seen == [("meta", torch.float64)] * 2


def test_change_point_rule_finds_the_breaks_of_a_piecewise_linear_curve() -> None:
    x = np.arange(30, dtype=float)
    knots = (6, 19)
    y = np.where(x < knots[0], 0.2, 0.2 + 0.05 * (x - knots[0]))
    y = np.where(x < knots[1], y, y[knots[1]] + 0.005 * (x - knots[1]))
    phases = dr.detect_phases(x, y)
    assert phases.boundaries == knots
    assert phases.sse < 1e-20
    np.testing.assert_allclose(phases.fit, y, atol=1e-9)
    noisy = y + np.random.default_rng(0).normal(0, 0.005, size=y.size)
    assert dr.detect_phases(x, noisy).boundaries == knots


def test_change_point_rule_on_uneven_x_and_nan() -> None:
    x = np.log10(np.array([0, 1, 2, 4, 8, 16, 32, 64, 100, 200, 300, 400, 500, 600]) + 1.0)
    y = np.interp(x, [x[0], x[4], x[9], x[-1]], [0.0, 0.0, 1.0, 1.1])
    y[2] = np.nan  # left out of the fit
    assert dr.detect_phases(x, y).boundaries == (4, 9)


def test_change_point_rule_respects_min_phase_and_validates() -> None:
    x = np.arange(12, dtype=float)
    y = np.where(x < 1, 0.0, x - 1.0)  # a knot at 1 is too early for min_phase=3
    phases = dr.detect_phases(x, y, min_phase=3)
    assert phases.emergent >= 3 and phases.convergent - phases.emergent >= 3 and 12 - phases.convergent >= 3
    with pytest.raises(ValueError, match="at least"):
        dr.detect_phases(x[:5], y[:5], min_phase=2)
    with pytest.raises(ValueError, match="increasing"):
        dr.detect_phases(x[::-1], y)


def test_phase_labels_and_agreement() -> None:
    steps = [0, 1, 2, 4, 8, 16, 32, 64, 100, 200]
    a = dr.Phases(3, 6, np.zeros(10), 0.0)
    b = dr.Phases(3, 8, np.zeros(10), 0.0)
    np.testing.assert_array_equal(dr.phase_labels(10, a), [0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    agreement = dr.phase_agreement(a, b, steps)
    assert agreement["emergent_gap_checkpoints"] == 0 and agreement["emergent_gap_decades"] == 0
    assert agreement["convergent_gap_checkpoints"] == 2
    assert agreement["convergent_gap_decades"] == pytest.approx(np.log10(101) - np.log10(33))
    assert agreement["same_phase_fraction"] == pytest.approx(0.8)


def test_formed_mask_and_formation_times() -> None:
    # features: 0 token-level throughout (same token); 1 concept from checkpoint 2; 2 token-level but its token
    # changes at the end; 3 flickers; 4 inactive at the end; 5 concept but its final progress is not positive.
    labels = np.array(
        [
            ["token", "inactive", "token", "concept", "token", "concept"],
            ["token", "token", "token", "token", "token", "concept"],
            ["token", "concept", "token", "concept", "token", "concept"],
            ["token", "concept", "token", "token", "token", "concept"],
            ["token", "concept", "token", "concept", "inactive", "concept"],
        ]
    )
    dominant = np.array([[7, 0, 3, 0, 1, 0], [7, 5, 3, 0, 1, 0], [7, 0, 3, 0, 1, 0], [7, 0, 3, 0, 1, 0],
                         [7, 0, 4, 0, 0, 0]])  # fmt: skip
    progress = np.full(labels.shape, 0.9)
    progress[:, 5] = -0.1
    progress[2, 1] = 0.3  # below half the final value (0.9): not yet formed at checkpoint 2
    formed = dr.formed_mask(labels, dominant, progress, formed_fraction=0.5)
    times = dr.formation_times(formed)
    np.testing.assert_array_equal(times, [0, 3, 4, 4, -1, -1])
    assert formed[:, 0].all() and not formed[:, 4].any() and not formed[:, 5].any()


def test_formation_times_validates() -> None:
    with pytest.raises(ValueError):
        dr.formation_times(np.zeros((0, 3), dtype=bool))
    with pytest.raises(ValueError, match="formed_fraction"):
        dr.formed_mask(np.array([["token"]]), np.array([[1]]), np.array([[1.0]]), formed_fraction=0.0)


def test_trajectory_projection_recovers_a_planar_path() -> None:
    # directions rotating in the plane spanned by e0, e1 of a 16-d space: the 2-D projection keeps all variance
    angles = np.linspace(0, np.pi / 2, 12)
    vectors = np.zeros((12, 16))
    vectors[:, 0], vectors[:, 1] = np.cos(angles) * 3, np.sin(angles) * 3  # norms are divided out
    coords, ratio = dr.trajectory_projection(vectors)
    assert coords.shape == (12, 2)
    assert ratio.sum() == pytest.approx(1.0)
    # distances between consecutive unit directions are preserved by the projection
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(
        np.linalg.norm(np.diff(coords, axis=0), axis=1), np.linalg.norm(np.diff(unit, axis=0), axis=1), atol=1e-12
    )
    assert coords[-1, 0] > coords[0, 0]  # fixed sign: the path ends on the positive side


def test_sample_features_is_seeded_and_bounded() -> None:
    pool = np.arange(100, 200)
    a, b = dr.sample_features(pool, 8, seed=3), dr.sample_features(pool, 8, seed=3)
    np.testing.assert_array_equal(a, b)
    assert len(set(a.tolist())) == 8 and set(a.tolist()) <= set(pool.tolist())
    assert dr.sample_features(pool[:3], 8, seed=0).size == 3


def test_beyond_noise_floor_compares_each_checkpoint_with_the_floor_at_its_distance() -> None:
    # T = 6 checkpoints; the floor after m = 1, 2, 3 links (5% quantile) is 0.9, 0.8, 0.7
    median = np.array([0.1, 0.75, 0.75, 0.85, 0.95, 1.0])
    floor = np.array([0.9, 0.8, 0.7])
    below = dr.beyond_noise_floor(median, floor)
    # index 4 (1 link back): 0.95 vs 0.9 no; 3 (2 back): 0.85 vs 0.8 no; 2 (3 back): 0.75 vs 0.7 no; 0, 1: no floor
    np.testing.assert_array_equal(below, [False, False, False, False, False, False])
    below = dr.beyond_noise_floor(np.array([0.1, 0.5, 0.6, 0.79, 0.89, 1.0]), floor)
    np.testing.assert_array_equal(below, [False, False, True, True, True, False])
    assert not dr.beyond_noise_floor(np.array([0.1, 1.0]), np.zeros(0)).any()  # no floor: nothing beyond it
    with pytest.raises(ValueError, match="1-D"):
        dr.beyond_noise_floor(np.zeros((2, 2)), floor)


def test_a_one_checkpoint_flicker_is_forgiven_only_by_the_tolerant_rule() -> None:
    formed = np.array(
        [
            [1, 0, 1, 0, 0],
            [1, 1, 1, 1, 0],
            [0, 1, 1, 0, 0],  # feature 0 dips for one checkpoint, feature 3 for two
            [1, 1, 1, 0, 1],
            [1, 1, 1, 1, 1],
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(dr.formation_times(formed), [3, 1, 0, 4, 3])
    np.testing.assert_array_equal(dr.formation_times(formed, flicker=1), [0, 1, 0, 4, 3])
    np.testing.assert_array_equal(dr.formation_times(formed, flicker=2), [0, 1, 0, 1, 3])
    # a dip at the final checkpoint is never forgiven: a feature not formed at the end never formed
    tail = np.array([[1], [1], [0]], dtype=bool)
    assert dr.formation_times(tail, flicker=1)[0] == -1
    with pytest.raises(ValueError, match="flicker"):
        dr.formation_times(formed, flicker=-1)
