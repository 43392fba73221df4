"""Phases as a finding (Sec. 4.1): fits of 1 to 6 segments, BIC model choice, the three axes and the segment count a
mean curve needs within the runs' spread, on known answers."""

from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pytest

from saetrack.analysis import phases as ph

NANO_STEPS = [0, 1, 2, 4, 8, 16, 32, 64, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1100, 1200, 1300, 1400,
              1500, 1600, 1700, 1800, 1900, 2000]  # fmt: skip


def _planted(n: int, knots: tuple[int, ...], slopes: tuple[float, ...], start: float = 0.1) -> np.ndarray:
    """A continuous piecewise-linear curve over x = 0..n-1 with slope changes at ``knots``."""
    x = np.arange(n, dtype=float)
    y = start + slopes[0] * x
    for k, (before, after) in zip(knots, itertools.pairwise(slopes), strict=True):
        y += (after - before) * np.maximum(x - k, 0.0)
    return y


def _brute_force(x: np.ndarray, y: np.ndarray, n_segments: int, min_phase: int) -> tuple[tuple[int, ...], float]:
    """Reference: a least-squares fit per admissible knot set, one at a time."""
    ok = np.isfinite(y)
    best: tuple[float, tuple[int, ...]] | None = None
    for knots in itertools.combinations(range(min_phase, x.size - min_phase + 1), n_segments - 1):
        if any(b - a < min_phase for a, b in itertools.pairwise(knots)):
            continue
        design = np.column_stack([np.ones_like(x), x, *[np.maximum(x - x[k], 0) for k in knots]])[ok]
        coef, *_ = np.linalg.lstsq(design, y[ok], rcond=None)
        sse = float(np.sum((y[ok] - design @ coef) ** 2))
        if best is None or sse < best[0] - 1e-12 * max(1.0, best[0]):
            best = (sse, knots)
    assert best is not None
    return best[1], best[0]


def test_vectorised_fit_equals_the_one_at_a_time_rule_up_to_six_segments() -> None:
    rng = np.random.default_rng(0)
    for axis in ("index", "log_step", "step"):
        x = ph.phase_axis(NANO_STEPS[:16], axis)
        for n_segments in range(1, 7):
            y = rng.standard_normal(x.size).cumsum()
            y[3] = np.nan
            fit = ph.fit_segments(x, y, n_segments, min_phase=2)
            knots, sse = _brute_force(x, y, n_segments, 2)
            assert fit.knots == knots and fit.sse == pytest.approx(sse, rel=1e-7, abs=1e-9), (axis, n_segments)
            assert fit.n_points == x.size - 1 and fit.n_params == 2 * n_segments
            n = fit.n_points
            assert fit.bic == pytest.approx(n * np.log(max(sse, 1e-300) / n) + 2 * n_segments * np.log(n), rel=1e-6)


def test_bic_finds_the_planted_count_and_hits_the_cap_on_a_smooth_curve() -> None:
    x = np.arange(28, dtype=float)
    rng = np.random.default_rng(1)
    line = 0.2 + 0.03 * x + rng.normal(0, 0.01, x.size)
    assert ph.find_phases(x, line).preferred == 1
    three = _planted(28, (5, 16), (0.0, 0.06, 0.005)) + rng.normal(0, 0.005, x.size)
    found = ph.find_phases(x, three)
    assert set(found.fits) == set(range(1, 7)) and found.preferred == 3 and not found.preferred_at_cap
    assert found.phases is not None and found.phases.boundaries == (5, 16)
    five = _planted(28, (4, 9, 15, 21), (0.0, 0.08, 0.0, 0.06, -0.02)) + rng.normal(0, 0.003, x.size)
    assert ph.find_phases(x, five).preferred == 5
    # a smooth saturating curve has no phases: every extra segment fits better, BIC goes to the cap it is given
    smooth = 1 - np.exp(-x / 6)
    assert ph.find_phases(x, smooth).preferred_at_cap and ph.find_phases(x, smooth).preferred == 6
    assert ph.find_phases(x, smooth, max_segments=4).preferred == 4
    with pytest.raises(ValueError, match="max_segments = 2 is invalid"):
        ph.find_phases(x, smooth, max_segments=2)


def test_the_count_depends_on_the_axis_it_is_fitted_against() -> None:
    # linear in log10(step + 1) on nano's schedule: one segment on that axis, several on the step axis
    steps = np.asarray(NANO_STEPS, dtype=float)
    y = 0.1 + 0.25 * np.log10(steps + 1)
    assert ph.find_phases(ph.phase_axis(steps, "log_step"), y, axis="log_step").preferred == 1
    on_steps = ph.find_phases(ph.phase_axis(steps, "step"), y, axis="step")
    assert on_steps.axis == "step" and on_steps.preferred > 1
    np.testing.assert_array_equal(ph.phase_axis(steps, "index"), np.arange(28.0))
    with pytest.raises(ValueError, match="axis = 'time' is invalid"):
        ph.phase_axis(steps, "time")


def test_the_search_over_six_segments_is_fast_at_nano_size() -> None:
    x = np.arange(28.0)
    began = time.perf_counter()
    for axis in ph.PHASE_AXES:
        ph.find_phases(ph.phase_axis(NANO_STEPS, axis), np.sin(x / 5) + x / 10, axis=axis)
    assert time.perf_counter() - began < 20.0


def test_segments_within_noise_accepts_the_planted_count_and_not_fewer() -> None:
    rng = np.random.default_rng(3)
    x = np.arange(28.0)
    truth = _planted(28, (6, 17), (0.0, 0.05, 0.004))
    runs = truth[None, :] + rng.normal(0, 0.01, size=(6, 28))
    found = ph.segments_within_noise(x, runs)
    assert found["segments"] == 3 and found["runs"] == 6
    assert found["chi2"][2] > found["threshold"][2] and found["chi2"][3] <= found["threshold"][3]
    np.testing.assert_allclose(found["mean"], runs.mean(axis=0))
    # runs that agree far better than the curve's curvature: no small count is within their spread
    smooth = 1 - np.exp(-x / 6)
    tight = smooth[None, :] + rng.normal(0, 1e-4, size=(4, 28))
    assert ph.segments_within_noise(x, tight)["segments"] is None
    with pytest.raises(ValueError, match="R >= 2 runs"):
        ph.segments_within_noise(x, truth[None, :])


def test_too_few_checkpoints_fit_what_the_data_allows_and_say_why() -> None:
    x3 = np.arange(3.0)
    finding = ph.find_phases(x3, np.array([0.1, 0.5, 1.0]))
    assert finding.phases is None and set(finding.fits) == {1} and finding.preferred == 1
    assert "three phases could not be fitted" in finding.note and "3 checkpoints" in finding.note
    assert "fitted 1 segment(s)" in finding.note
    two = ph.find_phases(np.arange(5.0), _planted(5, (2,), (0.0, 0.3)))
    assert two.phases is None and set(two.fits) == {1, 2} and two.fits[2].knots == (2,)
    empty = ph.find_phases(x3, np.full(3, np.nan))
    assert empty.fits == {} and empty.preferred is None and not empty.preferred_at_cap and "no segment" in empty.note
    assert ph.max_fittable_segments(6, 6, 2) == 3 and ph.max_fittable_segments(6, 3, 2) == 2
    assert ph.max_fittable_segments(28, 28, 2, limit=6) == 6 and ph.max_fittable_segments(1, 1, 1) == 0


def test_fit_segments_validates() -> None:
    x = np.arange(5.0)
    with pytest.raises(ValueError, match="need at least 3 \\* min_phase = 6 points"):
        ph.fit_segments(x, x, 3)
    with pytest.raises(ValueError, match="finite values"):
        ph.fit_segments(np.arange(8.0), np.r_[np.full(6, np.nan), 1.0, 2.0], 3)
    with pytest.raises(ValueError, match="increasing"):
        ph.fit_segments(x[::-1], x, 1)


def test_finding_record_is_json_ready_and_gives_the_phases_back() -> None:
    steps = NANO_STEPS[:20]
    curve = _planted(20, (4, 13), (0.0, 0.08, 0.01))
    finding = ph.find_phases(np.arange(20.0), curve, axis="index")
    record = json.loads(json.dumps(ph.finding_record(finding, steps)))
    assert record["fitted"] and record["emergent_step"] == 8 and record["convergent_step"] == 600
    assert record["axis"] == "index" and record["max_segments"] == 6 and record["segments_fitted"] == 6
    assert record["segments"]["3"]["knots_step"] == [8, 600] and record["preferred_segments"] == 3
    assert not record["preferred_at_cap"]
    assert min(s["delta_bic"] for s in record["segments"].values()) == 0
    back = ph.phases_from_record(record, finding.phases.fit)
    assert back is not None and back.boundaries == (4, 13)
    short = ph.find_phases(np.arange(3.0), np.ones(3))
    record = json.loads(json.dumps(ph.finding_record(short, [0, 5, 10])))
    assert not record["fitted"] and record["emergent_index"] is None and record["segments_fitted"] == 1
    assert ph.phases_from_record(record, np.zeros(3)) is None


def test_phase_labels_and_agreement() -> None:
    a, b = ph.Phases(2, 5, np.zeros(8), 0.0), ph.Phases(3, 5, np.zeros(8), 0.0)
    np.testing.assert_array_equal(ph.phase_labels(8, a), [0, 0, 1, 1, 1, 2, 2, 2])
    agree = ph.phase_agreement(a, b, NANO_STEPS[:8])
    assert agree["emergent_gap_checkpoints"] == 1 and agree["convergent_gap_checkpoints"] == 0
    assert agree["same_phase_fraction"] == pytest.approx(7 / 8)
