"""The checkpoint-density figure, drawn from a small hand-made study."""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from saetrack import paths
from saetrack.plots.density import DENSITY_FIGURE, density_colour, density_figure, save_density_figure

STEPS = [0, 1, 2, 4, 8]


def _phases(emergent: int | None, convergent: int | None) -> dict:
    record = {"emergent_step": emergent, "convergent_step": convergent}
    return {axis: record for axis in ("index", "log_step", "step")}


def _chain(stride: int, steps: list[int], persistence: float) -> dict:
    links = [{"step": s, "tokens_to_converge": None if i == 0 else 100.0 * i, "explained_variance": 0.9, "l0": 5.0}
             for i, s in enumerate(steps)]  # fmt: skip
    if stride != 1:
        for link in links[1:]:
            link.update(agreement=0.6, agreement_median_cosine=0.8)
    pairs = [{"from_step": a, "to_step": b, "persistence": persistence, "null": 0.0, "median_cosine": 0.9}
             for a, b in itertools.pairwise(steps)]  # fmt: skip
    return {"stride": stride, "steps": steps, "links": links, "pairs": pairs,
            "median_cosine_to_final": list(np.linspace(0.2, 1.0, len(steps))), "phases": _phases(1, 4)}  # fmt: skip


STUDY = {
    "config": {"strides": [2], "link_tokens": 1000},
    "figure_axis": "index",
    "chains": [_chain(1, STEPS, 0.9), _chain(2, [0, 2, 8], 0.5)],
    "recommendation": {"stride": 1},
}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_density_figure_draws_every_chain_on_four_log_panels() -> None:
    fig = density_figure(STUDY, title="smoke")
    persistence, agreement, tokens, to_final = fig.axes
    assert all(ax.get_xscale() == "log" for ax in fig.axes)
    # (a) a persistence line and a null line per chain, at the later link's step + 1
    lines = [line for line in persistence.lines if len(set(line.get_xdata())) > 1]  # not the phase boundaries
    np.testing.assert_array_equal(lines[0].get_xdata(), [2, 3, 5, 9])
    np.testing.assert_array_equal(lines[0].get_ydata(), [0.9] * 4)
    np.testing.assert_array_equal(lines[1].get_ydata(), [0.0] * 4)  # the null, dotted
    assert lines[1].get_linestyle() == ":"
    np.testing.assert_array_equal(lines[2].get_xdata(), [3, 9])  # stride 2: pairs (0, 2) and (2, 8)
    # (b) agreement only for the sparse chain; (c) tokens of the links after the first, and the budget
    assert len(agreement.lines) == 2 and list(agreement.lines[0].get_ydata()) == [0.6, 0.6]
    assert list(tokens.lines[0].get_ydata()) == [100, 200, 300, 400] and tokens.lines[1].get_ydata()[0] == 1000
    # phase boundaries of both chains on (a) and (d), at step + 1: emergent 2, convergent 5
    boundaries = [line.get_xdata()[0] for line in to_final.lines if line.get_linestyle() in ("--", ":")]
    assert sorted(boundaries) == [2, 2, 5, 5]
    assert "every 1 checkpoint" in fig._suptitle.get_text()
    assert density_colour(0) != density_colour(1)
    assert [t.get_text() for t in persistence.get_legend().get_texts()] == [
        "every checkpoint (the run's chain)",
        "every 2nd checkpoint",
    ]


def test_unfitted_phases_and_missing_values_leave_gaps_not_errors() -> None:
    chain = _chain(4, [0, 8], 0.4)
    chain["phases"] = _phases(None, None)
    chain["pairs"][0]["persistence"] = None
    fig = density_figure({**STUDY, "chains": [STUDY["chains"][0], chain], "recommendation": {}})
    sparse = [line for line in fig.axes[0].lines if list(line.get_xdata()) == [9.0]]
    assert len(sparse) == 2 and np.isnan(sparse[0].get_ydata()).all() and sparse[1].get_ydata()[0] == 0.0
    boundaries = [line for line in fig.axes[3].lines if line.get_linestyle() in ("--", ":")]
    assert len(boundaries) == 2  # only the dense chain's: the sparse one has none fitted
    assert fig._suptitle.get_text() == "checkpoint density"


def test_save_density_figure_writes_png_and_pdf_under_the_presets_figures(tmp_path: Path) -> None:
    written = save_density_figure(density_figure(STUDY), "smoke")
    assert [p.name for p in written] == [f"{DENSITY_FIGURE}.png", f"{DENSITY_FIGURE}.pdf"]
    assert all(p.parent == paths.figures_dir("smoke") and p.stat().st_size > 1000 for p in written)
