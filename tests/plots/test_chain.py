"""Figures of the chain (Fig. S2-S5) drawn from small hand-made curves, metrics and comparisons."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import same_color
from matplotlib.figure import Figure
from matplotlib.text import Text

from saetrack.plots.chain import agreement_figure, chain_quality_figure, chain_training_figure, convergence_figure


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _curve(scale: float) -> dict[str, list[float]]:
    tokens = [100.0, 200.0, 300.0]
    return {"tokens": tokens, "loss": [3 * scale, 2 * scale, scale], "mse_loss": [2 * scale, scale, 0.5 * scale],
            "l1_loss": [scale, scale, 0.5 * scale]}  # fmt: skip


def _metrics(value: float) -> dict[str, float]:
    keys = ("explained_variance", "ce_recovered", "l0", "dead_fraction", "dense_fraction", "mse")
    return {key: value + i for i, key in enumerate(keys)}


def _descending(scale: float) -> dict[str, list[float]]:
    """Ten logged steps; with END_WINDOW = 0.1 the end loss is the last value, the half-way loss the fifth."""
    loss = [scale * v for v in (10.0, 8.0, 6.0, 4.0, 3.0, 2.5, 2.0, 1.5, 1.2, 1.0)]
    return {"tokens": [100.0 * (i + 1) for i in range(10)], "loss": loss, "mse_loss": loss, "l1_loss": loss}


def _smallest_font(fig: Figure) -> float:
    fig.canvas.draw()
    return min(t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip())


def test_chain_training_figure_puts_the_first_link_apart() -> None:
    fig = chain_training_figure({4: _curve(1.0), 0: _curve(2.0), 16: _curve(0.5)}, title="chain")
    first, summary, later, normalised, bar = fig.axes
    assert len(summary.lines) == 3  # first batch / end, half-way / end, and the line at 1
    assert first.get_title() == "(a) first SAE (step 0), random init"
    assert [line.get_label() for line in first.lines] == ["loss (Eq. 3)", "MSE", "λ·L1"]
    np.testing.assert_array_equal(first.lines[0].get_ydata(), [6.0, 4.0, 2.0])
    assert len(later.lines) == 2 and later.get_yscale() == "log" and later.get_xscale() == "log"
    np.testing.assert_array_equal(later.lines[0].get_ydata(), [3.0, 2.0, 1.0])  # step 4, then 16
    np.testing.assert_allclose(normalised.lines[1].get_ydata(), [3.0, 2.0, 1.0])  # divided by its end loss (0.5)
    assert [t.get_text() for t in bar.get_yticklabels()] == ["4", "16"]  # one colour per link, labelled by step
    assert later.lines[0].get_color() != later.lines[1].get_color()
    assert fig._suptitle.get_text() == "chain"


def test_chain_training_figure_summarises_how_far_each_link_trains() -> None:
    fig = chain_training_figure({0: _descending(1.0), 8: _descending(2.0), 64: _curve(1.0)})
    starts, halves = fig.axes[1].lines[:2]
    np.testing.assert_array_equal(starts.get_xdata(), [9, 65])  # step + 1
    # first batch / end: 10 / 1 for the descending link; 3 / 1 for _curve (the end window is its last value)
    np.testing.assert_allclose(starts.get_ydata(), [10.0, 3.0])
    # half-way / end: the window ending before index 5 (value 3) for the first; before index 1 (value 3) for _curve
    np.testing.assert_allclose(halves.get_ydata(), [3.0, 3.0])


def test_chain_training_figure_with_one_link_has_no_colour_bar() -> None:
    fig = chain_training_figure({0: _descending(1.0)})
    assert len(fig.axes) == 4 and not fig.axes[2].lines and len(fig.axes[3].lines) == 1  # only the line at 1


def test_chain_figures_fit_1600_pixels_and_have_no_text_below_9_points() -> None:
    curves = {s: _descending(1.0 + s) for s in (0, 1, 2, 4, 8, 16, 32, 64, 100, 200)}
    links = [{"step": s, "metrics": _metrics(0.1)} for s in curves]
    item = {"step": 8, "scratch_curve": _curve(1.0), "recurrent_curve": _curve(0.5), "target_loss": 1.0,
            "scratch_tokens_to_target": 300, "recurrent_tokens_to_target": 100, "token_ratio": 0.05}  # fmt: skip
    agreement = [{"step": s, "matched_cosines": np.linspace(0.1, 1.0, 50), "mean_matched_cosine": 0.55,
                  "fraction_above_threshold": 0.4} for s in (1, 64, 700, 1400, 2000, 2500)]  # fmt: skip
    for fig in (
        chain_training_figure(curves),
        chain_quality_figure(links, [{"step": 8, "metrics": _metrics(0.2)}]),
        convergence_figure([{**item, "step": s} for s in (1, 64, 700, 1400, 2000)], link_tokens=150),
        agreement_figure(agreement, [], threshold=0.7),
    ):
        assert fig.get_size_inches()[0] * 150 <= 1600
        assert _smallest_font(fig) >= 9


def test_chain_quality_figure_has_six_panels_and_baseline_crosses() -> None:
    links = [{"step": s, "metrics": _metrics(0.1 * i)} for i, s in enumerate((0, 1, 4, 16))]
    fig = chain_quality_figure(links, baselines=[{"step": 16, "metrics": _metrics(0.9)}])
    assert len(fig.axes) == 6
    assert [ax.get_ylabel() for ax in fig.axes][:3] == ["explained variance", "CE loss recovered", "mean L0"]
    ev = fig.axes[0]
    np.testing.assert_array_equal(ev.lines[0].get_xdata(), [1, 2, 5, 17])  # step + 1 on a log axis
    np.testing.assert_allclose(ev.lines[0].get_ydata(), [0.0, 0.1, 0.2, 0.3])
    np.testing.assert_array_equal(ev.lines[1].get_xdata(), [17])
    assert ev.get_xscale() == "log"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["SAE-Track chain", "from scratch"]  # below
    assert all(ax.get_legend() is None for ax in fig.axes)  # no legend over the curves
    assert all(len(ax.lines) == 1 for ax in chain_quality_figure(links).axes)  # no baselines: no crosses


def test_chain_quality_figure_shows_every_dead_fraction_on_a_symlog_axis() -> None:
    links = [
        {"step": s, "metrics": {**_metrics(0.0), "dead_fraction": d}} for s, d in ((0, 0.0), (1, 0.002), (4, 0.03))
    ]
    fig = chain_quality_figure(links, baselines=[{"step": 4, "metrics": {**_metrics(0.0), "dead_fraction": 0.45}}])
    dead = fig.axes[3]
    assert dead.get_yscale() == "symlog" and dead.get_ylabel() == "dead fraction (log above 0.001)"
    assert dead.get_ylim()[0] < 0 and dead.get_ylim()[1] == 1.0  # zero shows; the top is the decade above 0.45
    np.testing.assert_allclose(dead.lines[0].get_ydata(), [0.0, 0.002, 0.03])


def test_chain_quality_figure_joins_each_baseline_to_its_link_and_names_the_budgets() -> None:
    links = [{"step": s, "metrics": _metrics(0.1 * i)} for i, s in enumerate((0, 1, 4, 16))]
    fig = chain_quality_figure(
        links,
        baselines=[{"step": 16, "metrics": _metrics(0.9)}],
        seed_controls=[{"step": 16, "metrics": _metrics(0.85)}],
        link_tokens=50_000,
        baseline_tokens=1_000_000,
    )
    ev = fig.axes[0]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "SAE-Track chain (links: 50,000 tokens)",
        "from scratch (1,000,000 tokens)",
        "from scratch, second seed",
    ]
    np.testing.assert_allclose(ev.lines[2].get_ydata(), [0.85])  # the second seed's plus
    gap = ev.lines[3]  # dotted: chain link at step 16 (0.3) to its from-scratch SAE (0.9)
    np.testing.assert_array_equal(gap.get_xdata(), [17, 17])
    np.testing.assert_allclose(gap.get_ydata(), [0.3, 0.9])
    assert gap.get_linestyle() == ":"


def test_convergence_figure_one_panel_per_baseline_with_ratio() -> None:
    item = {"step": 8, "scratch_curve": _curve(1.0), "recurrent_curve": _curve(0.5), "target_loss": 1.0,
            "scratch_tokens_to_target": 300, "recurrent_tokens_to_target": 100, "token_ratio": 0.05}  # fmt: skip
    missed = {**item, "step": 48, "recurrent_tokens_to_target": None, "token_ratio": None}
    trivial = {**item, "step": 1, "token_ratio": 0.004, "trivial": True, "recurrent_loss_at_link_budget": 1.5,
               "link_budget_excess": 0.5}  # fmt: skip
    slow = {**item, "step": 700, "token_ratio": 0.4}
    fig = convergence_figure([item, missed, trivial, slow], link_tokens=150)
    panels, spare = fig.axes[:4], fig.axes[4:]
    assert [ax.get_title() for ax in panels] == [
        "step 8: ratio 0.050 (1/20)",
        "step 48: recurrent did not reach target",
        "step 1: ratio 0.004 (1/250), trivial\nprobe at link budget: +50.0% vs target",
        "step 700: ratio 0.400 (1/2.5)",
    ]
    assert fig.get_size_inches()[0] == pytest.approx(10.5)  # wrapped: 3 panels a row, two rows
    assert len(spare) == 2 and not any(ax.axison for ax in spare)
    # curves, the target line, and one marker per curve that reached it
    assert len(panels[0].lines) == 2 + 1 + 2 and len(panels[1].lines) == 2 + 1 + 1
    assert panels[0].lines[2].get_ydata()[0] == 1.0
    # the probe's smoothed loss at the end of the link budget; one shared legend, in the first free panel
    at_link = panels[2].lines[-1]
    assert at_link.get_xdata()[0] == 150 and at_link.get_ydata()[0] == 1.5
    assert all(ax.get_legend() is None for ax in panels)
    labels = [t.get_text() for t in spare[0].get_legend().get_texts()]
    assert "link budget (150 tokens)" in labels and "probe at the link budget" in labels


def test_convergence_figure_puts_the_legend_below_a_full_grid() -> None:
    item = {"step": 8, "scratch_curve": _curve(1.0), "recurrent_curve": _curve(0.5), "target_loss": 1.0,
            "scratch_tokens_to_target": 300, "recurrent_tokens_to_target": 100, "token_ratio": 0.05}  # fmt: skip
    fig = convergence_figure([item] * 3, link_tokens=150)
    assert len(fig.axes) == 3 and len(fig.legends) == 1


def test_agreement_figure_histograms_and_index_stability() -> None:
    agreement = [{"step": 16, "matched_cosines": np.linspace(0.1, 1.0, 50), "mean_matched_cosine": 0.55,
                  "fraction_above_threshold": 0.4}]  # fmt: skip
    stability = [{"to_step": s, "hungarian_same_index": 1.0, "argmax_same_index": 0.9, "mean_same_index_cosine": 0.8}
                 for s in (1, 2, 4)]  # fmt: skip
    fig = agreement_figure(agreement, stability, threshold=0.7)
    histogram, middle, right, strip = fig.axes
    assert histogram.get_title() == "step 16\nchain: 0.55, 40%"  # the numbers above the bars
    assert len(histogram.patches) == 1  # one step histogram: no seed-to-seed control here
    assert strip.get_legend().get_texts()[0].get_text() == "chain link vs independent SAE"
    assert len(middle.lines) == 2  # chain vs scratch only: no seed-to-seed series
    assert len(right.lines) == 3
    np.testing.assert_array_equal(right.lines[0].get_xdata(), [2, 3, 5])
    np.testing.assert_array_equal(right.lines[1].get_ydata(), [0.9, 0.9, 0.9])
    empty = agreement_figure([], stability, threshold=0.7)
    assert "no independent SAEs" in empty.axes[0].texts[0].get_text() and len(empty.axes) == 3


def test_agreement_figure_draws_the_seed_to_seed_ceiling_beside_the_chain() -> None:
    seed = {"matched_cosines": np.linspace(0.5, 1.0, 40), "mean_matched_cosine": 0.9, "fraction_above_threshold": 0.8}
    agreement = [
        {"step": 16, "matched_cosines": np.linspace(0.1, 1.0, 50), "mean_matched_cosine": 0.55,
         "fraction_above_threshold": 0.4, "seed_to_seed": seed},
        {"step": 64, "matched_cosines": np.linspace(0.2, 1.0, 50), "mean_matched_cosine": 0.6,
         "fraction_above_threshold": 0.5, "seed_to_seed": None},
    ]  # fmt: skip
    first, second, middle, _, _ = agreement_figure(agreement, [], threshold=0.7).axes
    assert first.get_title() == "step 16\nchain: 0.55, 40%\nseed: 0.90, 80%"
    assert second.get_title() == "step 64\nchain: 0.60, 50%"
    chain, control = first.patches  # the second seed: grey and dashed
    assert same_color(control.get_edgecolor(), "tab:gray") and control.get_linestyle() != chain.get_linestyle()
    assert first.get_shared_y_axes().joined(first, second)  # histograms compare on one scale
    labels = [line.get_label() for line in middle.lines]
    assert labels == [
        "chain: mean cosine",
        "chain: fraction > 0.7",
        "seed-to-seed: mean cosine",
        "seed-to-seed: fraction > 0.7",
    ]
    np.testing.assert_array_equal(middle.lines[0].get_xdata(), [17, 65])
    np.testing.assert_array_equal(middle.lines[2].get_xdata(), [17])  # only where the control ran
    np.testing.assert_allclose(middle.lines[2].get_ydata(), [0.9])
