"""One function per figure, each returning a matplotlib Figure (saved by :func:`saetrack.figures.save_figure`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib

from saetrack.analysis.regions import ToyRegions
from saetrack.plots.drift import shade_phases

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

__all__ = [
    "PROGRESS_TITLES",
    "TYPE_STYLE",
    "PatternExample",
    "cell_summary",
    "checkpoint_titles",
    "clip_context",
    "feature_regions_figure",
    "figure_legend",
    "pattern_examples_from_records",
    "pattern_table_figure",
    "progress_figure",
    "umap_figure",
]


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


def figure_legend(fig: Figure, axes: Sequence[Any], ncol: int = 3, fontsize: float = 8) -> None:
    """One legend for the whole figure, below the panels (never over a curve): each label of ``axes`` once."""
    seen: dict[str, Any] = {}
    for handle, label in (pair for ax in axes for pair in zip(*ax.get_legend_handles_labels(), strict=True)):
        seen.setdefault(label, handle)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncol=ncol, fontsize=fontsize)


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
    phases_key: str = "activation_cosine",
) -> Figure:
    """Fig. 5 (``keys`` = activation and feature cosine) and Fig. 8 (Jaccard variants): progress measure M_i(t);
    the scale study draws the same figure per size (Fig. 10 and 14).

    One panel per key; x is checkpoint step + 1 on a log axis. ``feature_types`` [F] holds "token" or "concept"
    per feature (other labels are left out). For each type, ``n_lines`` features drawn reproducibly with ``seed``
    are thin lines and the median over *all* features of that type is a thick line. ``phases`` (detected on the
    concept-level median of ``phases_key``, notebook 04) are shaded and ``other_phases`` (from the drift curve) drawn
    as dashed lines on the ``phases_key`` panel only, the measure they were fitted on. The legend sits below the
    panels.
    """
    x = np.asarray(steps) + 1
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(1, len(keys), figsize=(5.6 * len(keys), 4.6), constrained_layout=True, squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        values = np.asarray(measures[key])
        if phases is not None and key == phases_key:
            shade_phases(ax, steps, phases, other=other_phases, other_label="boundaries from decoder drift (a)",
                         source="progress measure (b)")  # fmt: skip
        for kind, style in TYPE_STYLE.items():
            members = np.nonzero(np.asarray(feature_types) == kind)[0]
            if members.size == 0:
                continue
            shown = rng.choice(members, size=min(n_lines, members.size), replace=False)
            ax.plot(x, values[:, shown], color=style["color"], lw=0.6, alpha=0.35)
            ax.plot(x, np.nanmedian(values[:, members], axis=1), color=style["color"], lw=3,
                    label=f"{style['label']}: median of {members.size} (thin: {len(shown)} of them)")  # fmt: skip
        ax.axhline(0, color="black", lw=0.8, ls=":")
        note = "\nshaded: phases fitted on this panel's concept-level median"
        panel = PROGRESS_TITLES.get(key, key) + (note if phases is not None and key == phases_key else "")
        ax.set(xscale="log", xlabel="checkpoint step + 1", ylabel="progress measure $M_i(t)$", title=panel)
        ax.grid(alpha=0.3)
    figure_legend(fig, axes[0], ncol=3)
    if title:
        fig.suptitle(title)
    return fig


def umap_figure(
    embeddings: Sequence[np.ndarray],
    steps: Sequence[int],
    point_feature: np.ndarray,
    feature_types: Mapping[int, str],
    title: str = "",
    panel_titles: Sequence[str] | None = None,
) -> Figure:
    """Fig. 4: UMAP of the activation sets A_i^t of a few features, one panel per checkpoint (fitted separately);
    the scale study draws the same figure per size (Fig. 9 and 13).

    ``embeddings[j]`` [n, 2] are the points at checkpoint ``steps[j]`` (the formation stage turns each panel onto
    the next, :func:`saetrack.analysis.umap_panels.align_panels`, so the panels share an orientation; axes have
    equal scales so no panel is stretched); ``point_feature`` [n] says which feature each point belongs to (the
    same points in every panel); ``feature_types`` maps a feature to "token" (circles) or "concept" (diamonds).
    Each feature has its own colour; the legend sits below the panels. ``panel_titles`` (one per panel, e.g. from
    :func:`checkpoint_titles`: the step, its phase and why it is shown) replace the default "checkpoint step N".
    """
    features = list(dict.fromkeys(np.asarray(point_feature).tolist()))
    palette = colormaps["tab10" if len(features) <= 10 else "tab20"]
    n = len(embeddings)
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.9 * rows + 0.6), layout="constrained", squeeze=False)
    titles = list(panel_titles) if panel_titles is not None else [f"checkpoint step {step}" for step in steps]
    for ax, emb, panel_title in zip(axes.flat, embeddings, titles, strict=False):
        for j, feature in enumerate(features):
            mask = np.asarray(point_feature) == feature
            kind = feature_types.get(feature, "token")
            ax.scatter(emb[mask, 0], emb[mask, 1], s=22, color=palette(j % palette.N),
                       marker=TYPE_STYLE.get(kind, TYPE_STYLE["token"])["marker"], edgecolors="white", linewidths=0.4,
                       label=f"#{feature} ({kind})")  # fmt: skip
        ax.set(xticks=[], yticks=[], aspect="equal", adjustable="datalim")
        ax.set_title(panel_title, fontsize=10)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    figure_legend(fig, axes.flat[:1], ncol=min(len(features), 7))
    if title:
        fig.suptitle(title)
    return fig


# ----------------------------------------------------------------------------------------------
# Fig. 3 (feature regions of a toy SAE) and Fig. 2 (feature evolution patterns as a table)
# ----------------------------------------------------------------------------------------------


_REGION_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


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
    #: ``(checkpoint step, contexts)`` per checkpoint shown; in each context the activating token is marked ``«tok»``.
    columns: list[tuple[int, list[str]]]
    #: One line per column that lets a reader check the cell (label, dominant token k/top_k, top activation).
    notes: list[str] = field(default_factory=list)
    #: A second header line (e.g. the sub-pattern).
    subtitle: str = ""


def cell_summary(cell: Mapping[str, Any]) -> str:
    """One Fig. 2 cell's check line: label (Def. 4.1-4.2), dominant token with its count out of the top-k, top
    activation, e.g. ``token «the» 18/25 · max 3.21`` (``(n active)`` added when fewer than k are active)."""
    token = str(cell.get("dominant_text", "")).replace("\n", "⏎")
    count, top_k, n_active = int(cell["count"]), int(cell["top_k"]), int(cell["n_active"])
    active = f" ({n_active} active)" if n_active < top_k else ""
    share = f"«{token}» {count}/{top_k}{active}" if n_active else "no active datapoint"
    return f"{cell['label']} · {share} · max {float(cell['top_activation']):.2f}"


def pattern_examples_from_records(records: Sequence[Mapping[str, Any]]) -> list[PatternExample]:
    """Fig. 2 rows from the formation stage's ``examples.json`` records (older records without cells work too)."""
    out = []
    for r in records:
        notes = [cell_summary(c) for c in r.get("cells", [])]
        out.append(PatternExample(str(r.get("category", r["pattern"])), int(r["feature"]),
                                  [(int(s), list(c)) for s, c in r["columns"]], notes,
                                  str(r.get("sub_pattern", ""))))  # fmt: skip
    return out


def checkpoint_titles(entries: Sequence[Mapping[str, Any]], why: bool = True) -> list[str]:
    """Titles of chosen checkpoints (``{"step", "phase", "why"}`` records): ``step N · phase`` and the reason."""
    titles = []
    for e in entries:
        line = f"step {e['step']}" + (f" · {e['phase']}" if e.get("phase") else "")
        titles.append(f"{line}\n({e['why']})" if why and e.get("why") else line)
    return titles


def clip_context(text: str, width: int) -> str:
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


def _cell(ax: Any, example: PatternExample, c: int, shared: bool, max_contexts: int, width: int) -> None:
    """Draw one Fig. 2 cell: the check line (when the example has notes), then the clipped contexts."""
    step, contexts = example.columns[c]
    lines = [clip_context(text, width) for text in contexts[:max_contexts]]
    if not shared:
        lines = [f"[step {step}]", *lines]
    body = "\n".join(lines) if lines else "(no activating contexts)"
    style = {"ha": "left", "va": "top", "fontsize": 7, "family": "monospace", "clip_on": True}
    if c < len(example.notes):
        ax.text(0.01, 0.97, example.notes[c], transform=ax.transAxes, weight="bold", color="#1f3b73", **style)
        ax.annotate(body, (0.01, 0.97), xycoords="axes fraction", xytext=(0, -11), textcoords="offset points",
                    linespacing=1.35, **style)  # fmt: skip
    else:
        ax.text(0.01, 0.97, body, transform=ax.transAxes, linespacing=1.35, **style)


def pattern_table_figure(
    examples: Sequence[PatternExample],
    title: str = "",
    max_contexts: int = 6,
    width: int = 56,
    column_titles: Sequence[str] | None = None,
    caption: str = "",
) -> Figure:
    """Fig. 2 as a figure: one row per example (pattern, feature), one column per checkpoint ("step N").

    Each cell starts with the example's note for that column when it has one (label, dominant token k/top_k, top
    activation: :func:`cell_summary`), then lists up to ``max_contexts`` contexts, one line each, cut to ``width``
    characters around the activating token (marked ``«tok»``). Column headers come from ``column_titles`` or the
    first example's steps; when the examples' steps differ, each cell is also labelled with its own step.
    ``caption`` (e.g. the picking rules) is written under the table.
    """
    if not examples:
        raise ValueError("examples is empty: pattern_table_figure needs at least one PatternExample.")
    n_rows = len(examples)
    n_cols = max(len(example.columns) for example in examples)
    steps = [step for step, _ in examples[0].columns]
    shared = all([step for step, _ in example.columns] == steps for example in examples) and len(steps) == n_cols
    headers = list(column_titles) if column_titles is not None else [f"step {step}" for step in steps]
    cell_h = 0.28 + 0.17 * (max_contexts + any(example.notes for example in examples))
    head_h = 0.3 + 0.17 * max((h.count("\n") for h in headers), default=0)
    fig = plt.figure(figsize=(1.8 + 4.4 * n_cols, 0.6 + head_h + cell_h * n_rows), constrained_layout=True)
    grid = fig.add_gridspec(n_rows + 1, n_cols + 1, width_ratios=[1.8] + [4.4] * n_cols,
                            height_ratios=[head_h] + [cell_h] * n_rows)  # fmt: skip
    for c in range(n_cols):
        ax = fig.add_subplot(grid[0, c + 1])
        ax.axis("off")
        if shared or column_titles is not None:
            ax.text(0.5, 0.3, headers[c], ha="center", va="center", fontsize=11, weight="bold")
    for r, example in enumerate(examples):
        head = fig.add_subplot(grid[r + 1, 0])
        head.axis("off")
        label = f"{example.pattern}\nfeature {example.feature}"
        head.text(0.5, 0.5, label, ha="center", va="center", fontsize=10, weight="bold", wrap=True)
        if example.subtitle:
            head.text(0.5, 0.22, example.subtitle.replace(": ", ":\n"), ha="center", va="center", fontsize=8)
        for c in range(n_cols):
            ax = fig.add_subplot(grid[r + 1, c + 1])
            ax.set(xticks=[], yticks=[], facecolor="#f4f4f4" if r % 2 == 0 else "white")
            if c < len(example.columns):
                _cell(ax, example, c, shared, max_contexts, width)
    if caption:
        fig.supxlabel(caption, fontsize=8, ha="center")
    if title:
        fig.suptitle(title)
    return fig
