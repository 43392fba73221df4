"""Figures of the formation stage's controls: Fig. 5d (the progress measure's two terms), Fig. 5a (the anchor-swap
control), Fig. 5n (the baseline-normalised measure) and Fig. S7 (formation on the from-scratch SAEs, without the
chain). Legends sit below the panels, never over a curve."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from saetrack.plots.formation import PROGRESS_TITLES, TYPE_STYLE, figure_legend

__all__ = ["anchor_control_figure", "baseline_formation_figure", "normalised_progress_figure", "progress_terms_figure"]

#: Line style of each anchor of the anchor-swap control (Fig. 5a, 5n).
ANCHOR_STYLE: dict[str, str] = {"first": ":", "middle": "--", "final": "-"}


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
    """``per_step[*][side][name]`` as floats, ``None`` (or a missing name) as NaN."""
    return np.asarray([np.nan if r[side].get(name) is None else r[side][name] for r in per_step], dtype=float)


def _curve(values: Sequence[float | None]) -> np.ndarray:
    """A results.json curve (``None`` for undefined) as floats with NaN."""
    return np.asarray([np.nan if v is None else v for v in values], dtype=float)


def baseline_formation_figure(summary: Mapping[str, Any], key: str = "activation_cosine", title: str = "") -> Figure:
    """Fig. S7 (control c): formation without the chain, from :func:`saetrack.stages.formation.baseline_formation
    .control_summary`.

    Left: the median progress measure (Def. 5.4; ``key``) of each SAE's own token- and concept-level features at
    each baseline checkpoint: from-scratch SAEs solid, the chain link at the same checkpoint dashed. Middle: the
    number of token- and concept-level live features, same styles. Right: each SAE's dead fraction on the analysis
    set (and ultra-low, hatched), since medians over live features compare little when half a dictionary is dead.
    The baseline checkpoints are evenly spaced on x, labelled by step. A run without baselines gets a figure that
    says so.
    """
    per_step = list(summary.get("per_step", []))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), layout="constrained")
    if not per_step:
        for ax in axes:
            ax.axis("off")
        reason = summary.get("skipped", "no baseline checkpoints")
        axes[0].text(0.0, 0.5, f"no from-scratch baselines to compare:\n{reason}", fontsize=10, va="center")
        if title:
            fig.suptitle(title)
        return fig
    x = np.arange(len(per_step), dtype=float)
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
            axes[1].plot(x, _series(per_step, side, f"n_{kind}"), **common)
    for j, (side, (_, name)) in enumerate(sides.items()):
        colour = ("tab:red", "tab:gray")[j]
        dead, ultra = _series(per_step, side, "dead_fraction"), _series(per_step, side, "ultra_low_fraction")
        axes[2].bar(x + (j - 0.5) * 0.38, dead, 0.36, color=colour, label=f"{name}: dead")
        stack = axes[2].bar(x + (j - 0.5) * 0.38, ultra, 0.36, bottom=dead, color="white", edgecolor=colour,
                            hatch="//", label=f"{name}: ultra-low")  # fmt: skip
        axes[2].bar_label(stack, labels=[f"{v:.0%}" if np.isfinite(v) else "n/a" for v in dead], fontsize=7, padding=2)
    axes[0].axhline(0, color="black", lw=0.8, ls=":")
    axes[0].set(ylabel="median $M_i(t)$ of each feature's own top-k")
    axes[1].set(ylabel="live features of this type")
    axes[2].set(ylabel="share of the SAE's features (number: dead)", ylim=(0, 1))
    for ax in axes:
        ax.set_xticks(x, [f"step {r['step']}" for r in per_step], rotation=30, ha="right")
        ax.set(xlabel="baseline checkpoint", xlim=(-0.6, len(per_step) - 0.4))
        ax.grid(alpha=0.3)
    axes[0].set_title(f"coherence of each SAE's own features at t\n{PROGRESS_TITLES.get(key, key)}", fontsize=10)
    axes[1].set_title("token- and concept-level features at t", fontsize=10)
    axes[2].set_title("dead (and ultra-low) features of each SAE at t", fontsize=10)
    figure_legend(fig, axes, ncol=4)
    if title:
        fig.suptitle(title)
    return fig


def anchor_control_figure(steps: Sequence[int], control: Mapping[str, Any], title: str = "") -> Figure:
    """Fig. 5a: the anchor-swap control of the progress measure (:mod:`saetrack.analysis.anchors`).

    ``control`` is results.json's ``anchor_control`` (:func:`saetrack.analysis.anchors.anchor_summary`). One panel
    per anchor a (first, middle, final checkpoint): the median within-set cosine S_i^a(t) (Eq. 15) of the top-k
    datapoints chosen at a, for features token- and concept-level at a, at every checkpoint t, with the random
    baseline B(t) (Eq. 16, black dashed) and the anchor marked (grey line). A selection effect peaks at the anchor
    whatever it is; formation rises toward the final checkpoint from every anchor. x is step + 1 on a log axis.
    """
    anchors = dict(control.get("anchors", {}))
    x = np.asarray(steps, dtype=float) + 1
    fig, axes = plt.subplots(1, max(len(anchors), 1), figsize=(5.2 * max(len(anchors), 1), 4.6),
                             layout="constrained", squeeze=False, sharey=True)  # fmt: skip
    for ax, (name, row) in zip(axes[0], anchors.items(), strict=False):
        for kind, style in TYPE_STYLE.items():
            numbers = row[kind]
            ax.plot(x, _curve(numbers["curve"]), color=style["color"], marker=style["marker"], ms=3, lw=2,
                    label=f"{style['label']} at the anchor (median)")  # fmt: skip
        ax.plot(x, _curve(control["baseline"]), color="black", ls="--", lw=1.5, label="random baseline B(t)")
        ax.axvline(x[row["index"]], color="grey", lw=1.5, label="anchor: the checkpoint the sets were chosen at")
        counts = f"{row['token']['n']} token-level, {row['concept']['n']} concept-level features"
        ax.set(xscale="log", xlabel="checkpoint step + 1")
        ax.set_title(f"sets chosen at the {name} checkpoint (step {row['step']})\n{counts}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("within-set cosine similarity $S_i^a(t)$")
    figure_legend(fig, axes[0], ncol=4)
    if title:
        fig.suptitle(title)
    return fig


def normalised_progress_figure(
    steps: Sequence[int],
    normalised: np.ndarray,
    feature_types: np.ndarray,
    progress_medians: Mapping[str, np.ndarray] | None = None,
    anchor_control: Mapping[str, Any] | None = None,
    n_lines: int = 25,
    seed: int = 0,
    title: str = "",
) -> Figure:
    """Fig. 5n: the baseline-normalised progress measure N_i(t) = (S_i(t) - B(t)) / (1 - B(t)) beside Eq. 14.

    Left: N_i(t) ``[T, L]`` of the paper's D_i (activation space), ``n_lines`` seeded features per type thin and
    the median of each type thick (typed by ``feature_types``, the final label), with the medians of M_i(t) (Eq. 14,
    ``progress_medians`` keyed "token" / "concept") dotted. Right (with ``anchor_control``): the normalised median
    of the anchor-swap control per anchor (line style) and type (colour). x is step + 1 on a log axis.
    """
    x = np.asarray(steps, dtype=float) + 1
    rng = np.random.default_rng(seed)
    n_panels = 2 if anchor_control else 1
    fig, axes = plt.subplots(1, n_panels, figsize=(5.8 * n_panels, 4.6), layout="constrained", squeeze=False)
    left = axes[0, 0]
    values = np.asarray(normalised, dtype=float)
    for kind, style in TYPE_STYLE.items():
        members = np.nonzero(np.asarray(feature_types) == kind)[0]
        if members.size:
            shown = rng.choice(members, size=min(n_lines, members.size), replace=False)
            left.plot(x, values[:, shown], color=style["color"], lw=0.6, alpha=0.35)
            left.plot(x, np.nanmedian(values[:, members], axis=1), color=style["color"], lw=3,
                      label=f"$N_i(t)$, {style['label']}: median of {members.size}")  # fmt: skip
        if progress_medians is not None and kind in progress_medians:
            left.plot(x, progress_medians[kind], color=style["color"], lw=1.5, ls=":",
                      label=f"$M_i(t)$ (Eq. 14), {style['label']}: median")  # fmt: skip
    left.set(title="the paper's $D_i$ (chosen at the final checkpoint)", ylabel="$N_i(t)$ or $M_i(t)$")
    for name, row in (anchor_control or {}).get("anchors", {}).items():
        for kind, style in TYPE_STYLE.items():
            curve = _curve(row[kind]["normalised"]["curve"])
            axes[0, 1].plot(x, curve, color=style["color"], ls=ANCHOR_STYLE.get(name, "-"), lw=2,
                            label=f"{style['label']}, sets chosen at the {name} checkpoint")  # fmt: skip
            axes[0, 1].plot(x[row["index"]], curve[row["index"]], color=style["color"], marker="o", ms=6)
    if n_panels == 2:
        axes[0, 1].set(title="anchor-swap control: median S normalised", ylabel="$(S - B) / (1 - B)$")
    for ax in axes[0]:
        ax.axhline(0, color="black", lw=0.8, ls=":")
        ax.set(xscale="log", xlabel="checkpoint step + 1")
        ax.grid(alpha=0.3)
    figure_legend(fig, axes[0], ncol=3)
    if title:
        fig.suptitle(title)
    return fig
