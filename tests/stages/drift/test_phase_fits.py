"""The drift stage's phase fits: two curves, three axes, records and the curves the figures draw."""

from __future__ import annotations

import json

import numpy as np

from saetrack.analysis import phases as ph
from saetrack.config import RunConfig
from saetrack.stages.drift.phase_fits import FIGURE_AXIS, fit_perspectives, fitted_curves, phase_records

STEPS = np.array([0, 1, 2, 4, 8, 16, 32, 64, 100, 200, 300, 400, 500, 600, 700, 800])


def _curves() -> dict[str, np.ndarray]:
    x = np.arange(STEPS.size, dtype=float)
    drift = np.interp(x, [0, 4, 10, 15], [0.2, 0.2, 0.9, 1.0])  # three segments on the checkpoint index
    progress = np.interp(x, [0, 6, 15], [0.1, 0.5, 0.6])  # two segments
    return {"drift": drift, "progress": progress}


def test_every_curve_on_every_axis_and_the_figures_axis_is_the_index(smoke: RunConfig) -> None:
    findings = fit_perspectives(smoke, STEPS, _curves())
    assert set(findings) == {"drift", "progress"} and all(set(f) == set(ph.PHASE_AXES) for f in findings.values())
    assert FIGURE_AXIS == "index"
    index = findings["drift"]["index"]
    assert index.preferred == 3 and index.phases is not None and index.phases.boundaries == (4, 10)
    assert findings["progress"]["index"].preferred == 2
    assert max(index.fits) == smoke.drift.max_segments  # 16 checkpoints allow all 6
    # the same curve against the step axis is another finding (log-spaced early checkpoints crowd near 0)
    assert findings["drift"]["step"].axis == "step"


def test_records_are_json_ready_with_the_agreement_and_the_drawn_curves(smoke: RunConfig) -> None:
    findings = fit_perspectives(smoke, STEPS, _curves())
    records = json.loads(json.dumps(phase_records(findings, STEPS)))
    assert records["figure_axis"] == "index" and "BIC" in records["rule"]
    assert records["drift"]["index"]["emergent_step"] == 8 and records["drift"]["index"]["convergent_step"] == 300
    assert set(records["agreement"]) == {
        "emergent_gap_checkpoints",
        "emergent_gap_decades",
        "convergent_gap_checkpoints",
        "convergent_gap_decades",
        "same_phase_fraction",
    }
    curves = fitted_curves(findings, STEPS.size)
    np.testing.assert_allclose(curves["drift_fit"], _curves()["drift"], atol=1e-9)  # an exact three-segment curve
    np.testing.assert_allclose(curves["progress_preferred_fit"], _curves()["progress"], atol=1e-9)
    short = fit_perspectives(smoke, STEPS[:3], {k: v[:3] for k, v in _curves().items()})
    assert phase_records(short, STEPS[:3])["agreement"] is None
    assert np.isfinite(fitted_curves(short, 3)["drift_fit"]).all()  # the largest count fitted instead
