"""The scale study's cross-scale summary figure (notebook 05, Fig. S6) and the seed study's phases (Fig. S8)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

__all__ = [
    "scale_summary_figure",
    "seed_study_figure",
]

#: Fig. S8's row titles, per phase curve.
CURVE_TITLES: dict[str, str] = {
    "drift": "(a) median decoder cosine to final",
    "progress": "(b) median concept-level progress measure",
}


def scale_summary_figure(sizes: Sequence[Any], title: str = "") -> Figure:
    """Fig. S06: the scale study on shared axes — one line per model size (:class:`saetrack.scale.SizeResult`).

    Panels against checkpoint step + 1: median progress measure (activation space) of concept-level and of
    token-level features; median decoder cosine to final with each size's phase boundaries from drift marked
    (triangles: Emergent starts, squares: Convergent starts); share of live features formed.
    """
    fig, axes = plt.subplots(2, 2, figsize=(11.5, 8), constrained_layout=True)
    colours = colormaps["plasma"](np.linspace(0.05, 0.8, max(len(sizes), 1)))
    panels = (
        (axes[0, 0], "concept-level: median progress measure", lambda r: r.median_progress("concept")),
        (axes[0, 1], "token-level: median progress measure", lambda r: r.median_progress("token")),
        (axes[1, 0], "median decoder cosine to final", lambda r: r.drift.median_cosine),
        (axes[1, 1], "share of live features formed", lambda r: r.formed_share()),
    )
    for ax, name, curve in panels:
        for colour, result in zip(colours, sizes, strict=True):
            x = np.asarray(result.drift.steps) + 1
            y = curve(result)
            ax.plot(x, y, color=colour, lw=2, marker="o", ms=2.5, label=result.label)
            phases = result.drift.drift_phases
            if ax is axes[1, 0] and phases is not None:  # None: too few checkpoints for the phase fit
                ax.plot(x[phases.emergent], y[phases.emergent], "^", color=colour, ms=9, mec="black")
                ax.plot(x[phases.convergent], y[phases.convergent], "s", color=colour, ms=8, mec="black")
        ax.set(xscale="log", xlabel="checkpoint step + 1", title=name)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="upper left")
    axes[1, 0].legend(
        handles=[
            Line2D([], [], marker="^", ls="", color="gray", mec="black", label="Emergent phase starts (drift)"),
            Line2D([], [], marker="s", ls="", color="gray", mec="black", label="Convergent phase starts (drift)"),
        ],
        fontsize=8,
        loc="upper left",
    )
    fig.suptitle(title or "scale study")
    return fig


def _count_table(ax: Any, runs: Sequence[dict[str, Any]], perspective: str, axes_names: Sequence[str]) -> None:
    """The BIC-preferred segment count of every run (rows) on every axis (columns), as an annotated grid."""
    counts = np.array([[r["phases"][perspective][a]["preferred"] or 0 for a in axes_names] for r in runs], dtype=float)
    ax.imshow(counts, cmap="Blues", vmin=0, vmax=max(6.0, float(counts.max())), aspect="auto")
    for i, run in enumerate(runs):
        for j, axis in enumerate(axes_names):
            entry = run["phases"][perspective][axis]
            text = f"{entry['preferred']}" + ("+" if entry["at_cap"] else "")
            dark = (entry["preferred"] or 0) >= 4
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black")
    ax.set_xticks(range(len(axes_names)), list(axes_names), fontsize=8)
    ax.set_yticks(range(len(runs)), [r["name"] for r in runs], fontsize=8)
    ax.set_title("segments BIC prefers (+: the largest tried)", fontsize=9)


def _boundary_strip(ax: Any, x: np.ndarray, runs: Sequence[dict[str, Any]], perspective: str, style: Any) -> None:
    """One row per run: its three-segment boundaries (triangle: Emergent starts, square: Convergent starts)."""
    for k, run in enumerate(runs):
        colour, _ = style(run)
        emergent, convergent = run["phases"][perspective]["index"]["three_index"]
        for index, marker in ((emergent, "^"), (convergent, "s")):
            if index is not None:
                ax.plot([x[index]], [k], marker=marker, color=colour, ms=7, mec="black", mew=0.5, ls="")
    ax.set_yticks(range(len(runs)), [r["name"] for r in runs], fontsize=7)
    ax.set_ylim(len(runs) - 0.5, -0.5)
    ax.set(xscale="log", xlabel="checkpoint step + 1")
    ax.grid(alpha=0.3, axis="x")


def seed_study_figure(numbers: dict[str, Any], curves: dict[str, dict[str, np.ndarray]], title: str = "") -> Figure:
    """Fig. S8: the phase curves of the seed study's runs and the segment count each prefers (Sec. 4.1 over seeds).

    ``numbers`` is the ``seeds`` section of results.json (:func:`saetrack.stages.scale.seeds.seed_numbers`);
    ``curves[perspective][run name]`` is that run's ``[T]`` curve. Per curve (decoder drift, progress measure): every
    run against step + 1 (colour: model seed; line style: chain seed; the warm-up control red and dashed) with the
    mean of the seed runs +- 2 standard deviations shaded; under it, each run's three-segment boundaries (triangle:
    Emergent starts, square: Convergent starts); beside it, the segment count BIC prefers per run and axis.
    """
    steps = np.asarray(numbers["steps"])
    x = steps + 1
    runs = numbers["runs"]
    axes_names = list(runs[0]["phases"]["drift"]) if runs else []
    model_seeds = sorted({r["model_seed"] for r in runs})
    colours = dict(zip(model_seeds, colormaps["viridis"](np.linspace(0.1, 0.7, max(len(model_seeds), 1))),
                       strict=False))  # fmt: skip
    styles = ["-", "--", ":", "-."]

    def style(run: dict[str, Any]) -> tuple[Any, str]:
        if run["name"].startswith("warmup"):
            return "tab:red", "--"
        return colours[run["model_seed"]], styles[run["chain_seed"] % len(styles)]

    fig = plt.figure(figsize=(13, 10.5), constrained_layout=True)
    grid = fig.add_gridspec(4, 2, height_ratios=[3, 1.3, 3, 1.3], width_ratios=[2.4, 1])
    for row, (perspective, name) in enumerate(CURVE_TITLES.items()):
        ax = fig.add_subplot(grid[2 * row, 0])
        band = numbers.get("curves", {}).get(perspective)
        if band:
            mean, sd = np.asarray(band["mean"]), np.asarray(band["sd"])
            ax.fill_between(x, mean - 2 * sd, mean + 2 * sd, color="gray", alpha=0.25, lw=0,
                            label="seed runs: mean +- 2 sd")  # fmt: skip
        for run in runs:
            colour, line = style(run)
            control = run["name"].startswith("warmup")
            ax.plot(x, curves[perspective][run["name"]], color=colour, ls=line, lw=1.7 if control else 1.1,
                    label=run["name"] + (f" (warm-up {run['warmup_steps']} steps)" if control else ""))  # fmt: skip
        ax.set(xscale="log", title=name)
        ax.grid(alpha=0.3)
        strip = fig.add_subplot(grid[2 * row + 1, 0], sharex=ax)
        _boundary_strip(strip, x, runs, perspective, style)
        _count_table(fig.add_subplot(grid[2 * row : 2 * row + 2, 1]), runs, perspective, axes_names)
    handles = ax.get_legend_handles_labels()[0]
    handles += [
        Line2D([], [], marker="^", ls="", color="gray", mec="black", label="Emergent starts (3 segments)"),
        Line2D([], [], marker="s", ls="", color="gray", mec="black", label="Convergent starts (3 segments)"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=8)  # fmt: skip
    fig.suptitle(title or "phases over seeds: curves, three-segment boundaries, the segment counts BIC prefers")
    return fig
