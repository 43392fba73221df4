"""Figures of the formation stage's controls: Fig. 5d (the progress measure's two terms) and Fig. S7 (formation on
the from-scratch SAEs, without the chain)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from saetrack.plots.formation import PROGRESS_TITLES, TYPE_STYLE

__all__ = ["baseline_formation_figure", "progress_terms_figure"]


def progress_terms_figure(
    steps: Sequence[int],
    terms: Mapping[str, Mapping[str, np.ndarray]],
    boundaries: Mapping[str, int] | None = None,
    title: str = "",
) -> Figure:
    """Fig. 5d: the progress measure M_i(t) (Def. 5.4) split into its terms, one panel per key of ``terms``.

    ``terms[key]`` holds ``within_token`` / ``within_concept`` (median within-set similarity, Eq. 15 / 18, of
    token- and concept-level features; thick lines), ``random_baseline`` (Eq. 16 / 19, one number per
    checkpoint; black dashed) and, optionally, ``progress_token`` / ``progress_concept`` (their difference, the
    medians of Fig. 5; thin dotted). ``boundaries`` maps a label (e.g. "Emergent starts") to a checkpoint index,
    drawn as a grey vertical line. x is step + 1 on a log axis.
    """
    x = np.asarray(steps, dtype=float) + 1
    keys = list(terms)
    fig, axes = plt.subplots(1, len(keys), figsize=(5.6 * len(keys), 4.2), constrained_layout=True, squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        t = terms[key]
        for kind, style in TYPE_STYLE.items():
            ax.plot(x, t[f"within_{kind}"], color=style["color"], lw=2.5, marker=style["marker"], ms=3,
                    label=f"within-set similarity, {style['label']} (median)")  # fmt: skip
            if f"progress_{kind}" in t:
                ax.plot(x, t[f"progress_{kind}"], color=style["color"], lw=1.2, ls=":",
                        label=f"$M_i(t)$ = within - baseline, {style['label']}")  # fmt: skip
        ax.plot(x, t["random_baseline"], color="black", lw=2, ls="--", label="random baseline (one per checkpoint)")
        for j, (label, index) in enumerate((boundaries or {}).items()):
            ax.axvline(x[index], color="grey", lw=1.2, ls=("-", "-.")[j % 2], label=f"{label} (step {steps[index]})")
        ax.set(xscale="log", xlabel="checkpoint step + 1", ylabel="similarity",
               title=f"terms of {PROGRESS_TITLES.get(key, key)}")  # fmt: skip
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def _series(per_step: Sequence[Mapping[str, Any]], side: str, name: str) -> np.ndarray:
    """``per_step[*][side][name]`` as floats, ``None`` as NaN."""
    return np.asarray([np.nan if r[side][name] is None else r[side][name] for r in per_step], dtype=float)


def baseline_formation_figure(summary: Mapping[str, Any], key: str = "activation_cosine", title: str = "") -> Figure:
    """Fig. S7 (control c): formation without the chain, from :func:`saetrack.stages.formation.baseline_formation
    .control_summary`.

    Left: the median progress measure (Def. 5.4; ``key``) of each SAE's own token- and concept-level features at
    each baseline checkpoint: from-scratch SAEs solid, the chain link at the same checkpoint dashed. Right: the
    number of token- and concept-level live features, same styles. x is step + 1 on a log axis. A run without
    baselines gets a figure that says so.
    """
    per_step = list(summary.get("per_step", []))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    if not per_step:
        for ax in axes:
            ax.axis("off")
        reason = summary.get("skipped", "no baseline checkpoints")
        axes[0].text(0.0, 0.5, f"no from-scratch baselines to compare:\n{reason}", fontsize=10, va="center")
        if title:
            fig.suptitle(title)
        return fig
    x = np.asarray([r["step"] for r in per_step], dtype=float) + 1
    sides = {"baseline": ("-", "from-scratch SAE"), "chain": ("--", "chain link")}
    for kind, style in TYPE_STYLE.items():
        for side, (ls, name) in sides.items():
            common = {
                "color": style["color"],
                "marker": style["marker"],
                "ls": ls,
                "lw": 2 if side == "baseline" else 1.3,
            }
            axes[0].plot(
                x, _series(per_step, side, f"median_{kind}_{key}"), label=f"{name}, {style['label']}", **common
            )
            axes[1].plot(x, _series(per_step, side, f"n_{kind}"), label=f"{name}, {style['label']}", **common)
    axes[0].axhline(0, color="black", lw=0.8, ls=":")
    axes[0].set(ylabel="median $M_i(t)$ of each feature's own top-k")
    axes[1].set(ylabel="live features of this type")
    for ax in axes:
        ax.set(xscale="log", xlabel="checkpoint step + 1")
        ax.set_xticks(x, [str(int(v)) for v in x])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    axes[0].set_title(f"coherence of each SAE's own features at t\n{PROGRESS_TITLES.get(key, key)}", fontsize=10)
    axes[1].set_title("token- and concept-level features at t", fontsize=10)
    if title:
        fig.suptitle(title)
    return fig
