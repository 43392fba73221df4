"""The scale study's cross-scale summary figure (notebook 05, Fig. S6)."""

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
]


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
