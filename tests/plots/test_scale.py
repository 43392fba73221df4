"""Fig. S6: the scale study's summary, one line per size on four shared panels, drift phases marked."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest

from saetrack.analysis.drift import Phases
from saetrack.plots.scale import scale_summary_figure


def _size(label: str, offset: float) -> SimpleNamespace:
    steps = np.array([0, 1, 2, 4, 8, 16])
    drift = SimpleNamespace(
        steps=steps, median_cosine=np.linspace(0.1, 1.0, 6) - offset, drift_phases=Phases(2, 4, np.zeros(6), 0.0)
    )
    curves = {"concept": np.linspace(0.0, 0.5, 6) + offset, "token": np.full(6, 0.8)}
    return SimpleNamespace(
        label=label,
        drift=drift,
        median_progress=lambda kind: curves[kind],
        formed_share=lambda: np.linspace(0.0, 1.0, 6),
    )


def test_scale_summary_has_a_line_per_size_on_each_panel() -> None:
    sizes = [_size("small", 0.0), _size("large", 0.05)]
    fig = scale_summary_figure(sizes)
    assert [ax.get_title() for ax in fig.axes] == [
        "concept-level: median progress measure",
        "token-level: median progress measure",
        "median decoder cosine to final",
        "share of live features formed",
    ]
    concept, token, drift, formed = fig.axes
    assert [line.get_label() for line in concept.lines] == ["small", "large"]
    np.testing.assert_allclose(concept.lines[1].get_ydata(), np.linspace(0.0, 0.5, 6) + 0.05)
    np.testing.assert_array_equal(token.lines[0].get_xdata(), [1, 2, 3, 5, 9, 17])
    # the drift panel: per size a curve, a triangle where Emergent starts and a square where Convergent starts
    assert len(drift.lines) == 2 * 3
    emergent, convergent = drift.lines[1], drift.lines[2]
    assert (emergent.get_marker(), emergent.get_xdata()[0]) == ("^", 3)
    assert emergent.get_ydata()[0] == pytest.approx(0.46)  # the small size's median cosine at checkpoint 2
    assert (convergent.get_marker(), convergent.get_xdata()[0]) == ("s", 9)
    assert len(formed.lines) == 2 and fig._suptitle.get_text() == "scale study"
    assert scale_summary_figure(sizes, title="nano sizes")._suptitle.get_text() == "nano sizes"
    plt.close("all")
