"""The drift stage's phase fits (paper Sec. 4.1): two perspectives, three time axes, one to ``drift.max_segments``
segments each.

The perspectives are (a) the median decoder cosine to final over live features and (b) the median activation-space
progress measure of concept-level features. Each is fitted against the checkpoint index (the paper's axis, and the
fit the figures shade and Fig. 2 / Fig. 4 choose their checkpoints from), log10(step + 1) and the training step
(:func:`saetrack.analysis.phases.find_phases`). What varies between runs - chain seed, model seed, a longer warm-up
- is the scale stage's seed study (:mod:`saetrack.stages.scale.seeds`), which fits its curves with these same
functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from saetrack.analysis import phases as ph
from saetrack.config.run import RunConfig

__all__ = [
    "FIGURE_AXIS",
    "PERSPECTIVES",
    "PHASE_RULE",
    "fit_perspectives",
    "fitted_curves",
    "phase_records",
]


#: The phase curves, in the order of their perspectives (a) and (b).
PERSPECTIVES: tuple[str, str] = ("drift", "progress")
#: The axis whose three-segment fit the figures shade and Fig. 2 / Fig. 4 read (the paper's figures' x).
FIGURE_AXIS = "index"
#: The change-point rule, as written into the manifest and results.
PHASE_RULE = (
    "curves: (a) median decoder cosine to final over live features, (b) median activation-space progress measure of "
    "concept-level features; each fitted against the checkpoint index, log10(step + 1) and the training step by "
    "least-squares continuous piecewise-linear fits of 1 to drift.max_segments segments (knots at checkpoints, each "
    "segment >= drift.min_phase_checkpoints checkpoints, every knot set tried), compared by BIC = n ln(SSE/n) + "
    "2s ln n (s segments: intercept, slope, s-1 slope changes, s-1 knot positions); the preferred count is the "
    "lowest BIC, and a preferred count equal to the largest tried means the curve needs at least that many; the "
    "paper's three phases are the two knots of the three-segment fit"
)


def fit_perspectives(run: RunConfig, steps: np.ndarray, curves: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """``{perspective: {axis: PhaseFinding}}`` for each curve of ``curves`` (``[T]`` each) on every axis of
    :data:`saetrack.analysis.phases.PHASE_AXES` (Sec. 4.1)."""
    cfg = run.drift
    out: dict[str, dict[str, Any]] = {}
    for name, curve in curves.items():
        out[name] = {}
        for axis in ph.PHASE_AXES:
            x = ph.phase_axis(steps, axis)
            out[name][axis] = ph.find_phases(x, curve, axis=axis, min_phase=cfg.min_phase_checkpoints,
                                             max_segments=cfg.max_segments)  # fmt: skip
    return out


def phase_records(findings: dict[str, dict[str, Any]], steps: np.ndarray) -> dict[str, Any]:
    """The manifest's ``phases`` section: the rule, and per perspective and axis the
    :func:`~saetrack.analysis.phases.finding_record`; the agreement of the two perspectives' three-segment
    boundaries on :data:`FIGURE_AXIS` (None when either could not be fitted)."""
    records: dict[str, Any] = {"rule": PHASE_RULE, "figure_axis": FIGURE_AXIS}
    for name, by_axis in findings.items():
        records[name] = {axis: ph.finding_record(finding, steps) for axis, finding in by_axis.items()}
    a, b = (findings[p][FIGURE_AXIS].phases for p in PERSPECTIVES)
    records["agreement"] = ph.phase_agreement(a, b, steps.tolist()) if a is not None and b is not None else None
    return records


def fitted_curves(findings: dict[str, dict[str, Any]], n: int) -> dict[str, np.ndarray]:
    """The curves the figures draw, on :data:`FIGURE_AXIS`: per perspective ``<name>_fit`` (three segments, else the
    largest count fitted; NaN: none) and ``<name>_preferred_fit`` (the count BIC prefers)."""
    out: dict[str, np.ndarray] = {}
    for name, by_axis in findings.items():
        finding = by_axis[FIGURE_AXIS]
        fits = finding.fits
        three = finding.phases.fit if finding.phases is not None else (fits[max(fits)].fit if fits else None)
        preferred = fits[finding.preferred].fit if fits else None
        out[f"{name}_fit"] = np.full(n, np.nan) if three is None else np.asarray(three)
        out[f"{name}_preferred_fit"] = np.full(n, np.nan) if preferred is None else np.asarray(preferred)
    return out
