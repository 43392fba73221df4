"""Training phases (paper Sec. 4.1) as a finding: piecewise-linear fits of one, two and three segments, the count
an information criterion prefers, and bootstrap intervals of the boundaries over features.

* :func:`fit_segments` — the least-squares continuous linear fit with ``s`` segments (knots at checkpoints) and its
  BIC; :func:`compare_segment_counts` fits every count the data allows (1-3) and reports the preferred one.
* :func:`detect_phases` — the paper's three phases (Initialization & Warmup, Emergent, Convergent) as the two knots
  of the three-segment fit; :func:`bootstrap_knots` / :func:`knot_interval` give their 5-95% intervals when the
  features behind the curve are resampled; :func:`find_phases` does all of this for one curve of one perspective.
* :func:`phase_labels` and :func:`phase_agreement` compare two sets of boundaries.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "MAX_SEGMENTS",
    "PHASE_NAMES",
    "PhaseFinding",
    "Phases",
    "SegmentFit",
    "bootstrap_knots",
    "compare_segment_counts",
    "detect_phases",
    "find_phases",
    "finding_record",
    "fit_segments",
    "knot_interval",
    "max_fittable_segments",
    "median_curve",
    "phase_agreement",
    "phase_labels",
    "phases_from_record",
]


#: The three phases of feature evolution (paper Sec. 4.1), in order.
PHASE_NAMES: tuple[str, str, str] = ("Initialization & Warmup", "Emergent", "Convergent")
#: The largest number of segments fitted (the paper's three phases).
MAX_SEGMENTS = 3
#: SSE floor relative to the curve's range: exact fits (numerically zero SSE) compare by parameter count alone.
SSE_FLOOR = 1e-9


@dataclass(frozen=True)
class Phases:
    """Two phase boundaries on a curve: the Emergent phase starts at checkpoint index ``emergent``, the Convergent
    phase at ``convergent`` (so the Initialization & Warmup phase is ``[0, emergent)``).

    ``emergent_interval`` / ``convergent_interval``: the 5-95% bootstrap interval of each boundary (checkpoint
    indices, :func:`knot_interval`), when measured.
    """

    emergent: int
    convergent: int
    #: The fitted three-segment curve at every checkpoint, and its residual sum of squares.
    fit: np.ndarray
    sse: float
    emergent_interval: tuple[int, int] | None = None
    convergent_interval: tuple[int, int] | None = None

    @property
    def boundaries(self) -> tuple[int, int]:
        return self.emergent, self.convergent

    @property
    def intervals(self) -> tuple[tuple[int, int], tuple[int, int]] | None:
        """Both bootstrap intervals, or None when they were not measured."""
        if self.emergent_interval is None or self.convergent_interval is None:
            return None
        return self.emergent_interval, self.convergent_interval


@dataclass(frozen=True)
class SegmentFit:
    """The best continuous ``n_segments``-segment linear fit of a curve (see :func:`fit_segments`)."""

    n_segments: int
    knots: tuple[int, ...]  # checkpoint indices where a new segment starts
    fit: np.ndarray  # [T] the fitted curve at every checkpoint
    sse: float
    bic: float
    n_points: int  # finite points fitted
    n_params: int  # 2 * n_segments


def max_fittable_segments(n_checkpoints: int, n_finite: int, min_phase: int, limit: int = MAX_SEGMENTS) -> int:
    """How many segments (0 to ``limit``) a curve of ``n_checkpoints`` checkpoints, ``n_finite`` of them finite, can
    be fitted with: ``s`` segments need ``s * min_phase`` checkpoints and ``s + 1`` finite values."""
    return max([0] + [s for s in range(1, limit + 1) if n_checkpoints >= s * min_phase and n_finite >= s + 1])


def _check_curve(xs: np.ndarray, ys: np.ndarray, n_segments: int, min_phase: int) -> None:
    if xs.shape != ys.shape[-1:] or xs.ndim != 1:
        raise ValueError(f"x and y must be 1-D of one length, got {xs.shape} and {ys.shape}.")
    if np.any(np.diff(xs) <= 0):
        raise ValueError("x must be strictly increasing.")
    if n_segments < 1:
        raise ValueError(f"n_segments must be >= 1, got {n_segments}.")
    if min_phase < 1 or xs.size < n_segments * min_phase:
        raise ValueError(
            f"need at least {n_segments} * min_phase = {n_segments * max(min_phase, 1)} points to fit {n_segments} "
            f"segments, got {xs.size} (min_phase={min_phase})."
        )


def _knot_sets(n: int, n_segments: int, min_phase: int) -> np.ndarray:
    """``[P, n_segments - 1]`` knot indices, lexicographic: each segment spans at least ``min_phase`` checkpoints."""
    combos = [
        c
        for c in itertools.combinations(range(min_phase, n - min_phase + 1), n_segments - 1)
        if all(b - a >= min_phase for a, b in itertools.pairwise(c))
    ]
    return np.asarray(combos, dtype=np.int64).reshape(len(combos), n_segments - 1)


def _designs(xs: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """``[P, T, s + 1]`` hinge designs ``1, x, (x - x_k1)_+, ...`` of every knot set."""
    base = np.broadcast_to(np.stack([np.ones_like(xs), xs], axis=1), (len(knots), xs.size, 2))
    hinges = np.maximum(xs[None, :, None] - xs[knots][:, None, :], 0.0)
    return np.concatenate([base, hinges], axis=2)


def _best_fits(xs: np.ndarray, ys: np.ndarray, n_segments: int, min_phase: int) -> tuple[np.ndarray, np.ndarray]:
    """Best knot set of each curve of ``ys`` ``[B, T]`` (NaN left out): ``([B, s-1] knots, [B] SSE)``.

    Vectorised: for each pattern of finite values, the residual maker ``I - A A^+`` of every knot set's design is
    computed once and applied to every curve with that pattern. Near-ties (1e-12 relative) go to the earliest set.
    """
    knots = _knot_sets(xs.size, n_segments, min_phase)
    designs = _designs(xs, knots)
    out_knots = np.zeros((ys.shape[0], n_segments - 1), dtype=np.int64)
    out_sse = np.zeros(ys.shape[0])
    finite = np.isfinite(ys)
    for pattern in np.unique(finite, axis=0):
        rows = np.nonzero((finite == pattern).all(axis=1))[0]
        a = designs[:, pattern, :]
        residual = np.eye(int(pattern.sum()))[None] - a @ np.linalg.pinv(a)  # [P, m, m]
        r = np.einsum("pij,bj->bpi", residual, ys[np.ix_(rows, pattern)])
        sse = np.einsum("bpi,bpi->bp", r, r)
        best = sse.min(axis=1, keepdims=True)
        first = np.argmax(sse <= best + 1e-12 * np.maximum(1.0, best), axis=1)
        out_knots[rows], out_sse[rows] = knots[first], sse[np.arange(rows.size), first]
    return out_knots, out_sse


def fit_segments(x: Sequence[float], y: Sequence[float], n_segments: int, min_phase: int = 2) -> SegmentFit:
    """The least-squares continuous linear fit of ``y(x)`` with ``n_segments`` segments, and its BIC (Sec. 4.1).

    The fit is ``a + b x + sum_j c_j (x - x_{k_j})_+`` with knots ``k_j`` at checkpoints, each segment spanning at
    least ``min_phase`` checkpoints (``k_1 >= min_phase``, ``k_{j+1} - k_j >= min_phase``, ``T - k_last >=
    min_phase``); every admissible knot set is tried, ties go to the earliest. NaN values of ``y`` are left out.

    ``BIC = n ln(SSE / n) + k ln n`` with ``n`` the number of finite points and ``k = 2 s`` free parameters for
    ``s`` segments (intercept, slope, ``s - 1`` slope changes and ``s - 1`` knot positions). SSE is floored at
    ``n (1e-9 range(y))^2`` so that exact fits (numerically zero SSE) are compared by their parameter count.
    """
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    _check_curve(xs, ys, n_segments, min_phase)
    ok = np.isfinite(ys)
    if ok.sum() < n_segments + 1:
        raise ValueError(
            f"need at least {n_segments + 1} finite values of y to fit {n_segments} segments, got {int(ok.sum())}."
        )
    knots, sse = _best_fits(xs, ys[None, :], n_segments, min_phase)
    design = _designs(xs, knots)[0]
    coef, *_ = np.linalg.lstsq(design[ok], ys[ok], rcond=None)
    n = int(ok.sum())
    floor = n * (SSE_FLOOR * max(float(np.ptp(ys[ok])), 1e-300)) ** 2
    bic = n * np.log(max(float(sse[0]), floor) / n) + 2 * n_segments * np.log(n)
    return SegmentFit(n_segments, tuple(int(k) for k in knots[0]), design @ coef, float(sse[0]), float(bic), n,
                      2 * n_segments)  # fmt: skip


def compare_segment_counts(
    x: Sequence[float], y: Sequence[float], min_phase: int = 2, max_segments: int = MAX_SEGMENTS
) -> dict[int, SegmentFit]:
    """Fits of 1, 2, ... up to ``max_segments`` segments (:func:`fit_segments`), as many as the curve allows
    (:func:`max_fittable_segments`); the preferred count is the key of the lowest BIC (empty: nothing fits)."""
    ys = np.asarray(y, dtype=np.float64)
    allowed = max_fittable_segments(ys.size, int(np.isfinite(ys).sum()), min_phase, max_segments)
    return {s: fit_segments(x, ys, s, min_phase) for s in range(1, allowed + 1)}


def detect_phases(x: Sequence[float], y: Sequence[float], min_phase: int = 2) -> Phases:
    """The two knots of the continuous three-segment linear fit of ``y(x)`` with least squared error (Sec. 4.1).

    The change-point rule behind the phases of Sec. 4.1: the fit is ``a + b x + c (x - x_e)_+ + d (x - x_c)_+``
    and (e, c) range over every pair with each phase spanning at least ``min_phase`` checkpoints (``e >=
    min_phase``, ``c - e >= min_phase``, ``T - c >= min_phase``); ties go to the earliest pair. The curve is e.g.
    the median decoder cosine to final (Fig. 6) or the median concept-level progress measure (Fig. 5) against the
    checkpoint index. NaN values of ``y`` are left out of the fit. Whether three segments describe the curve better
    than one or two is :func:`compare_segment_counts`' question.
    """
    fit = fit_segments(x, y, 3, min_phase)
    return Phases(emergent=fit.knots[0], convergent=fit.knots[1], fit=fit.fit, sse=fit.sse)


def median_curve(matrix: np.ndarray) -> np.ndarray:
    """Median over the columns (features) of a ``[T, F]`` matrix, NaN ignored (an all-NaN row gives NaN)."""
    values = np.asarray(matrix, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] == 0:
        return np.full(values.shape[0] if values.ndim else 0, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(values, axis=1)


def bootstrap_knots(
    x: Sequence[float], matrix: np.ndarray, n_segments: int, n_boot: int, seed: int, min_phase: int = 2
) -> np.ndarray:
    """Knots of the ``n_segments`` fit of the median curve of ``n_boot`` bootstrap resamples of the features.

    ``matrix`` is the ``[T, F]`` matrix behind the curve (e.g. each live feature's decoder cosine to final): each
    resample draws F columns with replacement (``numpy.random.default_rng(seed)``), takes the median over them
    per checkpoint (:func:`median_curve`) and refits (:func:`fit_segments`' rule). Returns ``[n_boot, s - 1]``.
    """
    xs, values = np.asarray(x, dtype=np.float64), np.asarray(matrix, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != xs.size or values.shape[1] == 0:
        raise ValueError(f"matrix must be [T={xs.size}, F >= 1], got shape {values.shape}.")
    _check_curve(xs, values[:, 0], n_segments, min_phase)
    rng = np.random.default_rng(seed)
    columns = rng.integers(0, values.shape[1], size=(n_boot, values.shape[1]))
    curves = np.stack([median_curve(values[:, c]) for c in columns]) if n_boot else np.zeros((0, xs.size))
    fittable = np.isfinite(curves).sum(axis=1) >= n_segments + 1
    knots = np.full((n_boot, n_segments - 1), -1, dtype=np.int64)
    if fittable.any():
        knots[fittable] = _best_fits(xs, curves[fittable], n_segments, min_phase)[0]
    return knots


def knot_interval(knots: Sequence[int], low: float = 0.05, high: float = 0.95) -> tuple[int, int] | None:
    """The ``low``-``high`` quantile interval of bootstrap knot indices (outward to checkpoints: the lower quantile
    rounded down, the upper one up); negative entries (unfittable resamples) are left out; None when none is left."""
    values = np.asarray(knots, dtype=np.int64)
    values = values[values >= 0]
    if values.size == 0:
        return None
    return int(np.quantile(values, low, method="lower")), int(np.quantile(values, high, method="higher"))


@dataclass(frozen=True)
class PhaseFinding:
    """Phases of one curve as a finding (see :func:`find_phases`)."""

    fits: dict[int, SegmentFit]  # segment count -> fit, every count the curve allows
    phases: Phases | None  # the three-segment boundaries with bootstrap intervals; None when 3 cannot be fitted
    bootstrap: np.ndarray  # [B, s - 1] knots of the largest fitted count per resample
    note: str = ""  # why the three phases could not be fitted ("" when they were)
    intervals: tuple[tuple[int, int] | None, ...] = field(default=())  # per knot of the largest fitted count

    @property
    def preferred(self) -> int | None:
        """The segment count with the lowest BIC (None: nothing could be fitted)."""
        return min(self.fits, key=lambda s: (self.fits[s].bic, s)) if self.fits else None


def find_phases(
    x: Sequence[float], matrix: np.ndarray, *, min_phase: int = 2, n_boot: int = 200, seed: int = 0
) -> PhaseFinding:
    """The phases of Sec. 4.1 on the median curve of ``matrix`` ``[T, F]``, with model choice and uncertainty.

    Fits 1, 2 and 3 segments to the median over features (:func:`compare_segment_counts`; the BIC of each says
    which count the curve prefers), takes the three-segment knots as the phase boundaries and their 5-95%
    bootstrap intervals over features (:func:`bootstrap_knots`, ``n_boot`` resamples, ``seed``). With too few
    checkpoints or finite values for three segments, fits as many as the curve allows, returns ``phases=None``
    and says why in ``note``.
    """
    xs = np.asarray(x, dtype=np.float64)
    values = np.asarray(matrix, dtype=np.float64)
    curve = median_curve(values)
    fits = compare_segment_counts(xs, curve, min_phase)
    largest = max(fits, default=0)
    boot = np.zeros((0, max(largest - 1, 0)), dtype=np.int64)
    if largest >= 2 and n_boot > 0:
        boot = bootstrap_knots(xs, values, largest, n_boot, seed, min_phase)
    intervals = tuple(knot_interval(boot[:, j]) if boot.size else None for j in range(max(largest - 1, 0)))
    if largest < MAX_SEGMENTS:
        n_finite = int(np.isfinite(curve).sum())
        note = (
            f"three phases could not be fitted: they need at least 3 * min_phase = {3 * min_phase} checkpoints and "
            f"4 finite values, the curve has {curve.size} checkpoints and {n_finite} finite values; "
            + (f"fitted {largest} segment(s) instead." if largest else "no segment could be fitted.")
        )
        return PhaseFinding(fits, None, boot, note, intervals)
    three = fits[MAX_SEGMENTS]
    phases = Phases(three.knots[0], three.knots[1], three.fit, three.sse, intervals[0], intervals[1])
    return PhaseFinding(fits, phases, boot, "", intervals)


def _interval_record(interval: tuple[int, int] | None, steps: list[int]) -> dict[str, list[int]] | None:
    return None if interval is None else {"index": list(interval), "step": [steps[interval[0]], steps[interval[1]]]}


def finding_record(finding: PhaseFinding, steps: Sequence[int]) -> dict[str, Any]:
    """A JSON-ready record of a :class:`PhaseFinding` (Sec. 4.1), checkpoint indices also given as ``steps``.

    Keys: ``fitted`` (three phases fitted), ``note`` (why not), ``segments_fitted``, ``preferred_segments`` (lowest
    BIC), ``bootstrap_samples``; ``segments``: per count its knots, SSE, BIC and BIC minus the lowest (the largest
    count fitted also has its knots' bootstrap intervals); and the phase boundaries ``emergent_index/_step``,
    ``convergent_index/_step``, ``sse`` and ``emergent_interval`` / ``convergent_interval`` (None when not fitted).
    """
    steps = [int(s) for s in steps]
    best = min((f.bic for f in finding.fits.values()), default=0.0)
    largest = max(finding.fits, default=0)
    segments: dict[str, dict[str, Any]] = {}
    for count, fit in finding.fits.items():
        segments[str(count)] = {"knots_index": list(fit.knots), "knots_step": [steps[k] for k in fit.knots],
                                "sse": fit.sse, "bic": fit.bic, "delta_bic": fit.bic - best, "n_points": fit.n_points,
                                "n_params": fit.n_params}  # fmt: skip
    if largest >= 2:
        segments[str(largest)]["knot_intervals"] = [_interval_record(i, steps) for i in finding.intervals]
    p = finding.phases
    return {
        "fitted": p is not None,
        "note": finding.note,
        "segments_fitted": largest,
        "preferred_segments": finding.preferred,
        "bootstrap_samples": int(finding.bootstrap.shape[0]),
        "segments": segments,
        "emergent_index": p.emergent if p else None,
        "emergent_step": steps[p.emergent] if p else None,
        "convergent_index": p.convergent if p else None,
        "convergent_step": steps[p.convergent] if p else None,
        "sse": p.sse if p else None,
        "emergent_interval": _interval_record(p.emergent_interval, steps) if p else None,
        "convergent_interval": _interval_record(p.convergent_interval, steps) if p else None,
    }


def phases_from_record(record: dict[str, Any], fit: np.ndarray) -> Phases | None:
    """The :class:`Phases` of a :func:`finding_record` (with ``fit``, the fitted curve), None when not fitted."""
    if record.get("emergent_index") is None:
        return None

    def interval(key: str) -> tuple[int, int] | None:
        value = record.get(key)
        return (int(value["index"][0]), int(value["index"][1])) if value else None

    return Phases(int(record["emergent_index"]), int(record["convergent_index"]), np.asarray(fit),
                  float(record["sse"]), interval("emergent_interval"), interval("convergent_interval"))  # fmt: skip


def phase_labels(n_steps: int, phases: Phases) -> np.ndarray:
    """Phase index (0, 1, 2 for :data:`PHASE_NAMES`) of each of ``n_steps`` checkpoints."""
    index = np.arange(n_steps)
    return (index >= phases.emergent).astype(np.int64) + (index >= phases.convergent).astype(np.int64)


def phase_agreement(a: Phases, b: Phases, steps: Sequence[int]) -> dict[str, float | int]:
    """How far two sets of phase boundaries agree (the reviewers' question: do the perspectives give one story?).

    Returns the gap of each boundary in checkpoints and in decades of training steps (log10(step + 1)), and the
    share of checkpoints both assign to the same phase.
    """
    log_steps = np.log10(np.asarray(steps, dtype=np.float64) + 1)
    n = len(log_steps)
    out: dict[str, float | int] = {}
    for name in ("emergent", "convergent"):
        i, j = getattr(a, name), getattr(b, name)
        out[f"{name}_gap_checkpoints"] = int(abs(i - j))
        out[f"{name}_gap_decades"] = float(abs(log_steps[i] - log_steps[j]))
    out["same_phase_fraction"] = float(np.mean(phase_labels(n, a) == phase_labels(n, b)))
    return out
