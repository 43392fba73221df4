"""Figures of the chain (notebook 02).

Training curves (Fig. S2), link quality (S3), convergence (S4), agreement (S5). Each is at most ~10.5 inches wide
(about 1600 px at the saved 150 dpi) with no text below 9 pt; legends sit outside the data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import EngFormatter, LogFormatter, NullFormatter

__all__ = [
    "END_WINDOW",
    "agreement_figure",
    "chain_quality_figure",
    "chain_training_figure",
    "convergence_figure",
]

#: Fig. S2: a link's end loss is the mean over this last fraction of its logged steps (the reference of the
#: normalised curves); the half-budget loss is the mean over a window as wide that ends half-way through.
END_WINDOW = 0.1
#: Fig. S3: the dead fraction is drawn on a symmetric log axis, linear below this value (zero stays visible).
DEAD_LINTHRESH = 1e-3
#: The widest panel grids: Fig. S4 wraps its probes into rows of at most this many panels, Fig. S5 its histograms.
CONVERGENCE_COLUMNS = 3
HISTOGRAM_COLUMNS = 5
#: Legends and panel numbers; nothing in these figures is smaller (the rest keeps matplotlib's 10-12 pt).
LEGEND_SIZE = 9


class _PlainLogFormatter(LogFormatter):
    """Log-axis labels as plain numbers (``0.006``, ``1.2``; tokens as ``500``, ``2k``), minor ticks labelled only
    when the axis spans too few decades for major labels to suffice."""

    def __init__(self, tokens: bool = False) -> None:
        super().__init__(labelOnlyBase=False, minor_thresholds=(1, 0.5))
        self._engineering = EngFormatter(sep="") if tokens else None

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return self._engineering(x) if self._engineering else f"{x:g}"


def _plain_log_labels(ax: Axes, tokens_axis: Any = None) -> None:
    """Plain numbers on the log y axis of ``ax`` (and engineering token counts on ``tokens_axis``, when log)."""
    for axis, tokens in ((ax.yaxis, False), (tokens_axis, True)):
        if axis is not None:
            axis.set_major_formatter(_PlainLogFormatter(tokens))
            axis.set_minor_formatter(_PlainLogFormatter(tokens))


def _link_colours(n: int) -> tuple[ListedColormap, BoundaryNorm]:
    """One colour per link, evenly spaced by link order (a log-step scale crowds the many late links into one hue)."""
    cmap = ListedColormap(colormaps["viridis"](np.linspace(0.0, 0.95, max(n, 1))))
    return cmap, BoundaryNorm(np.arange(max(n, 1) + 1) - 0.5, cmap.N)


def _window_mean(values: Sequence[float], stop: int) -> float:
    """Mean of the ``END_WINDOW`` fraction of ``values`` (at least one) ending just before index ``stop``."""
    width = max(1, math.ceil(END_WINDOW * len(values)))
    return float(np.mean(np.asarray(values, dtype=float)[max(0, stop - width) : max(stop, 1)]))


def _draw_first_link(ax: Axes, step: int, curve: Mapping[str, Sequence[float]]) -> None:
    ax.plot(curve["tokens"], curve["loss"], color="black", label="loss (Eq. 3)")
    ax.plot(curve["tokens"], curve["mse_loss"], color="tab:blue", alpha=0.7, label="MSE")
    ax.plot(curve["tokens"], curve["l1_loss"], color="tab:orange", alpha=0.7, label="λ·L1")
    ax.set(xlabel="training tokens", ylabel="loss", yscale="log", title=f"(a) first SAE (step {step}), random init")
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    _plain_log_labels(ax)
    ax.legend(fontsize=LEGEND_SIZE)


def _draw_link_summary(ax: Axes, steps: Sequence[int], curves: Mapping[int, Mapping[str, Sequence[float]]]) -> None:
    x = np.asarray(steps) + 1
    ends = [_window_mean(curves[s]["loss"], len(curves[s]["loss"])) for s in steps]
    starts = [curves[s]["loss"][0] / end for s, end in zip(steps, ends, strict=True)]
    halves = [
        _window_mean(curves[s]["loss"], len(curves[s]["loss"]) // 2) / end for s, end in zip(steps, ends, strict=True)
    ]
    ax.plot(x, starts, "o-", color="tab:purple", ms=4, label="inherited SAE (first batch) ÷ end")
    ax.plot(x, halves, "s-", color="tab:gray", ms=3, label="at half the budget ÷ end")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="checkpoint step + 1", ylabel="loss ratio",
           title="(b) later links: start and half-way loss ÷ end loss")  # fmt: skip
    if starts:
        ax.set_ylim(top=3 * max(max(starts), 1.0))  # headroom for the legend above the curves
    ax.xaxis.set_minor_formatter(NullFormatter())
    _plain_log_labels(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=LEGEND_SIZE, loc="upper right")


def chain_training_figure(curves: Mapping[int, Mapping[str, Sequence[float]]], title: str = "") -> Figure:
    """Fig. S02: training loss (Eq. 3) of every chain link against tokens seen.

    ``curves`` maps a checkpoint step to its link's loss curve (``tokens``, ``loss``, ``mse_loss``, ``l1_loss``).
    (a) The first link (random initialisation) with its MSE and λ·L1 terms. (b) Per later link, the loss of the
    inherited SAE on its first batch and the loss at half the budget, each divided by the link's end loss (mean of
    the last ``END_WINDOW`` of its steps): how much of a fit each link starts from, and whether it has flattened.
    (c) The later links' loss curves (log tokens: the drop is early); (d) the same divided by each link's end loss,
    so their shapes compare although the loss scale grows with the activations. Curves are coloured by link order
    (colour bar: checkpoint step).
    """
    steps = sorted(curves)
    later = steps[1:]
    fig, axes = plt.subplots(2, 2, figsize=(10.5, 7.5), layout="constrained")
    _draw_first_link(axes[0, 0], steps[0], curves[steps[0]])
    _draw_link_summary(axes[0, 1], later, curves)
    cmap, norm = _link_colours(len(later))
    for i, step in enumerate(later):
        tokens, loss = curves[step]["tokens"], np.asarray(curves[step]["loss"], dtype=float)
        axes[1, 0].plot(tokens, loss, color=cmap(norm(i)), lw=1)
        axes[1, 1].plot(tokens, loss / _window_mean(loss, len(loss)), color=cmap(norm(i)), lw=1)
    axes[1, 0].set(ylabel="loss (Eq. 3)", title="(c) later links, initialised from the previous SAE")
    axes[1, 1].set(ylabel="loss ÷ the link's end loss", title="(d) the same, each divided by its end loss")
    for ax in axes[1]:
        ax.set(xlabel="training tokens (log)", xscale="log", yscale="log")
        _plain_log_labels(ax, ax.xaxis)
        ax.grid(alpha=0.3)
    axes[1, 1].axhline(1.0, color="black", lw=0.8)
    if later:
        every = max(1, math.ceil(len(later) / 10))
        bar = fig.colorbar(
            plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes[1, :], ticks=range(0, len(later), every)
        )
        bar.ax.set_yticklabels([str(s) for s in later[::every]])
        bar.set_label("checkpoint step of the link")
    if title:
        fig.suptitle(title)
    return fig


def _quality_labels(link_tokens: int | None, baseline_tokens: int | None) -> tuple[str, str]:
    chain = "SAE-Track chain" + (f" (links: {link_tokens:,} tokens)" if link_tokens else "")
    scratch = "from scratch" + (f" ({baseline_tokens:,} tokens)" if baseline_tokens else "")
    return chain, scratch


_QUALITY_PANELS = [
    ("explained_variance", "explained variance"),
    ("ce_recovered", "CE loss recovered"),
    ("l0", "mean L0"),
    ("dead_fraction", f"dead fraction (log above {DEAD_LINTHRESH:g})"),
    ("dense_fraction", "dense fraction (>10% of tokens)"),
    ("mse", "MSE per element"),
]


def chain_quality_figure(
    links: Sequence[Mapping[str, Any]],
    baselines: Sequence[Mapping[str, Any]] = (),
    title: str = "",
    *,
    seed_controls: Sequence[Mapping[str, Any]] = (),
    link_tokens: int | None = None,
    baseline_tokens: int | None = None,
) -> Figure:
    """Fig. S03: held-out quality of every link against checkpoint step + 1 (log x); from-scratch SAEs as crosses.

    Each from-scratch SAE (``baselines``) is joined to the chain link at its checkpoint by a dotted red line (the
    quality gap); ``seed_controls`` (second-seed from-scratch SAEs) are drawn as grey pluses (the seed-to-seed
    spread). ``link_tokens`` / ``baseline_tokens`` name the budgets in the legend, below the panels. The dead
    fraction is on a symmetric log axis (linear below ``DEAD_LINTHRESH``) so each link's value shows beside a
    from-scratch SAE with many dead features.
    """
    chain_label, scratch_label = _quality_labels(link_tokens, baseline_tokens)
    by_step = {link["step"]: link["metrics"] for link in links}
    fig, axes = plt.subplots(2, 3, figsize=(10.5, 6.5), layout="constrained")
    x = np.array([link["step"] for link in links]) + 1
    for ax, (key, label) in zip(axes.flat, _QUALITY_PANELS, strict=True):
        ax.plot(x, [link["metrics"][key] for link in links], "o-", ms=3, label=chain_label)
        if baselines:
            bx = np.array([b["step"] for b in baselines]) + 1
            ax.plot(bx, [b["metrics"][key] for b in baselines], "x", color="tab:red", ms=8, mew=2, label=scratch_label)
        if seed_controls:
            sx = np.array([s["step"] for s in seed_controls]) + 1
            ax.plot(sx, [s["metrics"][key] for s in seed_controls], "+", color="tab:gray", ms=10, mew=1.5,
                    label="from scratch, second seed")  # fmt: skip
        for b in baselines:
            if b["step"] in by_step:
                ys = [by_step[b["step"]][key], b["metrics"][key]]
                ax.plot([b["step"] + 1] * 2, ys, ":", color="tab:red", lw=1.2)
        # the same x range in every panel (a metric undefined at most links would otherwise zoom its panel in)
        ax.set(xscale="log", xlim=(x.min() / 1.3, x.max() * 1.3), xlabel="checkpoint step + 1", ylabel=label)
        ax.grid(alpha=0.3)
    dead = axes.flat[3]
    dead.set_yscale("symlog", linthresh=DEAD_LINTHRESH, linscale=0.5)
    highest = max([DEAD_LINTHRESH, *(line.get_ydata().max() for line in dead.lines)])
    dead.set_ylim(-DEAD_LINTHRESH / 4, 10 ** math.ceil(math.log10(highest) + 1e-9))  # up to a labelled decade
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=LEGEND_SIZE)
    if title:
        fig.suptitle(title)
    return fig


def _convergence_title(item: Mapping[str, Any]) -> str:
    ratio = item["token_ratio"]
    if not ratio:
        text = f"step {item['step']}: recurrent did not reach target"
    else:
        inverse = f"{1 / ratio:.0f}" if ratio <= 0.1 else f"{1 / ratio:.1f}"
        text = f"step {item['step']}: ratio {ratio:.3f} (1/{inverse})" + (", trivial" if item.get("trivial") else "")
    excess = item.get("link_budget_excess")
    return text + (f"\nprobe at link budget: {excess:+.1%} vs target" if excess is not None else "")


def _convergence_legend(link_tokens: int) -> tuple[list[Any], list[str]]:
    handles = [
        Line2D([], [], color="tab:gray"),
        Line2D([], [], color="tab:blue"),
        Line2D([], [], ls="--", color="black", lw=1),
        Patch(color="tab:blue", alpha=0.15),
        Line2D([], [], ls="", marker="o", color="black", ms=7),
        Line2D([], [], ls="", marker="X", color="tab:red", ms=8),
    ]
    labels = [
        "from scratch",
        "recurrent init (probe)",
        "target: scratch final loss",
        f"link budget ({link_tokens:,} tokens)",
        "first reaches the target",
        "probe at the link budget",
    ]
    return handles, labels


def convergence_figure(convergence: Sequence[Mapping[str, Any]], link_tokens: int, title: str = "") -> Figure:
    """Fig. S04: loss against tokens, from scratch vs recurrently initialised, at each baseline checkpoint.

    The dashed line is the from-scratch SAE's final loss (the target); round markers show where each curve first
    reaches it. The shaded band is the chain's link budget; a cross marks the probe's smoothed loss at its end
    (``recurrent_loss_at_link_budget``, when given), so the gap a link leaves shows. Titles give the token ratio, say
    when it is trivial (on target within the first smoothing window) or the target was not reached, and the probe's
    excess over the target at the link budget. Panels wrap into rows of ``CONVERGENCE_COLUMNS``; one shared legend
    fills the first free panel (or sits below the grid).
    """
    n = len(convergence)
    cols = max(1, min(n, CONVERGENCE_COLUMNS))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.5 * cols, 3.3 * rows), layout="constrained", squeeze=False)
    for ax, item in zip(axes.flat, convergence, strict=False):
        scratch, recurrent = item["scratch_curve"], item["recurrent_curve"]
        ax.plot(scratch["tokens"], scratch["loss"], color="tab:gray")
        ax.plot(recurrent["tokens"], recurrent["loss"], color="tab:blue")
        ax.axhline(item["target_loss"], ls="--", color="black", lw=1)
        first_tokens = min(scratch["tokens"][0], recurrent["tokens"][0])
        ax.axvspan(first_tokens, link_tokens, color="tab:blue", alpha=0.08)
        for key, colour in (("scratch_tokens_to_target", "tab:gray"), ("recurrent_tokens_to_target", "tab:blue")):
            if item[key] is not None:
                ax.plot(item[key], item["target_loss"], "o", color=colour, ms=7)
        if item.get("recurrent_loss_at_link_budget") is not None:
            ax.plot(link_tokens, item["recurrent_loss_at_link_budget"], "X", color="tab:red", ms=8)
        ax.set(xscale="log", yscale="log", xlabel="training tokens", ylabel="loss (Eq. 3)")
        _plain_log_labels(ax, ax.xaxis)
        ax.set_title(_convergence_title(item), fontsize=10)
        ax.grid(alpha=0.3)
    spare = list(axes.flat[n:])
    for ax in spare:
        ax.axis("off")
    handles, labels = _convergence_legend(link_tokens)
    if spare:
        spare[0].legend(handles, labels, loc="center", fontsize=LEGEND_SIZE, frameon=False)
    else:
        fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=LEGEND_SIZE)
    if title:
        fig.suptitle(title)
    return fig


def _agreement_histogram(ax: Axes, item: Mapping[str, Any], threshold: float, bins: np.ndarray) -> None:
    """One baseline checkpoint: chain link vs independent SAE (blue, solid), second seed vs first (grey, dashed)."""
    ax.hist(item["matched_cosines"], bins=bins, histtype="step", lw=1.5, color="tab:blue")
    text = f"step {item['step']}\nchain: {item['mean_matched_cosine']:.2f}, {item['fraction_above_threshold']:.0%}"
    seed = item.get("seed_to_seed")
    if seed:
        ax.hist(seed["matched_cosines"], bins=bins, histtype="step", lw=1.2, ls="--", color="tab:gray")
        text += f"\nseed: {seed['mean_matched_cosine']:.2f}, {seed['fraction_above_threshold']:.0%}"
    ax.axvline(threshold, ls=":", color="black", lw=1)
    ax.set_title(text, fontsize=LEGEND_SIZE)  # the numbers above the panel, clear of the bars
    ax.set_xticks([0.0, 0.5, 1.0], ["0", "0.5", "1"])


def _agreement_histograms(fig: Figure, grid: Any, agreement: Sequence[Mapping[str, Any]], threshold: float) -> None:
    """Small multiples, one histogram of matched decoder cosines per baseline checkpoint, in ``grid``'s rows 1.."""
    cols = grid.ncols // 2
    if not agreement:
        ax = fig.add_subplot(grid[1, :])
        ax.text(0.5, 0.5, "no independent SAEs in this preset\n(chain.baseline is empty)", ha="center",
                va="center", transform=ax.transAxes)  # fmt: skip
        return
    bins = np.linspace(-0.2, 1.0, 49)
    first: Axes | None = None
    for i, item in enumerate(agreement):
        row, col = divmod(i, cols)
        ax = fig.add_subplot(grid[1 + row, 2 * col : 2 * col + 2], sharex=first, sharey=first)
        first = first or ax
        _agreement_histogram(ax, item, threshold, bins)
        ax.set(xlabel="matched cosine" if row == (len(agreement) - 1) // cols else "",
               ylabel="live features" if col == 0 else "")  # fmt: skip
        ax.tick_params(labelleft=col == 0)


def _agreement_by_step(ax: Axes, agreement: Sequence[Mapping[str, Any]], threshold: float) -> None:
    x = np.array([a["step"] for a in agreement]) + 1
    ax.plot(x, [a["mean_matched_cosine"] for a in agreement], "o-", color="tab:blue",
            label="chain: mean cosine")  # fmt: skip
    ax.plot(x, [a["fraction_above_threshold"] for a in agreement], "s--", color="tab:blue",
            label=f"chain: fraction > {threshold}")  # fmt: skip
    seeds = [a for a in agreement if a.get("seed_to_seed")]
    if seeds:
        sx = np.array([a["step"] for a in seeds]) + 1
        ax.plot(sx, [a["seed_to_seed"]["mean_matched_cosine"] for a in seeds], "o-", color="tab:gray",
                label="seed-to-seed: mean cosine")  # fmt: skip
        ax.plot(sx, [a["seed_to_seed"]["fraction_above_threshold"] for a in seeds], "s--", color="tab:gray",
                label=f"seed-to-seed: fraction > {threshold}")  # fmt: skip
    ax.set(xscale="log", ylim=(-0.02, 1.02), xlabel="checkpoint step + 1",
           title="agreement per checkpoint, with its seed-to-seed ceiling")  # fmt: skip
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3)
    if agreement:
        ax.legend(fontsize=LEGEND_SIZE, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2)


def _index_stability(ax: Axes, stability: Sequence[Mapping[str, Any]]) -> None:
    x = np.array([s["to_step"] for s in stability]) + 1
    ax.plot(x, [s["hungarian_same_index"] for s in stability], "o-", ms=3, label="Hungarian partner keeps index")
    ax.plot(x, [s["argmax_same_index"] for s in stability], "s-", ms=3, label="most similar keeps index")
    ax.plot(x, [s["mean_same_index_cosine"] for s in stability], "^-", ms=3, label="mean cos(feature i, i)")
    ax.set(xscale="log", ylim=(-0.02, 1.02), xlabel="checkpoint step + 1 (of the later link)",
           title="consecutive links: does feature i stay feature i?")  # fmt: skip
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize=LEGEND_SIZE, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2)
    ax.grid(alpha=0.3)


def agreement_figure(
    agreement: Sequence[Mapping[str, Any]],
    stability: Sequence[Mapping[str, Any]],
    threshold: float,
    title: str = "",
) -> Figure:
    """Fig. S05: chain vs independent SAE feature agreement beside the seed-to-seed ceiling, and index stability.

    Top: one histogram of Hungarian-matched decoder cosines per baseline checkpoint (blue, solid: chain link vs
    independent SAE; grey, dashed: a second independent SAE vs the first, where ``seed_to_seed`` is given), with the
    mean cosine and the fraction above ``threshold`` written in each. Bottom left: those two numbers per
    checkpoint, both series. Bottom right: index stability along the chain.
    """
    cols = max(1, min(len(agreement), HISTOGRAM_COLUMNS))
    rows = max(1, math.ceil(len(agreement) / cols))
    fig = plt.figure(figsize=(10.5, 2.4 * rows + 4.4), layout="constrained")
    # row 0: the histograms' legend (a figure legend "outside upper" would overlap the suptitle); last row: summaries
    grid = fig.add_gridspec(rows + 2, 2 * cols, height_ratios=[0.12] + [1.0] * rows + [1.6])
    _agreement_histograms(fig, grid, agreement, threshold)
    _agreement_by_step(fig.add_subplot(grid[rows + 1, :cols]), agreement, threshold)
    _index_stability(fig.add_subplot(grid[rows + 1, cols:]), stability)
    if agreement:
        handles = [Line2D([], [], color="tab:blue", lw=1.5), Line2D([], [], color="tab:gray", ls="--", lw=1.2),
                   Line2D([], [], color="black", ls=":", lw=1)]  # fmt: skip
        labels = ["chain link vs independent SAE", "second seed vs first independent SAE",
                  f"threshold {threshold} (numbers: mean cosine, fraction above)"]  # fmt: skip
        strip = fig.add_subplot(grid[0, :])
        strip.axis("off")
        strip.legend(handles, labels, loc="center", ncols=3, fontsize=LEGEND_SIZE, frameon=False)
    if title:
        fig.suptitle(title)
    return fig
