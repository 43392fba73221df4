"""Phases as a finding (Sec. 4.1): one/two/three-segment fits, BIC model choice and bootstrap intervals, on known
answers."""

from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pytest

from saetrack.analysis import phases as ph


def _planted(n: int, knots: tuple[int, ...], slopes: tuple[float, ...], start: float = 0.1) -> np.ndarray:
    """A continuous piecewise-linear curve over x = 0..n-1 with slope changes at ``knots``."""
    x = np.arange(n, dtype=float)
    y = start + slopes[0] * x
    for k, (before, after) in zip(knots, itertools.pairwise(slopes), strict=True):
        y += (after - before) * np.maximum(x - k, 0.0)
    return y


def _brute_force(x: np.ndarray, y: np.ndarray, n_segments: int, min_phase: int) -> tuple[tuple[int, ...], float]:
    """Reference: a least-squares fit per admissible knot set, one at a time (the pre-vectorised rule)."""
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


def test_vectorised_fit_equals_the_one_at_a_time_rule() -> None:
    rng = np.random.default_rng(0)
    x = np.log10(np.array([0, 1, 2, 4, 8, 16, 32, 64, 100, 200, 300, 400, 500, 600, 700, 800]) + 1.0)
    for n_segments in (1, 2, 3):
        y = rng.standard_normal(x.size).cumsum()
        y[3] = np.nan
        fit = ph.fit_segments(x, y, n_segments, min_phase=2)
        knots, sse = _brute_force(x, y, n_segments, 2)
        assert fit.knots == knots and fit.sse == pytest.approx(sse, rel=1e-9, abs=1e-12)
        assert fit.n_points == x.size - 1 and fit.n_params == 2 * n_segments
        n = fit.n_points
        assert fit.bic == pytest.approx(n * np.log(sse / n) + 2 * n_segments * np.log(n))


def test_bic_prefers_one_segment_on_a_line_and_three_on_a_planted_three_segment_curve() -> None:
    x = np.arange(28, dtype=float)
    rng = np.random.default_rng(1)
    line = 0.2 + 0.03 * x
    for y in (line, line + rng.normal(0, 0.01, x.size)):
        fits = ph.compare_segment_counts(x, y)
        assert set(fits) == {1, 2, 3}
        assert min(fits, key=lambda s: fits[s].bic) == 1
    three = _planted(28, (5, 16), (0.0, 0.06, 0.005))
    for y in (three, three + rng.normal(0, 0.005, x.size)):
        fits = ph.compare_segment_counts(x, y)
        assert min(fits, key=lambda s: fits[s].bic) == 3
        assert fits[3].knots == (5, 16)
    two = _planted(28, (9,), (0.0, 0.04)) + rng.normal(0, 0.005, x.size)
    fits = ph.compare_segment_counts(x, two)
    assert min(fits, key=lambda s: fits[s].bic) == 2 and fits[2].knots == (9,)


def test_bootstrap_of_an_exact_planted_shape_recovers_the_knots_with_zero_width() -> None:
    # every feature follows the same shape up to a positive scale: any resample's median has the same knots
    curve = _planted(20, (4, 13), (0.0, 0.08, 0.01))
    scales = np.random.default_rng(2).uniform(0.5, 2.0, size=40)
    matrix = curve[:, None] * scales[None, :]
    x = np.arange(20, dtype=float)
    knots = ph.bootstrap_knots(x, matrix, 3, n_boot=50, seed=0)
    assert knots.shape == (50, 2)
    assert (knots == [4, 13]).all()
    finding = ph.find_phases(x, matrix, n_boot=50, seed=0)
    assert finding.phases is not None and finding.phases.boundaries == (4, 13)
    assert finding.phases.intervals == ((4, 4), (13, 13)) and finding.note == ""
    assert finding.preferred == 3


def test_bootstrap_is_seeded_and_spreads_on_noisy_features() -> None:
    rng = np.random.default_rng(3)
    curve = _planted(28, (6, 18), (0.0, 0.05, 0.01))
    matrix = curve[:, None] + rng.normal(0, 0.3, size=(28, 30))
    x = np.arange(28, dtype=float)
    a = ph.bootstrap_knots(x, matrix, 3, n_boot=40, seed=7)
    np.testing.assert_array_equal(a, ph.bootstrap_knots(x, matrix, 3, n_boot=40, seed=7))
    finding = ph.find_phases(x, matrix, n_boot=40, seed=7)
    assert finding.phases is not None
    (e_lo, e_hi), (c_lo, c_hi) = finding.phases.intervals or ((0, 0), (0, 0))
    assert e_lo <= finding.phases.emergent <= e_hi and c_lo <= finding.phases.convergent <= c_hi
    assert (e_lo, e_hi) == ph.knot_interval(a[:, 0])


def test_bootstrap_is_fast_at_nano_size() -> None:
    # nano: 28 checkpoints (~300 knot pairs), ~1000 live features, 200 resamples
    rng = np.random.default_rng(4)
    matrix = _planted(28, (5, 16), (0.0, 0.05, 0.005))[:, None] + rng.normal(0, 0.2, size=(28, 1000))
    began = time.perf_counter()
    ph.find_phases(np.arange(28.0), matrix, n_boot=200, seed=0)
    assert time.perf_counter() - began < 10.0


def test_knot_interval_rounds_outward_and_skips_unfittable_resamples() -> None:
    assert ph.knot_interval(np.arange(100)) == (4, 95)  # quantiles 4.95 and 94.05, outward
    assert ph.knot_interval([7, 7, 7]) == (7, 7)
    assert ph.knot_interval([-1, 3, 5]) == (3, 5)
    assert ph.knot_interval([-1, -1]) is None


def test_too_few_checkpoints_fit_what_the_data_allows_and_say_why() -> None:
    x3 = np.arange(3.0)
    finding = ph.find_phases(x3, np.array([[0.1, 0.2], [0.5, 0.6], [1.0, 1.0]]), n_boot=20)
    assert finding.phases is None and set(finding.fits) == {1} and finding.preferred == 1
    assert "three phases could not be fitted" in finding.note and "3 checkpoints" in finding.note
    assert "fitted 1 segment(s)" in finding.note and finding.bootstrap.shape == (0, 0)
    x5 = np.arange(5.0)
    two = ph.find_phases(x5, np.tile(_planted(5, (2,), (0.0, 0.3))[:, None], (1, 4)), n_boot=10)
    assert two.phases is None and set(two.fits) == {1, 2} and two.fits[2].knots == (2,)
    assert two.intervals == ((2, 2),) and "fitted 2 segment(s)" in two.note
    empty = ph.find_phases(x3, np.full((3, 2), np.nan), n_boot=5)
    assert empty.fits == {} and empty.preferred is None and "no segment" in empty.note
    assert ph.max_fittable_segments(6, 6, 2) == 3 and ph.max_fittable_segments(6, 3, 2) == 2
    assert ph.max_fittable_segments(1, 1, 1) == 0


def test_fit_segments_validates() -> None:
    x = np.arange(5.0)
    with pytest.raises(ValueError, match="need at least 3 \\* min_phase = 6 points"):
        ph.fit_segments(x, x, 3)
    with pytest.raises(ValueError, match="finite values"):
        ph.fit_segments(np.arange(8.0), np.r_[np.full(6, np.nan), 1.0, 2.0], 3)
    with pytest.raises(ValueError, match="increasing"):
        ph.fit_segments(x[::-1], x, 1)
    with pytest.raises(ValueError, match=r"\[T=5, F >= 1\]"):
        ph.bootstrap_knots(x, np.zeros((5, 0)), 2, 10, 0)


def test_finding_record_is_json_ready_and_gives_the_phases_back() -> None:
    steps = [0, 1, 2, 4, 8, 16, 32, 64, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1100, 1200]
    curve = _planted(20, (4, 13), (0.0, 0.08, 0.01))
    finding = ph.find_phases(np.arange(20.0), curve[:, None] * np.linspace(0.5, 2, 9)[None, :], n_boot=10)
    record = json.loads(json.dumps(ph.finding_record(finding, steps)))
    assert record["fitted"] and record["emergent_step"] == 8 and record["convergent_step"] == 600
    assert record["emergent_interval"] == {"index": [4, 4], "step": [8, 8]}
    assert record["segments"]["3"]["knots_step"] == [8, 600] and record["segments"]["3"]["delta_bic"] == 0
    assert record["segments"]["3"]["knot_intervals"][1] == {"index": [13, 13], "step": [600, 600]}
    assert record["preferred_segments"] == 3 and record["bootstrap_samples"] == 10
    back = ph.phases_from_record(record, finding.phases.fit)
    assert back is not None and back.boundaries == (4, 13) and back.intervals == ((4, 4), (13, 13))
    short = ph.find_phases(np.arange(3.0), np.ones((3, 2)), n_boot=5)
    record = json.loads(json.dumps(ph.finding_record(short, [0, 5, 10])))
    assert not record["fitted"] and record["emergent_index"] is None and record["segments_fitted"] == 1
    assert ph.phases_from_record(record, np.zeros(3)) is None
