"""Figures of the crosscoder's emergence reading and its controls (notebook 06; issue 14 item 3, issue 20 item 3).

Ge et al. 2025 read a feature's emergence from its decoder norms. Drawn here: the decoder-norm matrix in absolute and
row-normalised terms (Fig. X02), the emergence histograms at several fractions of the maximum with the share at the
first checkpoint under every null (X03), emergence against the chain's formation as a grid of counts, ties visible
(X06), the control crosscoders' matrices (X09), and the median normalised norm with each run's settling curve (X10).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from saetrack.plots.crosscoder import CROSSCODER_COLOUR, STEP_AXIS, checked_array, index_ticks, steps_array

__all__ = [
    "HEATMAP_MAX_ROWS",
    "NULL_STYLE",
    "control_heatmaps_figure",
    "decoder_norm_heatmap_figure",
    "emergence_histogram_figure",
    "emergence_vs_formation_figure",
    "settling_figure",
]

#: Fig. X02 / X09 draw at most this many feature rows (evenly spaced over the sorted order when there are more).
HEATMAP_MAX_ROWS = 2000
#: Colour and marker of each crosscoder run in Fig. X03 and X10: the main one and its controls.
NULL_STYLE: dict[str, tuple[str, str]] = {
    "crosscoder": (CROSSCODER_COLOUR, "o"),
    "permuted": ("tab:gray", "s"),
    "repeated": ("tab:red", "v"),
    "dropped_early": ("tab:purple", "^"),
    "centred": ("tab:blue", "D"),
}


def _sorted_rows(norms: np.ndarray, emergence: np.ndarray, max_rows: int) -> tuple[np.ndarray, int]:
    """Rows to draw (emerging features by emergence, then peak checkpoint, evenly subsampled) and the stride."""
    alive = np.flatnonzero(emergence >= 0)
    order = alive[np.lexsort((np.argmax(norms[alive], axis=1), emergence[alive]))]
    stride = max(1, int(np.ceil(len(order) / max_rows)))
    return order[::stride], stride


def _relative(rows: np.ndarray, n_steps: int) -> np.ndarray:
    with np.errstate(all="ignore"):
        return rows / rows.max(axis=1, keepdims=True) if len(rows) else np.zeros((0, n_steps))


def decoder_norm_heatmap_figure(
    steps: Sequence[int],
    norms: np.ndarray,
    emergence: np.ndarray,
    fraction: float,
    title: str = "",
    *,
    max_rows: int = HEATMAP_MAX_ROWS,
) -> Figure:
    """Fig. X02 (issue 14 item 3, issue 20 item 3): Ge et al.'s decoder-norm matrix ``||W_dec,i^θ||``, absolute and
    row-normalised, rows in the same order.

    ``norms`` is ``[F, T]``, ``emergence`` ``[F]`` the checkpoint index where a feature's norm first passes
    ``fraction`` of its maximum (-1: dead, dropped and counted). Rows are sorted by emergence (earliest first), ties
    by the checkpoint of the peak: inside the block that emerges at one checkpoint the rows run down in the order
    of their peaks, so a staircase there is a diagonal of peaks, not of emergence. Left: the norms themselves
    (colour up to their 99th percentile); right: each row divided by its maximum. With more than ``max_rows`` rows,
    every k-th row of the sorted order is drawn (stated in the subtitle).
    """
    steps = steps_array(steps)
    norms = checked_array("norms", norms, (None, len(steps))).astype(float)
    emergence = checked_array("emergence", emergence, (len(norms),)).astype(int)
    rows, stride = _sorted_rows(norms, emergence, max_rows)
    drawn = norms[rows]
    top = float(np.percentile(drawn, 99)) if drawn.size else 1.0
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 6), constrained_layout=True, sharey=True)
    image = left.imshow(drawn, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=max(top, 1e-12))
    fig.colorbar(image, ax=left, label="decoder norm (normalised input units; clipped at the 99th percentile)")
    image = right.imshow(_relative(drawn, len(steps)), aspect="auto", interpolation="nearest", cmap="magma", vmin=0,
                         vmax=1)  # fmt: skip
    fig.colorbar(image, ax=right, label="decoder norm / the feature's maximum")
    for ax, what in ((left, "absolute"), (right, "relative to each feature's maximum")):
        index_ticks(ax, steps)
        ax.set(xlabel="checkpoint (training step)", title=what)
    left.set_ylabel("features, sorted by emergence (earliest at the top), then by peak checkpoint")
    n_alive, n_dead = int((emergence >= 0).sum()), int((emergence < 0).sum())
    sampled = f"1 in {stride} of {n_alive} features drawn" if stride > 1 else f"all {n_alive} features drawn"
    subtitle = (f"emergence: first checkpoint with norm >= {fraction:g} x the feature's maximum; {sampled}; "
                f"{n_dead} never reaching it (dead) dropped")  # fmt: skip
    fig.suptitle((title or "crosscoder decoder norms per checkpoint") + "\n" + subtitle, fontsize=10)
    return fig


def _histogram_panel(ax: Axes, steps: np.ndarray, emergence: np.ndarray, fraction: float) -> np.ndarray:
    """Bars of features per emergence checkpoint on a log axis, the first one labelled with its share."""
    alive = emergence >= 0
    counts = np.bincount(emergence[alive], minlength=len(steps))
    ax.bar(np.arange(len(steps)), counts, color=CROSSCODER_COLOUR, width=0.8)
    if alive.any():
        ax.annotate(f"{counts[0]} ({100 * counts[0] / alive.sum():.0f}%)", (0, max(counts[0], 1)), fontsize=7,
                    xytext=(4, 2), textcoords="offset points")  # fmt: skip
    index_ticks(ax, steps, max_ticks=7)
    ax.set(yscale="log", ylim=(0.8, 3 * max(int(counts.max()), 1)), xlim=(-0.6, len(steps) - 0.4),
           title=f"fraction {fraction:g}", xlabel="emergence checkpoint (step)")  # fmt: skip
    ax.grid(alpha=0.3, axis="y")
    return counts


def _first_share_panel(
    ax: Axes,
    fractions: list[float],
    shares: Mapping[str, Mapping[str, float | None]],
    band: tuple[Mapping[str, float], Mapping[str, float]] | None,
) -> None:
    """Share of alive features at the first checkpoint against the fraction, for the main run and every null, with
    the permuted-label null's 5-95% band."""
    x = np.asarray(fractions)
    if band is not None:
        lo, hi = ([np.nan if b.get(str(f)) is None else b[str(f)] for f in fractions] for b in band)
        ax.fill_between(x, lo, hi, color=NULL_STYLE["permuted"][0], alpha=0.2, lw=0, label="permuted: 5-95%")
    for name, values in shares.items():
        colour, marker = NULL_STYLE.get(name, ("black", "x"))
        y = np.array([np.nan if values.get(str(f)) is None else values[str(f)] for f in fractions], dtype=float)
        width = 2.4 if name == "crosscoder" else 1.2
        ax.plot(x, y, marker=marker, color=colour, lw=width, ms=5, label=name.replace("_", " "))
    ax.set(xlabel="emergence fraction of the maximum", ylabel="share of alive features at the first checkpoint",
           ylim=(-0.02, 1.02), title="at the first checkpoint: run and nulls")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")


def emergence_histogram_figure(
    steps: Sequence[int],
    emergence: Mapping[float, np.ndarray],
    init_decaying: np.ndarray,
    first_shares: Mapping[str, Mapping[str, float | None]] | None = None,
    title: str = "",
    *,
    decaying_fraction: float | None = None,
    null_band: tuple[Mapping[str, float], Mapping[str, float]] | None = None,
) -> Figure:
    """Fig. X03 (issue 14 item 3, issue 20 item 3): features per emergence checkpoint at several fractions.

    One panel per fraction of ``emergence`` (``{fraction: [F]}``, -1: dead): bars count the alive features whose
    emergence is each checkpoint, on a log axis so the few late ones show beside the tie at the first checkpoint,
    whose bar is labelled with its share. ``init_decaying`` (``[F]``) marks features present at initialisation
    that later decay, hatched on the panel of ``decaying_fraction`` (the fraction they were found at; default the
    first). ``first_shares`` (``{run: {str(fraction): share}}``, e.g. the crosscoder, the permuted-label null and
    the control crosscoders) adds a last panel: the share at the first checkpoint against the fraction, for each,
    with ``null_band`` (``(5%, 95%)`` quantiles by ``str(fraction)``) shaded: the permuted-label null's range.
    """
    steps = steps_array(steps)
    fractions = sorted(emergence)
    arrays = {f: checked_array(f"emergence[{f}]", emergence[f], (None,)).astype(int) for f in fractions}
    for f, e in arrays.items():
        if e.size and e.max() >= len(steps):
            raise ValueError(f"emergence[{f}] indices must be below the number of checkpoints ({len(steps)}).")
    at = fractions.index(fractions[0] if decaying_fraction is None else float(decaying_fraction))
    decaying = checked_array("init_decaying", init_decaying, (len(arrays[fractions[0]]),)).astype(bool)
    n_panels = len(fractions) + (1 if first_shares else 0)
    fig, axes = plt.subplots(1, n_panels, figsize=(3.4 * n_panels, 3.8), constrained_layout=True)
    axes = np.atleast_1d(axes)
    for ax, f in zip(axes, fractions, strict=False):
        _histogram_panel(ax, steps, arrays[f], f)
    first = arrays[fractions[at]]
    hatched = np.bincount(first[(first >= 0) & decaying], minlength=len(steps))
    axes[at].bar(np.arange(len(steps)), hatched, facecolor="none", edgecolor="black", hatch="///", width=0.8,
                 label=f"present at initialisation, later decaying ({int(hatched.sum())})")  # fmt: skip
    axes[at].legend(fontsize=7, loc="upper right")
    axes[0].set_ylabel(f"alive features ({int((first >= 0).sum())}; {int((first < 0).sum())} dead)")
    if first_shares:
        _first_share_panel(axes[-1], fractions, first_shares, null_band)
    fig.suptitle(title or "crosscoder features by emergence checkpoint, at several fractions of the maximum")
    return fig


def _count_grid(formation: np.ndarray, emergence: np.ndarray, n: int) -> np.ndarray:
    grid = np.zeros((n, n), dtype=int)
    np.add.at(grid, (emergence, formation), 1)
    return grid


def emergence_vs_formation_figure(
    steps: Sequence[int],
    formation_index: np.ndarray,
    emergence_index: np.ndarray,
    stats: Mapping[str, float | int | None],
    title: str = "",
) -> Figure:
    """Fig. X06 (issue 14 item 5, issue 20 item 3): crosscoder emergence against chain formation, matched features.

    A grid of counts: cell (x, y) holds the matched pairs whose chain link formed at checkpoint x (SAE-Track, Def.
    4.3) and whose crosscoder feature emerged at checkpoint y (Ge et al.), with the count written in it, so ties
    (most pairs at one emergence checkpoint) are seen as numbers, not as overlapping points; the dashed diagonal
    marks agreement. Marginal bars: pairs per formation checkpoint (top) and per emergence checkpoint (right).
    ``stats`` gives ``kendall_tau_b``, ``permutation_p``, ``null_q025``, ``null_q975``, ``tied_at_first_share`` and
    ``spearman_rho`` for the title (missing or None: n/a).
    """
    steps = steps_array(steps)
    formation = checked_array("formation_index", formation_index, (None,)).astype(int)
    emergence = checked_array("emergence_index", emergence_index, (len(formation),)).astype(int)
    t = len(steps)
    grid = _count_grid(formation, emergence, t)
    fig = plt.figure(figsize=(7.6, 7.2), constrained_layout=True)
    spec = fig.add_gridspec(2, 2, width_ratios=(5, 1), height_ratios=(1, 5))
    ax = fig.add_subplot(spec[1, 0])
    top, side = fig.add_subplot(spec[0, 0], sharex=ax), fig.add_subplot(spec[1, 1], sharey=ax)
    shown = np.where(grid > 0, grid, np.nan)
    image = ax.imshow(shown, origin="lower", cmap="Greens", vmin=0, vmax=max(1, grid.max()),
                      interpolation="nearest", aspect="auto")  # fmt: skip
    for y, x in zip(*np.nonzero(grid), strict=True):
        ax.text(x, y, str(grid[y, x]), ha="center", va="center", fontsize=6,
                color="white" if grid[y, x] > 0.6 * grid.max() else "black")  # fmt: skip
    ax.plot([-0.5, t - 0.5], [-0.5, t - 0.5], "--", color="black", lw=1)
    index_ticks(ax, steps, "x")
    index_ticks(ax, steps, "y")
    ax.set(xlim=(-0.5, t - 0.5), ylim=(-0.5, t - 0.5), xlabel="chain formation checkpoint (step)",
           ylabel="crosscoder emergence checkpoint (step)")  # fmt: skip
    top.bar(np.arange(t), grid.sum(axis=0), color="tab:blue", width=0.8)
    side.barh(np.arange(t), grid.sum(axis=1), color=CROSSCODER_COLOUR, height=0.8)
    top.set(ylabel="pairs")
    side.set(xlabel="pairs (log)", xscale="log" if grid.any() else "linear")
    top.tick_params(labelbottom=False)
    side.tick_params(labelleft=False)
    fig.colorbar(image, ax=side, label="matched pairs in the cell", fraction=0.5)

    def fmt(key: str, spec_: str = ".2f") -> str:
        value = stats.get(key)
        return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, spec_)

    summary = (f"Kendall τ_b = {fmt('kendall_tau_b')} (permutation p = {fmt('permutation_p', '.3g')}; null 95%: "
               f"{fmt('null_q025')} to {fmt('null_q975')}), n = {len(formation)}\ntied at the first emergence "
               f"checkpoint: {fmt('tied_at_first_share', '.0%')}; Spearman ρ = {fmt('spearman_rho')}")  # fmt: skip
    fig.suptitle((title or "when do features appear? crosscoder vs SAE-Track chain") + "\n" + summary, fontsize=9)
    return fig


def control_heatmaps_figure(
    panels: Sequence[tuple[str, Sequence[int], np.ndarray, np.ndarray]],
    fraction: float,
    title: str = "",
    *,
    max_rows: int = HEATMAP_MAX_ROWS,
) -> Figure:
    """Fig. X09 (issue 20 item 3): the row-normalised decoder-norm matrix of the crosscoder and of each control.

    One panel per ``(name, steps, norms [F, T'], emergence [F])``, rows sorted as in Fig. X02 (by emergence at
    ``fraction``, then by peak), each with its own checkpoints; the panel title gives the alive features and the
    share emerging at its first checkpoint.
    """
    if not panels:
        raise ValueError("control_heatmaps_figure needs at least one (name, steps, norms, emergence) panel.")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 5.2), constrained_layout=True)
    axes = np.atleast_1d(axes)
    image = None
    for ax, (name, steps_, norms, emergence) in zip(axes, panels, strict=True):
        steps = steps_array(steps_)
        norms = checked_array(f"{name} norms", norms, (None, len(steps))).astype(float)
        emergence = checked_array(f"{name} emergence", emergence, (len(norms),)).astype(int)
        rows, _ = _sorted_rows(norms, emergence, max_rows)
        image = ax.imshow(_relative(norms[rows], len(steps)), aspect="auto", interpolation="nearest", cmap="magma",
                          vmin=0, vmax=1)  # fmt: skip
        alive = emergence >= 0
        share = f"{100 * np.mean(emergence[alive] == 0):.0f}%" if alive.any() else "n/a"
        ax.set_title(f"{name}\n{int(alive.sum())} alive, {share} at its first checkpoint", fontsize=9)
        index_ticks(ax, steps, max_ticks=8)
        ax.set_xlabel("checkpoint (step)")
    axes[0].set_ylabel("features, sorted by emergence, then by peak")
    fig.colorbar(image, ax=axes[-1], label="decoder norm / the feature's maximum")
    fig.suptitle(title or f"decoder norms of the crosscoder and its controls (emergence at {fraction:g})")
    return fig


def settling_figure(
    medians: Mapping[str, tuple[Sequence[int], Sequence[float]]],
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    dip_window: tuple[int, int],
    tolerance: float,
    title: str = "",
) -> Figure:
    """Fig. X10 (issue 20 item 3): the median normalised decoder norm per checkpoint, and how far training settled.

    Left: for each run in ``medians`` (``{name: (steps, median over alive features of norm / its maximum)}``) the
    median against checkpoint step + 1 (log x), the window where the dip is read shaded. Right: each run's settling
    curve from ``curves`` (``{name: {"step": [...], "relative_change": [...]}}``): the relative change of its
    row-normalised decoder-norm matrix over the settling window, against the optimiser step, with ``tolerance``.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), constrained_layout=True)
    left.axvspan(dip_window[0] + 1, dip_window[1] + 1, color="gold", alpha=0.25, lw=0,
                 label=f"dip window: steps {dip_window[0]}-{dip_window[1]}")  # fmt: skip
    for name, (steps, median) in medians.items():
        colour, marker = NULL_STYLE.get(name, ("black", "x"))
        left.plot(np.asarray(steps) + 1.0, median, marker=marker, ms=3, color=colour, label=name.replace("_", " "))
    left.set(xscale="log", xlabel=STEP_AXIS, ylabel="median decoder norm / the feature's maximum", ylim=(0, 1.05),
             title="median normalised norm per checkpoint")  # fmt: skip
    for name, curve in curves.items():
        colour, marker = NULL_STYLE.get(name, ("black", "x"))
        right.plot(curve["step"], curve["relative_change"], marker=marker, ms=3, color=colour,
                   label=name.replace("_", " "))  # fmt: skip
    right.axhline(tolerance, color="black", ls="--", lw=1, label=f"settled below {tolerance:g}")
    right.set(yscale="log", xlabel="optimiser step", ylabel="relative change over the window",
              title="settling: row-normalised decoder norms")  # fmt: skip
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title or "crosscoder decoder norms: the dip and the settling of training")
    return fig
