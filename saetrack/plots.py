"""One function per figure, each returning a matplotlib Figure (saved by :func:`saetrack.figures.save_figure`)."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from saetrack.drift import PHASE_NAMES

if TYPE_CHECKING:
    from saetrack.regions import ToyRegions

__all__ = ["agreement_figure", "chain_quality_figure", "chain_training_figure", "convergence_figure"]


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


#: Colours and markers of the two feature types (Def. 4.1 / 4.2), shared by Fig. 4, 5 and 8.
TYPE_STYLE: dict[str, dict[str, str]] = {
    "token": {"color": "tab:blue", "marker": "o", "label": "token-level"},
    "concept": {"color": "tab:orange", "marker": "D", "label": "concept-level"},
}

#: Titles of the progress-measure keys of :func:`saetrack.formation.progress_measures`.
PROGRESS_TITLES: dict[str, str] = {
    "activation_cosine": "activation space, cosine (Eq. 14)",
    "feature_cosine": "feature space, cosine (Eq. 17)",
    "feature_jaccard": "feature space, Jaccard (Eq. 28)",
    "feature_weighted_jaccard": "feature space, weighted Jaccard (Eq. 29)",
}


def progress_figure(
    steps: Sequence[int],
    measures: Mapping[str, np.ndarray],
    feature_types: np.ndarray,
    keys: Sequence[str] = ("activation_cosine", "feature_cosine"),
    n_lines: int = 25,
    seed: int = 0,
    title: str = "",
    phases: Any | None = None,
    other_phases: Any | None = None,
) -> Figure:
    """Fig. 5 (``keys`` = activation and feature cosine) and Fig. 8 (Jaccard variants): progress measure M_i(t).

    One panel per key; x is checkpoint step + 1 on a log axis. ``feature_types`` [F] holds "token" or "concept"
    per feature (other labels are left out). For each type, ``n_lines`` features drawn reproducibly with ``seed``
    are thin lines and the median over *all* features of that type is a thick line. ``phases`` (detected on the
    concept-level median, notebook 04) are shaded; ``other_phases`` (from the drift curve) are dashed lines.
    """
    x = np.asarray(steps) + 1
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(1, len(keys), figsize=(5.6 * len(keys), 4.2), constrained_layout=True, squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        values = np.asarray(measures[key])
        if phases is not None:
            shade_phases(ax, steps, phases, other=other_phases, other_label="boundaries from decoder drift")
        for kind, style in TYPE_STYLE.items():
            members = np.nonzero(np.asarray(feature_types) == kind)[0]
            if members.size == 0:
                continue
            shown = rng.choice(members, size=min(n_lines, members.size), replace=False)
            ax.plot(x, values[:, shown], color=style["color"], lw=0.6, alpha=0.35)
            ax.plot(x, np.nanmedian(values[:, members], axis=1), color=style["color"], lw=3,
                    label=f"{style['label']}: median of {members.size}")  # fmt: skip
        ax.axhline(0, color="black", lw=0.8, ls=":")
        ax.set(xscale="log", xlabel="checkpoint step + 1", ylabel="progress measure $M_i(t)$",
               title=PROGRESS_TITLES.get(key, key))  # fmt: skip
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7 if phases is not None else 8, loc="lower right")
    if title:
        fig.suptitle(title)
    return fig


def umap_figure(
    embeddings: Sequence[np.ndarray],
    steps: Sequence[int],
    point_feature: np.ndarray,
    feature_types: Mapping[int, str],
    title: str = "",
) -> Figure:
    """Fig. 4: UMAP of the activation sets A_i^t of a few features, one panel per checkpoint (fitted separately).

    ``embeddings[j]`` [n, 2] are the points at checkpoint ``steps[j]``; ``point_feature`` [n] says which feature
    each point belongs to (the same points in every panel); ``feature_types`` maps a feature to "token" (circles)
    or "concept" (diamonds). Each feature has its own colour.
    """
    features = list(dict.fromkeys(np.asarray(point_feature).tolist()))
    palette = colormaps["tab10" if len(features) <= 10 else "tab20"]
    n = len(embeddings)
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.9 * rows), constrained_layout=True, squeeze=False)
    for ax, emb, step in zip(axes.flat, embeddings, steps, strict=False):
        for j, feature in enumerate(features):
            mask = np.asarray(point_feature) == feature
            kind = feature_types.get(feature, "token")
            ax.scatter(emb[mask, 0], emb[mask, 1], s=22, color=palette(j % palette.N),
                       marker=TYPE_STYLE.get(kind, TYPE_STYLE["token"])["marker"], edgecolors="white", linewidths=0.4,
                       label=f"#{feature} ({kind})")  # fmt: skip
        ax.set(title=f"checkpoint step {step}", xticks=[], yticks=[])
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7, loc="best", markerscale=0.8)
    if title:
        fig.suptitle(title)
    return fig


# ----------------------------------------------------------------------------------------------
# Fig. 3 (feature regions of a toy SAE) and Fig. 2 (feature evolution patterns as a table)
# ----------------------------------------------------------------------------------------------


_REGION_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
_MARKED = re.compile(r"«(.*?)»", re.DOTALL)


def feature_regions_figure(toy: ToyRegions, title: str = "") -> Figure:
    """Fig. 3: feature regions of a toy 2-D SAE (Sec. 5.1).

    Left: activation levels ``ReLU(W_hat_i . x + b_hat_i)`` (Eq. 8) of the most frequent feature as filled
    contours, i.e. the regions ``R_i^[L,U)`` of Def. 5.2 (Eq. 10), with the feature-region boundary ``pre = 0``
    (Def. 5.1, Eq. 9) and the faithful threshold ``pre = L_i`` (dashed). Right: the faithful regions
    ``R_i^faithful = {pre >= L_i}`` (Def. 5.3, Eq. 11) of the three features in ``toy.features``.
    """
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2), constrained_layout=True)
    extent = (toy.grid_x[0], toy.grid_x[-1], toy.grid_y[0], toy.grid_y[-1])
    point_style = {"s": 3, "color": "black", "alpha": 0.12, "linewidths": 0, "zorder": 3}

    left = axes[0]
    feature = toy.features[0]
    pre = toy.pre_activation[feature]
    level = np.ma.masked_where(pre <= 0, np.maximum(pre, 0.0))
    vmax = float(pre.max()) if float(pre.max()) > 0 else 1.0
    filled = left.contourf(toy.grid_x, toy.grid_y, level, levels=np.linspace(0.0, vmax, 9), cmap="viridis")
    fig.colorbar(filled, ax=left, label="activation level $f_i(x)$")
    left.contour(toy.grid_x, toy.grid_y, pre, levels=[0.0], colors="black", linewidths=2)
    if np.isfinite(toy.thresholds[feature]):
        left.contour(toy.grid_x, toy.grid_y, pre, levels=[toy.thresholds[feature]], colors="white",
                     linewidths=1.5, linestyles="--")  # fmt: skip
    left.scatter(toy.points[:, 0], toy.points[:, 1], **point_style)
    left.legend(handles=[Line2D([], [], color="black", lw=2, label="boundary $\\hat W_i x + \\hat b_i = 0$ (Def. 5.1)"),
                         Line2D([], [], color="grey", lw=1.5, ls="--", label=f"$L_i$ = {toy.thresholds[feature]:.2f}")],
                loc="lower left", fontsize=8, framealpha=0.85)  # fmt: skip
    left.set(title=f"feature {feature}: regions $R_i^{{[L,U)}}$ by activation level (Def. 5.2)")

    right = axes[1]
    handles = []
    for j, feat in enumerate(toy.features):
        colour = _REGION_COLOURS[j % len(_REGION_COLOURS)]
        threshold = toy.thresholds[feat]
        if np.isfinite(threshold):
            mask = toy.faithful_mask(feat).astype(float)
            right.contourf(toy.grid_x, toy.grid_y, mask, levels=[0.5, 1.5], colors=[colour], alpha=0.3)
            right.contour(toy.grid_x, toy.grid_y, toy.pre_activation[feat], levels=[threshold], colors=[colour],
                          linewidths=2)  # fmt: skip
        label = f"feature {feat} ($L_i$={threshold:.2f})"
        handles.append(Patch(facecolor=colour, edgecolor=colour, alpha=0.5, label=label))
    right.scatter(toy.points[:, 0], toy.points[:, 1], **point_style)
    right.legend(handles=handles, loc="lower left", fontsize=8, framealpha=0.85)
    right.set(title="faithful regions $R_i^{faithful} = R_i^{[L_i,\\infty)}$ (Def. 5.3)")
    for ax in axes:
        ax.set(xlabel="activation dim 1", ylabel="activation dim 2", xlim=extent[:2], ylim=extent[2:], aspect="equal")
    if title:
        fig.suptitle(title)
    return fig


@dataclass
class PatternExample:
    """One row of Fig. 2: a feature showing an evolution pattern, with its top contexts at a few checkpoints."""

    #: The evolution pattern ("Maintaining", "Grouping", "Shifting", ...).
    pattern: str
    #: Feature index in the final SAE.
    feature: int
    #: ``(checkpoint step, contexts)`` for the first, a middle and the final checkpoint; in each context the
    #: activating token is marked ``«tok»``.
    columns: list[tuple[int, list[str]]]


def _clip_context(text: str, width: int) -> str:
    """One line of at most ``width`` characters, centred on the first ``«tok»`` mark when it must be cut."""
    line = " ".join(text.replace("\n", "⏎ ").split())
    if len(line) <= width:
        return line
    mark = line.find("«")
    centre = mark if mark >= 0 else 0
    start = max(0, min(centre - width // 2, len(line) - width))
    clipped = line[start : start + width]
    if start > 0:
        clipped = "…" + clipped[1:]
    if start + width < len(line):
        clipped = clipped[:-1] + "…"
    return clipped


def pattern_table_figure(
    examples: Sequence[PatternExample], title: str = "", max_contexts: int = 6, width: int = 56
) -> Figure:
    """Fig. 2 as a figure: one row per example (pattern, feature), one column per checkpoint ("step N").

    Each cell lists up to ``max_contexts`` contexts, one line each, cut to ``width`` characters around the
    activating token (marked ``«tok»``). Column headers come from the first example's steps; when the examples'
    steps differ, each cell is also labelled with its own step.
    """
    if not examples:
        raise ValueError("examples is empty: pattern_table_figure needs at least one PatternExample.")
    n_rows = len(examples)
    n_cols = max(len(example.columns) for example in examples)
    steps = [step for step, _ in examples[0].columns]
    shared = all([step for step, _ in example.columns] == steps for example in examples) and len(steps) == n_cols
    cell_h = 0.28 + 0.17 * max_contexts
    fig = plt.figure(figsize=(1.6 + 4.4 * n_cols, 0.6 + cell_h * n_rows), constrained_layout=True)
    grid = fig.add_gridspec(n_rows + 1, n_cols + 1, width_ratios=[1.6] + [4.4] * n_cols,
                            height_ratios=[0.3] + [cell_h] * n_rows)  # fmt: skip
    for c in range(n_cols):
        ax = fig.add_subplot(grid[0, c + 1])
        ax.axis("off")
        if shared:
            ax.text(0.5, 0.3, f"step {steps[c]}", ha="center", va="center", fontsize=11, weight="bold")
    for r, example in enumerate(examples):
        head = fig.add_subplot(grid[r + 1, 0])
        head.axis("off")
        head.text(0.5, 0.5, f"{example.pattern}\nfeature {example.feature}", ha="center", va="center",
                  fontsize=10, weight="bold", wrap=True)  # fmt: skip
        for c in range(n_cols):
            ax = fig.add_subplot(grid[r + 1, c + 1])
            ax.set(xticks=[], yticks=[], facecolor="#f4f4f4" if r % 2 == 0 else "white")
            if c >= len(example.columns):
                continue
            step, contexts = example.columns[c]
            lines = [_clip_context(text, width) for text in contexts[:max_contexts]]
            if not shared:
                lines = [f"[step {step}]", *lines]
            ax.text(0.01, 0.97, "\n".join(lines) if lines else "(no activating contexts)", ha="left", va="top",
                    fontsize=7, family="monospace", transform=ax.transAxes, linespacing=1.35, clip_on=True)  # fmt: skip
    if title:
        fig.suptitle(title)
    return fig


def _html_context(text: str) -> str:
    """``text`` HTML-escaped, then each ``«tok»`` turned into ``<mark>tok</mark>``."""
    return _MARKED.sub(r"<mark>\1</mark>", html.escape(text, quote=True))


def pattern_table_html(examples: Sequence[PatternExample], title: str = "") -> str:
    """Fig. 2 as a standalone HTML page: the table of :func:`pattern_table_figure` with every context listed.

    All text is escaped; the activating token (``«tok»``) is shown as ``<mark>tok</mark>``.
    """
    n_cols = max((len(example.columns) for example in examples), default=0)
    steps = [step for step, _ in examples[0].columns] if examples else []
    shared = all([step for step, _ in example.columns] == steps for example in examples) and len(steps) == n_cols
    heading = html.escape(title) if title else "Feature evolution patterns"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{heading}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
        "th,td{border:1px solid #bbb;padding:6px;vertical-align:top}td ul{margin:0;padding-left:1.1em}"
        "td li{font-family:monospace;font-size:0.85em;white-space:pre-wrap}mark{background:#ffd54f}</style>",
        "</head><body>",
        f"<h1>{heading}</h1>",
        "<table>",
        "<tr><th>pattern / feature</th>"
        + "".join(f"<th>{f'step {steps[c]}' if shared else f'checkpoint {c + 1}'}</th>" for c in range(n_cols))
        + "</tr>",
    ]
    for example in examples:
        row = [f"<tr><th>{html.escape(example.pattern)}<br>feature {int(example.feature)}</th>"]
        for c in range(n_cols):
            if c >= len(example.columns):
                row.append("<td></td>")
                continue
            step, contexts = example.columns[c]
            label = "" if shared else f"<div><b>step {int(step)}</b></div>"
            items = "".join(f"<li>{_html_context(text)}</li>" for text in contexts)
            row.append(f"<td>{label}<ul>{items}</ul></td>")
        out.append("".join(row) + "</tr>")
    out += ["</table>", "</body></html>", ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# Sec. 6: decoder drift, trajectories, phases
# ----------------------------------------------------------------------------------------------

#: Shading of the three phases (Sec. 4.1) on figures against checkpoint step + 1.
PHASE_COLOURS: tuple[str, str, str] = ("#d9d9d9", "#fde0c5", "#d4ecd4")
#: Fig. 7's colours (the paper's): blue while unformed, dark red once formed.
UNFORMED_COLOUR, FORMED_COLOUR = "tab:blue", "darkred"


def shade_phases(
    ax: Any, steps: Sequence[int], phases: Any, label: bool = True, other: Any | None = None, other_label: str = ""
) -> None:
    """Shade the Initialization & Warmup, Emergent and Convergent phases on an axis whose x is step + 1.

    ``phases`` is a :class:`saetrack.drift.Phases` (boundaries as checkpoint indices); a phase spans from its first
    checkpoint to the first checkpoint of the next. ``other`` (a second set of boundaries) is drawn as dashed lines.
    """
    x = np.asarray(steps, dtype=float) + 1
    edges = [x[0], x[phases.emergent], x[phases.convergent], x[-1]]
    for i, name in enumerate(PHASE_NAMES):
        ax.axvspan(edges[i], edges[i + 1], color=PHASE_COLOURS[i], alpha=0.6, lw=0, zorder=0,
                   label=name if label else None)  # fmt: skip
    if other is not None:
        for j, index in enumerate((other.emergent, other.convergent)):
            ax.axvline(x[index], color="black", ls="--", lw=1, zorder=1, label=other_label if j == 0 else None)


def drift_distribution_figure(
    steps: Sequence[int],
    cosine: np.ndarray,
    quantiles: np.ndarray,
    histogram_positions: Sequence[int],
    phases: Any,
    other_phases: Any | None = None,
    title: str = "",
) -> Figure:
    """Fig. 6a (checkpoint-centric): decoder cosine to final of every live feature at each checkpoint.

    Top: histograms (log count) at ``histogram_positions``. Bottom: the 5-95% and 25-75% bands and the median of
    ``quantiles`` ([T, 5] at 5/25/50/75/95%) against step + 1, with the phases detected on the median shaded and
    ``other_phases`` (from the progress measure) as dashed lines. ``cosine`` is ``[T, L]`` over live features.
    """
    steps = np.asarray(steps)
    x = steps + 1
    n_hist = len(histogram_positions)
    fig = plt.figure(figsize=(2.4 * max(n_hist, 4), 6.6), constrained_layout=True)
    grid = fig.add_gridspec(2, n_hist, height_ratios=[1, 1.25])
    bins = np.linspace(-1, 1, 41)
    for i, position in enumerate(histogram_positions):
        ax = fig.add_subplot(grid[0, i])
        values = cosine[position]
        ax.hist(values[np.isfinite(values)], bins=bins, color="tab:purple", alpha=0.8, log=True)
        ax.set(title=f"step {int(steps[position])}", xlabel="cosine to final", xlim=(-1, 1))
        if i == 0:
            ax.set_ylabel("features (log)")
    ax = fig.add_subplot(grid[1, :])
    shade_phases(ax, steps, phases, other=other_phases, other_label="boundaries from the progress measure")
    ax.fill_between(x, quantiles[:, 0], quantiles[:, 4], color="tab:purple", alpha=0.18, label="5-95%")
    ax.fill_between(x, quantiles[:, 1], quantiles[:, 3], color="tab:purple", alpha=0.35, label="25-75%")
    ax.plot(x, quantiles[:, 2], color="tab:purple", lw=2.5, marker="o", ms=3, label="median")
    ax.plot(x, phases.fit, color="black", lw=1, alpha=0.7, label="three-segment fit (phases)")
    ax.set(xscale="log", xlabel="checkpoint step + 1", ylabel="decoder cosine to final", ylim=(-0.05, 1.05))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    fig.suptitle(title or "decoder cosine to final, per checkpoint (live features)")
    return fig


def drift_features_figure(
    steps: Sequence[int],
    cosine: np.ndarray,
    features: Sequence[int],
    formation_steps: Sequence[int | None],
    phases: Any,
    title: str = "",
) -> Figure:
    """Fig. 6b (feature-centric): each sampled feature's decoder cosine to final across checkpoints.

    ``cosine`` is ``[T, n]`` for the ``features``; a dotted vertical line marks each feature's formation step
    (``None``: never formed); the phases detected on the median drift curve are shaded.
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
        shade_phases(ax, steps, phases, label=k == 0)
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
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="outside lower center", ncol=4, fontsize=8)
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
            if ax is axes[1, 0]:
                phases = result.drift.drift_phases
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
