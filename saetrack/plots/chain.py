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


def chain_quality_figure(
    links: Sequence[Mapping[str, Any]],
    baselines: Sequence[Mapping[str, Any]] = (),
    title: str = "",
) -> Figure:
    """Fig. S03: held-out quality of every link against checkpoint step + 1 (log x); baselines as crosses."""
    panels = [
        ("explained_variance", "explained variance"),
        ("ce_recovered", "CE loss recovered"),
        ("l0", "mean L0"),
        ("dead_fraction", "dead fraction"),
        ("dense_fraction", "dense fraction (>10% of tokens)"),
        ("mse", "MSE per element"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), constrained_layout=True)
    x = np.array([link["step"] for link in links]) + 1
    for ax, (key, label) in zip(axes.flat, panels, strict=True):
        ax.plot(x, [link["metrics"][key] for link in links], "o-", ms=3, label="SAE-Track chain")
        if baselines:
            bx = np.array([b["step"] for b in baselines]) + 1
            ax.plot(bx, [b["metrics"][key] for b in baselines], "x", color="tab:red", ms=8, mew=2, label="from scratch")
        ax.set(xscale="log", xlabel="checkpoint step + 1", ylabel=label)
        ax.grid(alpha=0.3)
    axes.flat[0].legend()
    if title:
        fig.suptitle(title)
    return fig


def convergence_figure(convergence: Sequence[Mapping[str, Any]], link_tokens: int, title: str = "") -> Figure:
    """Fig. S04: loss against tokens, from scratch vs recurrently initialised, at each baseline checkpoint.

    The dashed line is the from-scratch SAE's final loss (the target); markers show where each curve first
    reaches it. The shaded band is the chain's link budget.
    """
    n = len(convergence)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.8), constrained_layout=True, squeeze=False)
    for ax, item in zip(axes[0], convergence, strict=True):
        scratch, recurrent = item["scratch_curve"], item["recurrent_curve"]
        ax.plot(scratch["tokens"], scratch["loss"], color="tab:gray", label="from scratch")
        ax.plot(recurrent["tokens"], recurrent["loss"], color="tab:blue", label="recurrent init")
        ax.axhline(item["target_loss"], ls="--", color="black", lw=1, label="target: scratch final loss")
        first_tokens = min(scratch["tokens"][0], recurrent["tokens"][0])
        ax.axvspan(first_tokens, link_tokens, color="tab:blue", alpha=0.08, label="link budget")
        for key, colour in (("scratch_tokens_to_target", "tab:gray"), ("recurrent_tokens_to_target", "tab:blue")):
            if item[key] is not None:
                ax.plot(item[key], item["target_loss"], "o", color=colour, ms=7)
        ratio = item["token_ratio"]
        ratio_text = f"ratio {ratio:.3f} (1/{1 / ratio:.0f})" if ratio else "recurrent did not reach target"
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="training tokens",
            ylabel="loss (Eq. 3)",
            title=f"step {item['step']}: {ratio_text}",
        )
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def agreement_figure(
    agreement: Sequence[Mapping[str, Any]],
    stability: Sequence[Mapping[str, Any]],
    threshold: float,
    title: str = "",
) -> Figure:
    """Fig. S05: chain vs independent SAE feature agreement (left) and index stability along the chain (right)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), constrained_layout=True)
    cmap, norm = _step_colours([a["step"] for a in agreement] or [0])
    if not agreement:
        axes[0].text(0.5, 0.5, "no independent SAEs in this preset\n(chain.baseline is empty)", ha="center",
                     va="center", transform=axes[0].transAxes)  # fmt: skip
    bins = np.linspace(-0.2, 1.0, 49)
    for item in agreement:
        axes[0].hist(
            item["matched_cosines"],
            bins=bins,
            histtype="step",
            lw=1.5,
            color=cmap(norm(item["step"] + 1)),
            label=f"step {item['step']}: mean {item['mean_matched_cosine']:.2f}, "
            f"{item['fraction_above_threshold']:.0%} > {threshold}",
        )
    axes[0].axvline(threshold, ls="--", color="black", lw=1)
    axes[0].set(
        xlabel="decoder cosine of Hungarian-matched features",
        ylabel="live features",
        title="chain link vs independent SAE at the same checkpoint",
    )
    if agreement:
        axes[0].legend(fontsize=8)
    x = np.array([s["to_step"] for s in stability]) + 1
    axes[1].plot(x, [s["hungarian_same_index"] for s in stability], "o-", ms=3, label="Hungarian partner keeps index")
    axes[1].plot(x, [s["argmax_same_index"] for s in stability], "s-", ms=3, label="most similar keeps index")
    axes[1].plot(x, [s["mean_same_index_cosine"] for s in stability], "^-", ms=3, label="mean cos(feature i, i)")
    axes[1].set(
        xscale="log",
        ylim=(-0.02, 1.02),
        xlabel="checkpoint step + 1 (of the later link)",
        title="consecutive chain links: does feature i stay feature i?",
    )
    axes[1].legend(fontsize=8)
    axes[1].grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig
