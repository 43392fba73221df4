"""Training phases (paper Sec. 4.1) as a finding: piecewise-linear fits of one up to ``max_segments`` segments, the
count an information criterion prefers, on three time axes.

* :func:`fit_segments` — the least-squares continuous linear fit with ``s`` segments (knots at checkpoints, every
  admissible knot set tried) and its BIC; :func:`compare_segment_counts` fits every count the curve allows.
* :func:`find_phases` — one curve on one axis: the fits of 1..``max_segments`` segments, the count BIC prefers
  (and whether that is the largest count tried: then the curve is smoother than any small number of phases), and the
  paper's three phases (Initialization & Warmup, Emergent, Convergent) as the two knots of the three-segment fit.
* :func:`phase_axis` — the axes a curve is fitted against: the checkpoint index (the paper's figures), log10(step + 1)
  and the training step itself; a count that depends on the axis is not a property of the model.
* :func:`segments_within_noise` — the fewest segments whose fit of a mean curve over several runs lies within the
  runs' own spread (a chi-square test with the run-to-run variance as the noise), the count the data can resolve.
* :func:`phase_labels` and :func:`phase_agreement` compare two sets of boundaries.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "MAX_SEGMENTS",
    "PHASE_AXES",
    "PHASE_NAMES",
    "PhaseFinding",
    "Phases",
    "SegmentFit",
    "compare_segment_counts",
    "detect_phases",
    "find_phases",
    "finding_record",
    "fit_segments",
    "max_fittable_segments",
    "median_curve",
    "phase_agreement",
    "phase_axis",
    "phase_labels",
    "phases_from_record",
    "segments_within_noise",
]


#: The three phases of feature evolution (paper Sec. 4.1), in order.
PHASE_NAMES: tuple[str, str, str] = ("Initialization & Warmup", "Emergent", "Convergent")
#: The default largest number of segments fitted (``drift.max_segments``): twice the paper's three, so that "three"
#: can lose to more.
MAX_SEGMENTS = 6
#: The time axes a phase curve is fitted against (:func:`phase_axis`).
PHASE_AXES: tuple[str, ...] = ("index", "log_step", "step")
#: SSE floor relative to the curve's range: exact fits (numerically zero SSE) compare by parameter count alone.
SSE_FLOOR = 1e-9


@dataclass(frozen=True)
class Phases:
    """Two phase boundaries on a curve: the Emergent phase starts at checkpoint index ``emergent``, the Convergent
    phase at ``convergent`` (so the Initialization & Warmup phase is ``[0, emergent)``)."""

    emergent: int
    convergent: int
    #: The fitted three-segment curve at every checkpoint, and its residual sum of squares.
    fit: np.ndarray
    sse: float

    @property
    def boundaries(self) -> tuple[int, int]:
        return self.emergent, self.convergent


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


def phase_axis(steps: Sequence[int], axis: str) -> np.ndarray:
    """The x values a phase curve is fitted against: ``"index"`` (0..T-1, the axis of the paper's Fig. 4 and 6),
    ``"log_step"`` (log10(step + 1)) or ``"step"`` (the training step)."""
    s = np.asarray(steps, dtype=np.float64)
    if axis == "index":
        return np.arange(s.size, dtype=np.float64)
    if axis == "log_step":
        return np.log10(s + 1.0)
    if axis == "step":
        return s
    raise ValueError(f"axis = {axis!r} is invalid: allowed axes are {PHASE_AXES}.")


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
    """``[P, T, s + 1]`` hinge designs ``1, x, (x - x_k1)_+, ...`` of every knot set (x scaled to [0, 1])."""
    x = (xs - xs[0]) / max(float(xs[-1] - xs[0]), 1e-300)
    base = np.broadcast_to(np.stack([np.ones_like(x), x], axis=1), (len(knots), x.size, 2))
    hinges = np.maximum(x[None, :, None] - x[knots][:, None, :], 0.0)
    return np.concatenate([base, hinges], axis=2)


def _best_fits(xs: np.ndarray, ys: np.ndarray, n_segments: int, min_phase: int) -> tuple[np.ndarray, np.ndarray]:
    """Best knot set of each curve of ``ys`` ``[B, T]`` (NaN left out): ``([B, s-1] knots, [B] SSE)``.

    Exact and vectorised: every admissible knot set's design is orthonormalised once per pattern of finite values
    (a batched QR), and the SSE of every curve on every design is ``|y - Q Q^T y|^2`` (the residual itself, not a
    difference of squares, so exact fits come out at rounding level). Near-ties (1e-12 relative) go to the earliest
    set.
    """
    knots = _knot_sets(xs.size, n_segments, min_phase)
    designs = _designs(xs, knots)
    out_knots = np.zeros((ys.shape[0], n_segments - 1), dtype=np.int64)
    out_sse = np.zeros(ys.shape[0])
    finite = np.isfinite(ys)
    for pattern in np.unique(finite, axis=0):
        rows = np.nonzero((finite == pattern).all(axis=1))[0]
        q, _ = np.linalg.qr(designs[:, pattern, :])  # [P, m, s + 1]
        y = ys[np.ix_(rows, pattern)]  # [B, m]
        projected = np.einsum("pms,bm->bps", q, y)
        residual = y[:, None, :] - np.einsum("pms,bps->bpm", q, projected)
        sse = np.einsum("bpm,bpm->bp", residual, residual)  # [B, P]
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

    The change-point rule behind the paper's three phases: the fit is ``a + b x + c (x - x_e)_+ + d (x - x_c)_+``
    and (e, c) range over every pair with each phase spanning at least ``min_phase`` checkpoints; ties go to the
    earliest pair. NaN values of ``y`` are left out. Whether three segments describe the curve better than other
    counts is :func:`find_phases`' question.
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


@dataclass(frozen=True)
class PhaseFinding:
    """Phases of one curve on one axis as a finding (see :func:`find_phases`)."""

    axis: str
    fits: dict[int, SegmentFit]  # segment count -> fit, every count the curve allows up to the cap
    max_segments: int  # the cap asked for
    phases: Phases | None  # the three-segment boundaries; None when three segments cannot be fitted
    note: str = ""  # why the three phases could not be fitted ("" when they were)

    @property
    def preferred(self) -> int | None:
        """The segment count with the lowest BIC (None: nothing could be fitted)."""
        return min(self.fits, key=lambda s: (self.fits[s].bic, s)) if self.fits else None

    @property
    def preferred_at_cap(self) -> bool:
        """Whether BIC prefers the largest count fitted: the curve needs at least that many segments."""
        return bool(self.fits) and self.preferred == max(self.fits)


def find_phases(
    x: Sequence[float], curve: Sequence[float], *, axis: str = "index", min_phase: int = 2,
    max_segments: int = MAX_SEGMENTS,
) -> PhaseFinding:  # fmt: skip
    """The phases of Sec. 4.1 on ``curve`` against ``x`` (the values of ``axis``), with model choice.

    Fits 1 to ``max_segments`` segments (:func:`compare_segment_counts`; the lowest BIC says which count the curve
    prefers, and a preferred count at the cap says the curve is smoother than any smaller number of phases) and
    takes the three-segment knots as the paper's phase boundaries. With too few checkpoints or finite values for
    three segments, fits as many as the curve allows, returns ``phases=None`` and says why in ``note``.
    """
    if max_segments < 3:
        raise ValueError(f"max_segments = {max_segments} is invalid: must be >= 3 (three phases must be tried).")
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(curve, dtype=np.float64)
    fits = compare_segment_counts(xs, ys, min_phase, max_segments)
    if 3 not in fits:
        n_finite = int(np.isfinite(ys).sum())
        note = (
            f"three phases could not be fitted: they need at least 3 * min_phase = {3 * min_phase} checkpoints and "
            f"4 finite values, the curve has {ys.size} checkpoints and {n_finite} finite values; "
            + (f"fitted {max(fits)} segment(s) instead." if fits else "no segment could be fitted.")
        )
        return PhaseFinding(axis, fits, max_segments, None, note)
    three = fits[3]
    return PhaseFinding(axis, fits, max_segments, Phases(three.knots[0], three.knots[1], three.fit, three.sse))


def segments_within_noise(
    x: Sequence[float], curves: np.ndarray, *, min_phase: int = 2, max_segments: int = MAX_SEGMENTS,
    level: float = 0.95,
) -> dict[str, Any]:  # fmt: skip
    """The fewest segments whose fit of the mean of several runs' curves lies within the runs' own spread.

    ``curves`` is ``[R, T]`` (R >= 2 runs of one curve, e.g. chain seeds x model seeds). The mean curve's noise at
    checkpoint t is ``sd_t / sqrt(R)`` (``sd_t`` the runs' standard deviation there, floored at 1% of its median over
    checkpoints so that a checkpoint where every run agrees does not dominate); a fit with ``s`` segments is
    accepted when ``sum_t ((mean_t - fit_t) / noise_t)^2`` is below the ``level`` quantile of chi-square with
    ``n - 2s`` degrees of freedom. Returns the accepted count (None: none up to ``max_segments``), every count's
    chi-square and threshold, and the mean and sd curves.
    """
    values = np.asarray(curves, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] < 2:
        raise ValueError(f"curves must be [R >= 2 runs, T], got shape {values.shape}.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, sd = np.nanmean(values, axis=0), np.nanstd(values, axis=0, ddof=1)
    noise = np.maximum(sd, 0.01 * max(float(np.nanmedian(sd)), 1e-12)) / np.sqrt(values.shape[0])
    fits = compare_segment_counts(x, mean, min_phase, max_segments)
    chi2, threshold = {}, {}
    for count, fit in fits.items():
        ok = np.isfinite(mean)
        dof = max(int(ok.sum()) - 2 * count, 1)
        chi2[count] = float((((mean - fit.fit) / noise)[ok] ** 2).sum())
        threshold[count] = float(stats.chi2.ppf(level, dof))
    accepted = next((c for c in sorted(fits) if chi2[c] <= threshold[c]), None)
    return {"segments": accepted, "chi2": chi2, "threshold": threshold, "mean": mean, "sd": sd, "runs": len(values)}


def finding_record(finding: PhaseFinding, steps: Sequence[int]) -> dict[str, Any]:
    """A JSON-ready record of a :class:`PhaseFinding` (Sec. 4.1), checkpoint indices also given as ``steps``.

    Keys: ``axis``, ``fitted`` (three phases fitted), ``note`` (why not), ``max_segments`` (the cap asked for),
    ``segments_fitted``, ``preferred_segments`` (lowest BIC) and ``preferred_at_cap``; ``segments``: per count its
    knots (indices and steps), SSE, BIC and BIC minus the lowest; and the three-segment boundaries
    ``emergent_index/_step``, ``convergent_index/_step`` and ``sse`` (None when not fitted).
    """
    steps = [int(s) for s in steps]
    best = min((f.bic for f in finding.fits.values()), default=0.0)
    segments: dict[str, dict[str, Any]] = {}
    for count, fit in finding.fits.items():
        segments[str(count)] = {"knots_index": list(fit.knots), "knots_step": [steps[k] for k in fit.knots],
                                "sse": fit.sse, "bic": fit.bic, "delta_bic": fit.bic - best, "n_points": fit.n_points,
                                "n_params": fit.n_params}  # fmt: skip
    p = finding.phases
    return {
        "axis": finding.axis,
        "fitted": p is not None,
        "note": finding.note,
        "max_segments": finding.max_segments,
        "segments_fitted": max(finding.fits, default=0),
        "preferred_segments": finding.preferred,
        "preferred_at_cap": finding.preferred_at_cap,
        "segments": segments,
        "emergent_index": p.emergent if p else None,
        "emergent_step": steps[p.emergent] if p else None,
        "convergent_index": p.convergent if p else None,
        "convergent_step": steps[p.convergent] if p else None,
        "sse": p.sse if p else None,
    }


def phases_from_record(record: dict[str, Any], fit: np.ndarray) -> Phases | None:
    """The :class:`Phases` of a :func:`finding_record` (with ``fit``, the fitted curve), None when not fitted."""
    if record.get("emergent_index") is None:
        return None
    return Phases(int(record["emergent_index"]), int(record["convergent_index"]), np.asarray(fit),
                  float(record["sse"]))  # fmt: skip


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
