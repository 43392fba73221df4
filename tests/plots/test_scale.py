"""Fig. S6: the scale study's summary, one line per size on four shared panels, drift phases marked; Fig. S8: the seed
study's phase curves and the segment counts BIC prefers."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_hex

from saetrack.analysis.drift import Phases
from saetrack.plots.scale import CURVE_TITLES, scale_summary_figure, seed_study_figure


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


def _seed_run(name: str, model: int, chain: int, preferred: int, boundaries: list[int | None]) -> dict[str, Any]:
    entry = {"preferred": preferred, "at_cap": preferred == 6, "three_index": boundaries, "three_step": [0, 0]}
    axes = {"index": entry, "log_step": {**entry, "preferred": 2, "at_cap": False}}
    return {
        "name": name,
        "model_seed": model,
        "chain_seed": chain,
        "warmup_steps": 12 if "warmup" in name else 4,
        "phases": {"drift": axes, "progress": axes},
    }


def test_seed_study_figure_draws_every_run_its_boundaries_and_the_counts() -> None:
    steps = [0, 1, 2, 4, 8, 16]
    runs = [_seed_run("m0-c0", 0, 0, 3, [2, 4]), _seed_run("m0-c1", 0, 1, 6, [1, None]),
            _seed_run("m1-c0", 1, 0, 3, [2, 3]), _seed_run("warmup12-m0-c0", 0, 0, 2, [3, 4])]  # fmt: skip
    curve = np.linspace(0.2, 1.0, 6)
    curves = {p: {r["name"]: curve - 0.05 * k for k, r in enumerate(runs)} for p in ("drift", "progress")}
    numbers = {"steps": steps, "runs": runs,
               "curves": {"drift": {"mean": curve.tolist(), "sd": [0.05] * 6}}}  # fmt: skip
    fig = seed_study_figure(numbers, curves)
    drift, drift_strip, drift_counts, progress, progress_strip, _ = fig.axes
    assert [drift.get_title(), progress.get_title()] == list(CURVE_TITLES.values())
    assert drift_counts.get_title() == "segments BIC prefers (+: the largest tried)"
    assert fig._suptitle.get_text().startswith("phases over seeds")
    labels = drift.get_legend_handles_labels()[1]
    figure_labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert figure_labels[-2:] == ["Emergent starts (3 segments)", "Convergent starts (3 segments)"]
    assert labels == ["seed runs: mean +- 2 sd", "m0-c0", "m0-c1", "m1-c0", "warmup12-m0-c0 (warm-up 12 steps)"]
    assert "seed runs: mean +- 2 sd" not in progress.get_legend_handles_labels()[1]  # no band without its curves
    band = drift.collections[0].get_paths()[0].vertices
    assert band[:, 1].min() == pytest.approx(0.1) and band[:, 1].max() == pytest.approx(1.1)  # mean +- 2 sd
    lines = {line.get_label(): line for line in drift.lines}
    np.testing.assert_array_equal(lines["m0-c0"].get_xdata(), np.array(steps) + 1)
    np.testing.assert_allclose(lines["m1-c0"].get_ydata(), curve - 0.1)
    colour = {name: to_hex(line.get_color()) for name, line in lines.items()}
    assert colour["m0-c0"] == colour["m0-c1"] != colour["m1-c0"]  # colour: the model seed
    assert (lines["m0-c0"].get_linestyle(), lines["m0-c1"].get_linestyle()) == ("-", "--")  # chain seed
    control = lines["warmup12-m0-c0 (warm-up 12 steps)"]
    assert control.get_color() == "tab:red" and control.get_linestyle() == "--"  # the warm-up control
    # every fitted three-segment boundary (index) in the strip under the curves, one row per run, at x = step + 1;
    # triangles start the Emergent phase, squares the Convergent one; m0-c1's missing one is left out
    marks = [(line.get_xdata()[0], line.get_ydata()[0], line.get_marker()) for line in drift_strip.lines]
    assert marks == [(3, 0, "^"), (9, 0, "s"), (2, 1, "^"), (3, 2, "^"), (5, 2, "s"), (5, 3, "^"), (9, 3, "s")]
    assert [t.get_text() for t in drift_strip.get_yticklabels()] == [r["name"] for r in runs]
    assert progress_strip.get_xlabel() == "checkpoint step + 1"
    table = drift_counts.images[0].get_array()
    np.testing.assert_array_equal(table, [[3, 2], [6, 2], [3, 2], [2, 2]])
    assert [t.get_text() for t in drift_counts.texts] == ["3", "2", "6+", "2", "3", "2", "2", "2"]
    assert [t.get_text() for t in drift_counts.get_xticklabels()] == ["index", "log_step"]
    assert [t.get_text() for t in drift_counts.get_yticklabels()] == [r["name"] for r in runs]
    assert seed_study_figure(numbers, curves, title="seeds")._suptitle.get_text() == "seeds"
    plt.close("all")
