"""Figures of the chain (Fig. S2-S5) drawn from small hand-made curves, metrics and comparisons."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest

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


def test_chain_training_figure_puts_the_first_link_apart() -> None:
    fig = chain_training_figure({4: _curve(1.0), 0: _curve(2.0), 16: _curve(0.5)}, title="chain")
    first, later = fig.axes[:2]
    assert len(fig.axes) == 3  # two panels and the step colour bar
    assert first.get_title() == "first SAE (step 0), random init"
    assert [line.get_label() for line in first.lines] == ["loss (Eq. 3)", "MSE", "λ·L1"]
    np.testing.assert_array_equal(first.lines[0].get_ydata(), [6.0, 4.0, 2.0])
    assert len(later.lines) == 2 and later.get_yscale() == "log"
    np.testing.assert_array_equal(later.lines[0].get_ydata(), [3.0, 2.0, 1.0])  # step 4, then 16
    assert fig._suptitle.get_text() == "chain"


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
    assert [t.get_text() for t in ev.get_legend().get_texts()] == ["SAE-Track chain", "from scratch"]
    assert all(len(ax.lines) == 1 for ax in chain_quality_figure(links).axes)  # no baselines: no crosses


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
    assert [t.get_text() for t in ev.get_legend().get_texts()] == [
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
    fig = convergence_figure([item, missed, trivial], link_tokens=150)
    assert [ax.get_title() for ax in fig.axes] == [
        "step 8: ratio 0.050 (1/20)",
        "step 48: recurrent did not reach target",
        "step 1: ratio 0.004 (1/250), trivial",
    ]
    # curves, the target line, and one marker per curve that reached it
    assert len(fig.axes[0].lines) == 2 + 1 + 2 and len(fig.axes[1].lines) == 2 + 1 + 1
    assert fig.axes[0].lines[2].get_ydata()[0] == 1.0
    # the probe's smoothed loss at the end of the link budget, and the budget, in the legend
    at_link = fig.axes[2].lines[-1]
    assert at_link.get_xdata()[0] == 150 and at_link.get_ydata()[0] == 1.5
    labels = [t.get_text() for t in fig.axes[2].get_legend().get_texts()]
    assert "probe at link budget (+50% vs target)" in labels and "link budget (150)" in labels


def test_agreement_figure_histograms_and_index_stability() -> None:
    agreement = [{"step": 16, "matched_cosines": np.linspace(0.1, 1.0, 50), "mean_matched_cosine": 0.55,
                  "fraction_above_threshold": 0.4}]  # fmt: skip
    stability = [{"to_step": s, "hungarian_same_index": 1.0, "argmax_same_index": 0.9, "mean_same_index_cosine": 0.8}
                 for s in (1, 2, 4)]  # fmt: skip
    fig = agreement_figure(agreement, stability, threshold=0.7)
    left, middle, right = fig.axes
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["step 16: mean 0.55, 40% > 0.7"]
    assert len(middle.lines) == 2  # chain vs scratch only: no seed-to-seed series
    assert len(right.lines) == 3
    np.testing.assert_array_equal(right.lines[0].get_xdata(), [2, 3, 5])
    np.testing.assert_array_equal(right.lines[1].get_ydata(), [0.9, 0.9, 0.9])
    empty = agreement_figure([], stability, threshold=0.7).axes[0]
    assert "no independent SAEs" in empty.texts[0].get_text() and empty.get_legend() is None


def test_agreement_figure_draws_the_seed_to_seed_ceiling_beside_the_chain() -> None:
    seed = {"matched_cosines": np.linspace(0.5, 1.0, 40), "mean_matched_cosine": 0.9, "fraction_above_threshold": 0.8}
    agreement = [
        {"step": 16, "matched_cosines": np.linspace(0.1, 1.0, 50), "mean_matched_cosine": 0.55,
         "fraction_above_threshold": 0.4, "seed_to_seed": seed},
        {"step": 64, "matched_cosines": np.linspace(0.2, 1.0, 50), "mean_matched_cosine": 0.6,
         "fraction_above_threshold": 0.5, "seed_to_seed": None},
    ]  # fmt: skip
    left, middle, _ = agreement_figure(agreement, [], threshold=0.7).axes
    assert [t.get_text() for t in left.get_legend().get_texts()] == [
        "step 16: mean 0.55, 40% > 0.7",
        "  seed-to-seed: mean 0.90, 80% > 0.7",
        "step 64: mean 0.60, 50% > 0.7",
    ]
    labels = [line.get_label() for line in middle.lines]
    assert labels == [
        "chain vs scratch: mean cosine",
        "chain vs scratch: fraction > 0.7",
        "seed-to-seed (ceiling): mean cosine",
        "seed-to-seed (ceiling): fraction > 0.7",
    ]
    np.testing.assert_array_equal(middle.lines[0].get_xdata(), [17, 65])
    np.testing.assert_array_equal(middle.lines[2].get_xdata(), [17])  # only where the control ran
    np.testing.assert_allclose(middle.lines[2].get_ydata(), [0.9])
