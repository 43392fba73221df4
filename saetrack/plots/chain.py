"""Figures of the chain (notebook 02).

Training curves (Fig. S2), link quality (S3), convergence (S4), agreement (S5).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

__all__ = [
    "agreement_figure",
    "chain_quality_figure",
    "chain_training_figure",
    "convergence_figure",
]


def _step_colours(steps: Sequence[int]) -> tuple[Any, LogNorm]:
    norm = LogNorm(vmin=1, vmax=max(steps) + 1)
    return colormaps["viridis"], norm


def chain_training_figure(curves: Mapping[int, Mapping[str, Sequence[float]]], title: str = "") -> Figure:
    """Fig. S02: training loss (Eq. 3) of every chain link against tokens seen, coloured by checkpoint step.

    ``curves`` maps a checkpoint step to its link's loss curve (``tokens``, ``loss``, ``mse_loss``, ``l1_loss``).
    The first link (random initialisation) is drawn on its own panel; later links share the second.
    """
    steps = sorted(curves)
    cmap, norm = _step_colours(steps)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    first = curves[steps[0]]
    axes[0].plot(first["tokens"], first["loss"], color="black", label="loss (Eq. 3)")
    axes[0].plot(first["tokens"], first["mse_loss"], color="tab:blue", alpha=0.7, label="MSE")
    axes[0].plot(first["tokens"], first["l1_loss"], color="tab:orange", alpha=0.7, label="λ·L1")
    axes[0].set(
        xlabel="training tokens", ylabel="loss", yscale="log", title=f"first SAE (step {steps[0]}), random init"
    )
    axes[0].legend()
    for step in steps[1:]:
        curve = curves[step]
        axes[1].plot(curve["tokens"], curve["loss"], color=cmap(norm(step + 1)), lw=1)
    axes[1].set(
        xlabel="training tokens",
        ylabel="loss (Eq. 3)",
        yscale="log",
        title="later links, initialised from the previous SAE",
    )
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes[1], label="checkpoint step + 1")
    if title:
        fig.suptitle(title)
    return fig


def _quality_labels(link_tokens: int | None, baseline_tokens: int | None) -> tuple[str, str]:
    chain = "SAE-Track chain" + (f" (links: {link_tokens:,} tokens)" if link_tokens else "")
    scratch = "from scratch" + (f" ({baseline_tokens:,} tokens)" if baseline_tokens else "")
    return chain, scratch


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
    spread). ``link_tokens`` / ``baseline_tokens`` name the budgets in the legend.
    """
    panels = [
        ("explained_variance", "explained variance"),
        ("ce_recovered", "CE loss recovered"),
        ("l0", "mean L0"),
        ("dead_fraction", "dead fraction"),
        ("dense_fraction", "dense fraction (>10% of tokens)"),
        ("mse", "MSE per element"),
    ]
    chain_label, scratch_label = _quality_labels(link_tokens, baseline_tokens)
    by_step = {link["step"]: link["metrics"] for link in links}
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), constrained_layout=True)
    x = np.array([link["step"] for link in links]) + 1
    for ax, (key, label) in zip(axes.flat, panels, strict=True):
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
    axes.flat[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def _convergence_title(item: Mapping[str, Any]) -> str:
    ratio = item["token_ratio"]
    if not ratio:
        return f"step {item['step']}: recurrent did not reach target"
    text = f"step {item['step']}: ratio {ratio:.3f} (1/{1 / ratio:.0f})"
    return text + (", trivial" if item.get("trivial") else "")


def convergence_figure(convergence: Sequence[Mapping[str, Any]], link_tokens: int, title: str = "") -> Figure:
    """Fig. S04: loss against tokens, from scratch vs recurrently initialised, at each baseline checkpoint.

    The dashed line is the from-scratch SAE's final loss (the target); round markers show where each curve first
    reaches it. The shaded band is the chain's link budget; a cross marks the probe's smoothed loss at its end
    (``recurrent_loss_at_link_budget``, when given), so the gap a link leaves shows. Titles give the token ratio and
    say when it is trivial (on target within the first smoothing window) or the target was not reached.
    """
    n = len(convergence)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.8), constrained_layout=True, squeeze=False)
    for ax, item in zip(axes[0], convergence, strict=True):
        scratch, recurrent = item["scratch_curve"], item["recurrent_curve"]
        ax.plot(scratch["tokens"], scratch["loss"], color="tab:gray", label="from scratch")
        ax.plot(recurrent["tokens"], recurrent["loss"], color="tab:blue", label="recurrent init (probe)")
        ax.axhline(item["target_loss"], ls="--", color="black", lw=1, label="target: scratch final loss")
        first_tokens = min(scratch["tokens"][0], recurrent["tokens"][0])
        ax.axvspan(first_tokens, link_tokens, color="tab:blue", alpha=0.08, label=f"link budget ({link_tokens:,})")
        for key, colour in (("scratch_tokens_to_target", "tab:gray"), ("recurrent_tokens_to_target", "tab:blue")):
            if item[key] is not None:
                ax.plot(item[key], item["target_loss"], "o", color=colour, ms=7)
        at_link = item.get("recurrent_loss_at_link_budget")
        if at_link is not None:
            excess = item["link_budget_excess"]
            label = "probe at link budget" + (f" ({excess:+.0%} vs target)" if excess is not None else "")
            ax.plot(link_tokens, at_link, "X", color="tab:red", ms=8, label=label)
        ax.set(xscale="log", yscale="log", xlabel="training tokens", ylabel="loss (Eq. 3)")
        ax.set_title(_convergence_title(item), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best", framealpha=0.6)
    if title:
        fig.suptitle(title)
    return fig


def _agreement_histograms(ax: Any, agreement: Sequence[Mapping[str, Any]], threshold: float) -> None:
    cmap, norm = _step_colours([a["step"] for a in agreement] or [0])
    if not agreement:
        ax.text(0.5, 0.5, "no independent SAEs in this preset\n(chain.baseline is empty)", ha="center",
                va="center", transform=ax.transAxes)  # fmt: skip
    bins = np.linspace(-0.2, 1.0, 49)
    for item in agreement:
        colour = cmap(norm(item["step"] + 1))
        ax.hist(item["matched_cosines"], bins=bins, histtype="step", lw=1.5, color=colour,
                label=f"step {item['step']}: mean {item['mean_matched_cosine']:.2f}, "
                f"{item['fraction_above_threshold']:.0%} > {threshold}")  # fmt: skip
        seed = item.get("seed_to_seed")
        if seed:
            ax.hist(seed["matched_cosines"], bins=bins, histtype="step", lw=1, ls="--", color=colour,
                    label=f"  seed-to-seed: mean {seed['mean_matched_cosine']:.2f}, "
                    f"{seed['fraction_above_threshold']:.0%} > {threshold}")  # fmt: skip
    ax.axvline(threshold, ls="--", color="black", lw=1)
    ax.set(xlabel="decoder cosine of Hungarian-matched features", ylabel="live features",
           title="chain link vs independent SAE (solid),\nsecond-seed vs first independent SAE (dashed)")  # fmt: skip
    if agreement:
        ax.legend(fontsize=7)


def _agreement_by_step(ax: Any, agreement: Sequence[Mapping[str, Any]], threshold: float) -> None:
    x = np.array([a["step"] for a in agreement]) + 1
    ax.plot(x, [a["mean_matched_cosine"] for a in agreement], "o-", color="tab:blue",
            label="chain vs scratch: mean cosine")  # fmt: skip
    ax.plot(x, [a["fraction_above_threshold"] for a in agreement], "s--", color="tab:blue",
            label=f"chain vs scratch: fraction > {threshold}")  # fmt: skip
    seeds = [a for a in agreement if a.get("seed_to_seed")]
    if seeds:
        sx = np.array([a["step"] for a in seeds]) + 1
        ax.plot(sx, [a["seed_to_seed"]["mean_matched_cosine"] for a in seeds], "o-", color="tab:gray",
                label="seed-to-seed (ceiling): mean cosine")  # fmt: skip
        ax.plot(sx, [a["seed_to_seed"]["fraction_above_threshold"] for a in seeds], "s--", color="tab:gray",
                label=f"seed-to-seed (ceiling): fraction > {threshold}")  # fmt: skip
    ax.set(xscale="log", ylim=(-0.02, 1.02), xlabel="checkpoint step + 1",
           title="agreement per checkpoint, with its seed-to-seed ceiling")  # fmt: skip
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3)
    if agreement:
        ax.legend(fontsize=7)


def agreement_figure(
    agreement: Sequence[Mapping[str, Any]],
    stability: Sequence[Mapping[str, Any]],
    threshold: float,
    title: str = "",
) -> Figure:
    """Fig. S05: chain vs independent SAE feature agreement beside the seed-to-seed ceiling, and index stability.

    Left: histograms of matched decoder cosines per baseline checkpoint (solid: chain link vs independent SAE;
    dashed: a second independent SAE vs the first, where ``seed_to_seed`` is given). Middle: the mean matched cosine
    and the fraction above ``threshold`` per checkpoint, both series. Right: index stability along the chain.
    """
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.2), constrained_layout=True)
    _agreement_histograms(axes[0], agreement, threshold)
    _agreement_by_step(axes[1], agreement, threshold)
    x = np.array([s["to_step"] for s in stability]) + 1
    axes[2].plot(x, [s["hungarian_same_index"] for s in stability], "o-", ms=3, label="Hungarian partner keeps index")
    axes[2].plot(x, [s["argmax_same_index"] for s in stability], "s-", ms=3, label="most similar keeps index")
    axes[2].plot(x, [s["mean_same_index_cosine"] for s in stability], "^-", ms=3, label="mean cos(feature i, i)")
    axes[2].set(
        xscale="log",
        ylim=(-0.02, 1.02),
        xlabel="checkpoint step + 1 (of the later link)",
        title="consecutive chain links: does feature i stay feature i?",
    )
    axes[2].xaxis.set_minor_formatter(NullFormatter())
    axes[2].legend(fontsize=8)
    axes[2].grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig
