"""Figures of feature drift (notebook 04).

Decoder cosine to final (Fig. 6a, 6b) with the drift noise floor, trajectories (Fig. 7) and their random-walk null
(Fig. 7n), phase shading.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from saetrack.analysis.drift import PHASE_NAMES

__all__ = [
    "NOISE_LABEL",
    "PHASE_COLOURS",
    "drift_distribution_figure",
    "drift_features_figure",
    "shade_phases",
    "trajectories_figure",
    "trajectory_null_figure",
]


#: Shading of the three phases (Sec. 4.1) on figures against checkpoint step + 1.
#: Fig. 7: trajectory segments before and after the feature formed.
UNFORMED_COLOUR, FORMED_COLOUR = "tab:blue", "darkred"

PHASE_COLOURS: tuple[str, str, str] = ("#d9d9d9", "#fde0c5", "#d4ecd4")


#: Fig. 6a/6b: the drift noise floor (links retrained on the unchanged final checkpoint).
NOISE_COLOUR = "dimgray"
NOISE_LABEL = "noise floor: links retrained on the unchanged final checkpoint"


def shade_phases(
    ax: Any,
    steps: Sequence[int],
    phases: Any,
    label: bool = True,
    other: Any | None = None,
    other_label: str = "",
    *,
    source: str = "",
) -> None:
    """Shade the Initialization & Warmup, Emergent and Convergent phases on an axis whose x is step + 1.

    ``phases`` is a :class:`saetrack.analysis.phases.Phases` (boundaries as checkpoint indices); a phase spans from
    its first checkpoint to the first checkpoint of the next. ``other`` (a second set of boundaries) is drawn as
    dashed lines. ``source`` names where the shaded set comes from (e.g. "decoder drift"): the legend then reads
    "Emergent (shaded: decoder drift)".
    """
    x = np.asarray(steps, dtype=float) + 1
    edges = [x[0], x[phases.emergent], x[phases.convergent], x[-1]]
    for i, name in enumerate(PHASE_NAMES):
        text = f"{name} (shaded: {source})" if source else name
        ax.axvspan(edges[i], edges[i + 1], color=PHASE_COLOURS[i], alpha=0.6, lw=0, zorder=0,
                   label=text if label else None)  # fmt: skip
    if other is not None:
        for j, index in enumerate((other.emergent, other.convergent)):
            ax.axvline(x[index], color="black", ls="--", lw=1, zorder=1, label=other_label if j == 0 else None)


def _noise_positions(n_steps: int, n_links: int) -> tuple[np.ndarray, np.ndarray]:
    """Checkpoint indices ``T - 1 - m`` where the floor after m links is drawn, and the rows ``m - 1`` used."""
    m = np.arange(1, min(n_links, n_steps - 1) + 1)
    return n_steps - 1 - m, m - 1


def _histogram_bins(values: np.ndarray) -> np.ndarray:
    """40 bins from the panel's own 1% quantile (rounded down to 0.01, at most 0.99) to 1, so a checkpoint whose
    features all sit near their final direction still shows a distribution rather than one bar."""
    finite = values[np.isfinite(values)]
    low = float(np.quantile(finite, 0.01)) if finite.size else -1.0
    low = max(-1.0, min(0.99, np.floor(low / 0.01) * 0.01))
    return np.linspace(low, 1.0, 41)


def drift_distribution_figure(
    steps: Sequence[int],
    cosine: np.ndarray,
    quantiles: np.ndarray,
    histogram_positions: Sequence[int],
    phases: Any | None,
    other_phases: Any | None = None,
    title: str = "",
    *,
    noise_quantiles: np.ndarray | None = None,
    preferred_fit: np.ndarray | None = None,
    preferred_segments: int | None = None,
) -> Figure:
    """Fig. 6a (checkpoint-centric): decoder cosine to final of every live feature at each checkpoint.

    The scale study draws the same figure per size (Fig. 11 and 15).

    Top: histograms (log count) at ``histogram_positions``, each over its own range (from its 1% quantile to 1, the
    range in the x label), so late checkpoints do not collapse into one bar. Bottom: the 5-95% and 25-75% bands and
    the median of ``quantiles`` ([T, 5] at 5/25/50/75/95%) against step + 1, with the three-segment fit of the median
    and its phases shaded (perspective a, decoder drift; None: not fitted, nothing shaded), ``other_phases``
    (perspective b, the progress measure) as dashed lines, and ``preferred_fit``, the fit with the segment count BIC
    prefers (``preferred_segments``), dotted. ``noise_quantiles`` ([M, 5]) is the drift noise floor after m = 1..M
    retrained links, drawn at checkpoint index T-1-m (median and 25-75% band). ``cosine`` is ``[T, L]`` over live
    features. The legend stands beside the axes, never over the curves.
    """
    steps = np.asarray(steps)
    x = steps + 1
    n_hist = len(histogram_positions)
    fig = plt.figure(figsize=(2.4 * max(n_hist, 4) + 2.6, 6.8), constrained_layout=True)
    grid = fig.add_gridspec(2, n_hist + 1, height_ratios=[1, 1.25], width_ratios=[1] * n_hist + [1.1])
    for i, position in enumerate(histogram_positions):
        ax = fig.add_subplot(grid[0, i])
        values = np.asarray(cosine[position], dtype=np.float64)
        bins = _histogram_bins(values)
        ax.hist(np.clip(values[np.isfinite(values)], bins[0], 1.0), bins=bins, color="tab:purple", alpha=0.8, log=True)
        ax.set(title=f"step {int(steps[position])}", xlim=(bins[0], 1.0))
        ax.set_xlabel(f"cosine to final [{bins[0]:.2f}, 1]", fontsize=8)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.set_ylabel("features (log)")
    ax = fig.add_subplot(grid[1, :n_hist])
    if phases is not None:
        shade_phases(ax, steps, phases, other=other_phases, other_label="boundaries from the progress measure (b)",
                     source="decoder drift (a)")  # fmt: skip
    ax.fill_between(x, quantiles[:, 0], quantiles[:, 4], color="tab:purple", alpha=0.18, label="5-95%")
    ax.fill_between(x, quantiles[:, 1], quantiles[:, 3], color="tab:purple", alpha=0.35, label="25-75%")
    ax.plot(x, quantiles[:, 2], color="tab:purple", lw=2.5, marker="o", ms=3, label="median")
    if phases is not None:
        ax.plot(x, phases.fit, color="black", lw=1, alpha=0.7, label="three-segment fit (the paper's phases)")
    if preferred_fit is not None and np.isfinite(preferred_fit).any():
        ax.plot(x, preferred_fit, color="black", lw=1.2, ls=":",
                label=f"BIC-preferred fit ({preferred_segments} segments)")  # fmt: skip
    if noise_quantiles is not None and len(noise_quantiles):
        at, rows = _noise_positions(len(steps), len(noise_quantiles))
        q = np.asarray(noise_quantiles)[rows]
        ax.fill_between(x[at], q[:, 1], q[:, 3], color=NOISE_COLOUR, alpha=0.3, lw=0, label="noise floor 25-75%")
        ax.plot(x[at], q[:, 2], color=NOISE_COLOUR, lw=1.8, ls="-.", marker="s", ms=2.5, label=NOISE_LABEL)
    ax.set(xscale="log", xlabel="checkpoint step + 1", ylabel="decoder cosine to final", ylim=(-0.05, 1.05))
    ax.grid(alpha=0.3)
    legend_ax = fig.add_subplot(grid[1, n_hist])
    legend_ax.axis("off")
    legend_ax.legend(*ax.get_legend_handles_labels(), loc="center left", fontsize=7, frameon=False)
    fig.suptitle(title or "decoder cosine to final, per checkpoint (live features)")
    return fig


def drift_features_figure(
    steps: Sequence[int],
    cosine: np.ndarray,
    features: Sequence[int],
    formation_steps: Sequence[int | None],
    phases: Any | None,
    title: str = "",
    *,
    noise_quantiles: np.ndarray | None = None,
) -> Figure:
    """Fig. 6b (feature-centric): each sampled feature's decoder cosine to final across checkpoints.

    ``cosine`` is ``[T, n]`` for the ``features``; a dotted vertical line marks each feature's formation step
    (``None``: never formed); the phases detected on the median drift curve are shaded (None: not fitted).
    ``noise_quantiles`` ([M, 5]) adds the drift noise floor as a grey band (its 5-95% over features after m
    retrained links, at checkpoint index T-1-m): where a feature would sit from SAE training alone.
    """
    x = np.asarray(steps) + 1
    n = len(features)
    cols = min(4, max(n, 1))
    rows = int(np.ceil(n / cols)) if n else 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.6 * rows), constrained_layout=True, squeeze=False,
                             sharex=True, sharey=True)  # fmt: skip
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.axis("off")
            continue
        if phases is not None:
            shade_phases(ax, steps, phases, label=k == 0, source="decoder drift (a)")
        if noise_quantiles is not None and len(noise_quantiles):
            at, rows = _noise_positions(len(x), len(noise_quantiles))
            q = np.asarray(noise_quantiles)[rows]
            band = "noise floor 5-95% (links retrained on the final checkpoint)" if k == 0 else None
            ax.fill_between(x[at], q[:, 0], q[:, 4], color=NOISE_COLOUR, alpha=0.3, lw=0, label=band)
        ax.plot(x, cosine[:, k], color="tab:purple", marker="o", ms=2.5, lw=1.5)
        formed_at = formation_steps[k]
        if formed_at is not None:
            ax.axvline(formed_at + 1, color=FORMED_COLOUR, ls=":", lw=1.5, label="formed" if k == 0 else None)
        ax.set(xscale="log", ylim=(-0.05, 1.05), title=f"feature {int(features[k])}"
               + ("" if formed_at is not None else " (never formed)"))  # fmt: skip
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("checkpoint step + 1")
    for ax in axes[:, 0]:
        ax.set_ylabel("cosine to final")
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize=8)
    fig.suptitle(title or "decoder cosine to final of sampled features")
    return fig


def trajectories_figure(
    steps: Sequence[int],
    coords: np.ndarray,
    variance: np.ndarray,
    features: Sequence[int],
    patterns: Sequence[str],
    formation_index: Sequence[int],
    title: str = "",
) -> Figure:
    """Fig. 7: trajectories (Def. 6.1) of decoder directions, one panel per feature, projected to 2-D.

    The scale study draws the same figure per size (Fig. 12 and 16).

    ``coords`` is ``[n, T, 2]`` (PCA per feature, see :func:`saetrack.drift.trajectory_projection`) with the
    explained-variance shares ``variance`` [n, 2]. Segments before the feature's formation checkpoint
    (``formation_index``, -1 never) are blue, from it on dark red; the start is a circle, the end a star.
    """
    n = len(features)
    cols = min(3, max(n, 1))
    rows = int(np.ceil(n / cols)) if n else 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.3 * rows), constrained_layout=True, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.axis("off")
            continue
        points, formed_from = coords[k], int(formation_index[k])
        for t in range(len(points) - 1):
            formed = 0 <= formed_from <= t
            ax.plot(points[t : t + 2, 0], points[t : t + 2, 1], color=FORMED_COLOUR if formed else UNFORMED_COLOUR,
                    lw=1.6, marker="o", ms=2.5)  # fmt: skip
        ax.scatter(*points[0], s=70, facecolor="white", edgecolor="black", zorder=3, label="start (step 0)")
        ax.scatter(*points[-1], s=150, marker="*", color="gold", edgecolor="black", zorder=3, label="end (final)")
        when = f"formed at step {int(steps[formed_from])}" if formed_from >= 0 else "never formed"
        ax.set_title(f"feature {int(features[k])} ({patterns[k]})\n{when}", fontsize=9)
        ax.set_xlabel(f"PC1 ({100 * variance[k][0]:.0f}% var.)")
        ax.set_ylabel(f"PC2 ({100 * variance[k][1]:.0f}% var.)")
        ax.grid(alpha=0.3)
    handles = [
        Line2D([], [], color=UNFORMED_COLOUR, lw=2, label="unformed"),
        Line2D([], [], color=FORMED_COLOUR, lw=2, label="formed"),
        Line2D([], [], marker="o", ls="", markerfacecolor="white", markeredgecolor="black", label="start"),
        Line2D([], [], marker="*", ls="", color="gold", markeredgecolor="black", ms=12, label="end"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=8)
    fig.suptitle(
        (title or "feature trajectories")
        + "\nprojection: PCA of each feature's unit decoder directions across checkpoints (fitted per feature)",
        fontsize=10,
    )
    return fig


def trajectory_null_figure(
    variance: np.ndarray,
    null_variance: np.ndarray,
    straightness: np.ndarray,
    null_straightness: np.ndarray,
    features: Sequence[int],
    patterns: Sequence[str],
    title: str = "",
) -> Figure:
    """Fig. 7n: Fig. 7's trajectories against random walks with the same step sizes (Def. 6.1 with its null).

    Left: each trajectory's PC1 share (dot) beside the 5-95% range and median of its own null walks' PC1 shares
    (``null_variance [n, W, 2]``); middle: the same for PC2; right: straightness (end-to-end distance over path
    length, 1 = straight) against the null's. A trajectory inside its null's range has the shape any random walk
    with its step sizes would have.
    """
    n = len(features)
    y = np.arange(n)
    fig, axes = plt.subplots(1, 3, figsize=(12, 0.42 * max(n, 4) + 1.6), constrained_layout=True, sharey=True)
    panels = (
        (variance[:, 0], null_variance[:, :, 0], "PC1 share of variance"),
        (variance[:, 1], null_variance[:, :, 1], "PC2 share of variance"),
        (straightness, null_straightness, "straightness (end-to-end / path length)"),
    )
    for ax, (real, null, label) in zip(axes, panels, strict=True):
        with np.errstate(all="ignore"):
            low, mid, high = (np.nanquantile(null, q, axis=1) for q in (0.05, 0.5, 0.95))
        ax.hlines(y, low, high, color=NOISE_COLOUR, lw=5, alpha=0.35, label="random walk 5-95%")
        ax.scatter(mid, y, marker="|", s=120, color=NOISE_COLOUR, label="random walk median")
        ax.scatter(real, y, color="tab:purple", s=28, zorder=3, label="trajectory")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3, axis="x")
    axes[0].set_yticks(y, [f"{int(f)} ({p})" for f, p in zip(features, patterns, strict=True)], fontsize=8)
    axes[0].invert_yaxis()
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize=8)
    fig.suptitle(title or "feature trajectories against random walks with the same step sizes", fontsize=10)
    return fig
