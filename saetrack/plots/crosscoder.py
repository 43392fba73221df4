"""Figures of the cross-snapshot crosscoder (notebook 06, issue 14), drawn from plain numpy arrays.

The measures are those of Ge et al. 2025, *Evolution of Concepts in Language Model Pre-Training* (arXiv
2509.17196), set beside the SAE-Track chain: quality per checkpoint (Fig. X01), the decoder-norm heatmap (X02), the
emergence histogram (X03), decaying initialisation features and the directional turning point (X04), the
statistical-learning phase (X05), crosscoder emergence against chain formation (X06), the phase timeline of every
perspective (X07) and the Hungarian-matched decoder cosine per chain link (X08). Training steps run along a log
axis of step + 1 (step 0 included), as in the other figures; figures indexed by checkpoint label their ticks with
the steps.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

__all__ = [
    "HEATMAP_MAX_ROWS",
    "SCATTER_JITTER",
    "crosscoder_quality_figure",
    "decoder_norm_heatmap_figure",
    "emergence_histogram_figure",
    "emergence_vs_formation_figure",
    "evolution_figure",
    "matching_figure",
    "phase_timeline_figure",
    "statistical_learning_figure",
]

#: Fig. X02 draws at most this many feature rows (evenly spaced over the sorted order when there are more).
HEATMAP_MAX_ROWS = 2000
#: Fig. X06: half-width of the uniform jitter added to both checkpoint indices (seeded, so the figure is stable).
SCATTER_JITTER = 0.2
CROSSCODER_COLOUR, CHAIN_COLOUR = "tab:green", "tab:blue"
QUALITY_PANELS = (("explained_variance", "explained variance"), ("l0", "mean L0 (active features per token)"),
                  ("dead_fraction", "dead fraction of features"))  # fmt: skip
STEP_AXIS = "checkpoint step + 1"


def _steps(steps: Sequence[int]) -> np.ndarray:
    array = np.asarray(steps)
    if array.ndim != 1 or len(array) == 0:
        raise ValueError(f"steps must be a non-empty 1-D sequence of training steps, got shape {array.shape}.")
    return array


def _array(name: str, values: np.ndarray | Sequence[float], shape: tuple[int | None, ...]) -> np.ndarray:
    """``values`` as an array of ``shape`` (None: any length), or a one-sentence ValueError."""
    array = np.asarray(values)
    mismatch = array.ndim != len(shape) or any(
        w is not None and g != w for g, w in zip(array.shape, shape, strict=True)
    )
    if mismatch:
        wanted = "[" + ", ".join("any" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {wanted}, got {array.shape}.")
    return array


def _index_ticks(ax: Axes, steps: np.ndarray, axis: str = "x", max_ticks: int = 12) -> None:
    """Ticks at checkpoint indices labelled with their training steps (every k-th when there are many)."""
    at = np.arange(0, len(steps), int(np.ceil(len(steps) / max_ticks)))
    labels = [str(int(s)) for s in steps[at]]
    if axis == "x":
        ax.set_xticks(at, labels, rotation=45 if len(at) > 6 else 0)
    else:
        ax.set_yticks(at, labels)


def _quantiles(values: np.ndarray, axis: int | None = 0) -> np.ndarray:
    """5/25/50/75/95% quantiles over ``axis`` with NaNs left out (all-NaN columns give NaN, silently)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanquantile(values, [0.05, 0.25, 0.5, 0.75, 0.95], axis=axis)


def _bands(ax: Axes, x: np.ndarray, values: np.ndarray, colour: str, what: str, wide: bool = True) -> None:
    """Median line and 25-75% (and 5-95%) bands of ``values`` [n, T] over its rows, NaNs left out."""
    q = _quantiles(values) if len(values) else np.full((5, len(x)), np.nan)
    if wide:
        ax.fill_between(x, q[0], q[4], color=colour, alpha=0.15, lw=0, label=f"{what}: 5-95%")
    ax.fill_between(x, q[1], q[3], color=colour, alpha=0.35, lw=0, label=f"{what}: 25-75%")
    ax.plot(x, q[2], color=colour, lw=2.2, marker="o", ms=3, label=f"{what}: median")


def crosscoder_quality_figure(
    steps: Sequence[int],
    crosscoder: Mapping[str, np.ndarray],
    chain: Mapping[str, np.ndarray],
    title: str = "",
) -> Figure:
    """Fig. X01 (issue 14, item 2): crosscoder quality per checkpoint beside the chain's links at equal size.

    Three panels against checkpoint step + 1 (log x): explained variance, L0 and dead fraction, the crosscoder's
    reconstruction of each snapshot (Ge et al.'s reconstruction-quality table, per checkpoint) as one line and the
    SAE-Track link at that checkpoint as the other. ``crosscoder`` and ``chain`` map ``explained_variance``,
    ``l0`` and ``dead_fraction`` to ``[T]`` arrays (NaN where a value is missing).
    """
    steps = _steps(steps)
    x = steps + 1.0
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
    for ax, (key, label) in zip(axes, QUALITY_PANELS, strict=True):
        for name, metrics, colour, marker in (("crosscoder", crosscoder, CROSSCODER_COLOUR, "s"),
                                              ("SAE-Track chain link", chain, CHAIN_COLOUR, "o")):  # fmt: skip
            if key not in metrics:
                raise ValueError(f"the {name} metrics have no {key!r}; expected {[k for k, _ in QUALITY_PANELS]}.")
            values = _array(f"{name} {key}", metrics[key], (len(steps),)).astype(float)
            ax.plot(x, values, marker=marker, ms=3.5, color=colour, label=name)
        ax.set(xscale="log", xlabel=STEP_AXIS, ylabel=label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, title="equal dictionary size", title_fontsize=8)
    fig.suptitle(title or "crosscoder vs chain: held-out quality per checkpoint")
    return fig


def _heatmap_rows(norms: np.ndarray, emergence: np.ndarray, max_rows: int) -> tuple[np.ndarray, int]:
    """Rows to draw (emerging features by emergence, then peak checkpoint, evenly subsampled) and the stride."""
    alive = np.flatnonzero(emergence >= 0)
    order = alive[np.lexsort((np.argmax(norms[alive], axis=1), emergence[alive]))]
    stride = max(1, int(np.ceil(len(order) / max_rows)))
    return order[::stride], stride


def decoder_norm_heatmap_figure(
    steps: Sequence[int],
    norms: np.ndarray,
    emergence: np.ndarray,
    fraction: float,
    title: str = "",
    *,
    max_rows: int = HEATMAP_MAX_ROWS,
) -> Figure:
    """Fig. X02 (issue 14, item 3): Ge et al.'s decoder-norm matrix ``||W_dec,i^θ||`` as a heatmap.

    ``norms`` is ``[F, T]`` (features x checkpoints), ``emergence`` ``[F]`` the checkpoint index where a feature's
    norm first passes ``fraction`` of its maximum (-1: never, i.e. a dead feature). Rows are sorted by emergence
    (earliest first), ties by peak checkpoint, each normalised to its maximum; rows with emergence -1 are dropped
    and counted in the subtitle. With more than ``max_rows`` rows, every k-th row of the sorted order is drawn
    (stated in the subtitle).
    """
    steps = _steps(steps)
    norms = _array("norms", norms, (None, len(steps))).astype(float)
    emergence = _array("emergence", emergence, (len(norms),)).astype(int)
    rows, stride = _heatmap_rows(norms, emergence, max_rows)
    drawn = norms[rows]
    with np.errstate(all="ignore"):
        drawn = drawn / drawn.max(axis=1, keepdims=True) if len(drawn) else np.zeros((0, len(steps)))
    fig, ax = plt.subplots(figsize=(9, 6), constrained_layout=True)
    image = ax.imshow(drawn, aspect="auto", interpolation="nearest", cmap="magma", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="decoder norm / the feature's maximum")
    _index_ticks(ax, steps)
    ax.set(xlabel="checkpoint (training step)", ylabel="features, sorted by emergence (earliest at the top)")
    n_alive, n_dead = int((emergence >= 0).sum()), int((emergence < 0).sum())
    sampled = f"1 in {stride} of {n_alive} features drawn" if stride > 1 else f"all {n_alive} features drawn"
    subtitle = (f"emergence: first checkpoint with norm >= {fraction:g} x the feature's maximum; {sampled}; "
                f"{n_dead} never reaching it (dead) dropped")  # fmt: skip
    fig.suptitle((title or "crosscoder decoder norms per checkpoint") + "\n" + subtitle, fontsize=10)
    return fig


def emergence_histogram_figure(
    steps: Sequence[int],
    emergence: np.ndarray,
    init_decaying: np.ndarray,
    title: str = "",
) -> Figure:
    """Fig. X03 (issue 14, item 3): how many features emerge at each checkpoint (Ge et al.'s emergence step).

    Bars at checkpoint indices (labelled with their steps, which are log-spaced) count the features whose
    ``emergence`` index is that checkpoint; hatched bars on top count those flagged ``init_decaying`` (present at
    initialisation and later decaying, Ge et al.'s "initialization features"). Features with emergence -1 (dead)
    are counted in the legend.
    """
    steps = _steps(steps)
    emergence = _array("emergence", emergence, (None,)).astype(int)
    init_decaying = _array("init_decaying", init_decaying, (len(emergence),)).astype(bool)
    if emergence.size and emergence.max() >= len(steps):
        raise ValueError(f"emergence indices must be below the number of checkpoints ({len(steps)}).")
    alive = emergence >= 0
    counts = np.bincount(emergence[alive], minlength=len(steps))
    decaying = np.bincount(emergence[alive & init_decaying], minlength=len(steps))
    fig, ax = plt.subplots(figsize=(9, 4), constrained_layout=True)
    index = np.arange(len(steps))
    ax.bar(index, counts, color=CROSSCODER_COLOUR, label=f"features emerging ({int(alive.sum())}; "
           f"{int((~alive).sum())} dead, never emerging)")  # fmt: skip
    ax.bar(index, decaying, facecolor="none", edgecolor="black", hatch="///",
           label=f"of which present at initialisation and later decaying ({int(decaying.sum())})")  # fmt: skip
    _index_ticks(ax, steps)
    ax.set(
        xlabel="emergence checkpoint (training step)",
        ylabel="features",
        xlim=(-0.6, len(steps) - 0.4),
        ylim=(0, 1.25 * max(int(counts.max()), 1)),
    )  # fmt: skip  (headroom for the legend)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    ax.set_title(title or "crosscoder features by emergence checkpoint")
    return fig


def evolution_figure(
    steps: Sequence[int],
    init_norms: np.ndarray,
    cosine_to_final: np.ndarray,
    title: str = "",
    *,
    n_lines: int = 5,
    turning_step: int | None = None,
) -> Figure:
    """Fig. X04 (issue 14, item 3): decaying initialisation features and Ge et al.'s directional turning point.

    Left: decoder norms of the ``init_norms`` ``[n, T]`` features (present at initialisation, later decaying), each
    normalised to its maximum: median, 25-75% band and ``n_lines`` thin individual lines (evenly picked). Right:
    each live feature's decoder-direction cosine to its final direction, ``cosine_to_final`` ``[F_live, T]``:
    median with 25-75% and 5-95% bands; ``turning_step`` (the step whose change from the checkpoint before is the
    sharpest turn) is marked with a dashed line on both panels.
    """
    steps = _steps(steps)
    x = steps + 1.0
    init_norms = _array("init_norms", init_norms, (None, len(steps))).astype(float)
    cosine = _array("cosine_to_final", cosine_to_final, (None, len(steps))).astype(float)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), constrained_layout=True)
    with np.errstate(all="ignore"):
        relative = init_norms / init_norms.max(axis=1, keepdims=True)
    _bands(left, x, relative, "tab:orange", "initialisation features", wide=False)
    picked = np.unique(np.linspace(0, len(relative) - 1, min(n_lines, len(relative))).astype(int))
    for j, row in enumerate(picked):
        left.plot(x, relative[row], color="tab:brown", lw=0.7, alpha=0.7, label="single features" if j == 0 else None)
    if not len(relative):
        left.text(0.5, 0.5, "no initialisation feature decays", ha="center", va="center", transform=left.transAxes)
    left.set(xscale="log", xlabel=STEP_AXIS, ylabel="decoder norm / the feature's maximum", ylim=(-0.03, 1.05),
             title=f"initialisation features that decay (n = {len(relative)})")  # fmt: skip
    _bands(right, x, cosine, "tab:purple", "live features")
    right.set(xscale="log", xlabel=STEP_AXIS, ylabel="decoder cosine to the final checkpoint's direction",
              ylim=(-1.05, 1.05), title=f"directional turning point (n = {len(cosine)} live features)")  # fmt: skip
    for ax in (left, right):
        if turning_step is not None:
            ax.axvline(turning_step + 1.0, color="black", ls="--", lw=1, label=f"turning point: step {turning_step}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(title or "feature evolution in the crosscoder")
    return fig


def statistical_learning_figure(
    steps: Sequence[int],
    unigram_kl: np.ndarray,
    bigram_kl: np.ndarray,
    loss: np.ndarray,
    unigram_entropy: float,
    bigram_entropy: float,
    title: str = "",
) -> Figure:
    """Fig. X05 (issue 14, item 4): Ge et al.'s statistical-learning phase, per checkpoint.

    Left: ``KL(unigram || mean predicted next-token distribution)`` and the mean over contexts of
    ``KL(bigram(· | previous token) || prediction)`` (nats; log y when every value is positive). Right: held-out
    loss against the corpus unigram entropy and bigram conditional entropy (horizontal lines), the losses a model
    that has learnt only those statistics would reach.
    """
    steps = _steps(steps)
    x = steps + 1.0
    unigram_kl = _array("unigram_kl", unigram_kl, (len(steps),)).astype(float)
    bigram_kl = _array("bigram_kl", bigram_kl, (len(steps),)).astype(float)
    loss = _array("loss", loss, (len(steps),)).astype(float)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), constrained_layout=True)
    left.plot(x, unigram_kl, "o-", ms=3, color="tab:red", label="KL(unigram ‖ mean prediction)")
    left.plot(x, bigram_kl, "s-", ms=3, color="tab:blue", label="mean KL(bigram ‖ prediction)")
    finite = np.concatenate([unigram_kl, bigram_kl])
    finite = finite[np.isfinite(finite)]
    scale = "log" if finite.size and (finite > 0).all() else "linear"
    left.set(xscale="log", yscale=scale, xlabel=STEP_AXIS, ylabel="KL divergence (nats)",
             title="model predictions vs corpus statistics")  # fmt: skip
    right.plot(x, loss, "o-", ms=3, color="black", label="held-out loss")
    right.axhline(unigram_entropy, color="tab:red", ls="--", label=f"unigram entropy ({unigram_entropy:.2f})")
    right.axhline(bigram_entropy, color="tab:blue", ls="--", label=f"bigram conditional entropy ({bigram_entropy:.2f})")
    right.set(xscale="log", xlabel=STEP_AXIS, ylabel="loss (nats per token)", title="loss against n-gram entropies")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or "statistical learning: unigram and bigram statistics per checkpoint")
    return fig


def emergence_vs_formation_figure(
    steps: Sequence[int],
    formation_index: np.ndarray,
    emergence_index: np.ndarray,
    rho: float,
    p_value: float,
    title: str = "",
) -> Figure:
    """Fig. X06 (issue 14, item 5): crosscoder emergence against chain formation for matched features.

    One point per matched feature: x its chain link's formation checkpoint (SAE-Track, Def. 4.3), y the matched
    crosscoder feature's emergence checkpoint (Ge et al.), both indices labelled with steps and jittered by
    ``SCATTER_JITTER`` (seeded) so equal pairs stay visible; the diagonal marks agreement. The legend gives
    Spearman's ``rho``, its ``p_value`` and n.
    """
    steps = _steps(steps)
    formation = _array("formation_index", formation_index, (None,)).astype(float)
    emergence = _array("emergence_index", emergence_index, (len(formation),)).astype(float)
    rng = np.random.default_rng(0)
    jitter = rng.uniform(-SCATTER_JITTER, SCATTER_JITTER, size=(2, len(formation)))
    fig, ax = plt.subplots(figsize=(5.8, 5.4), constrained_layout=True)
    ax.scatter(formation + jitter[0], emergence + jitter[1], s=10, alpha=0.5, color=CROSSCODER_COLOUR,
               label=f"matched features: Spearman ρ = {rho:.2f} (p = {p_value:.2g}), n = {len(formation)}")  # fmt: skip
    ax.plot([0, len(steps) - 1], [0, len(steps) - 1], "--", color="black", lw=1, label="same checkpoint")
    _index_ticks(ax, steps, "x")
    _index_ticks(ax, steps, "y")
    lim = (-0.6, len(steps) - 0.4)
    ax.set(xlim=lim, ylim=lim, xlabel=f"chain formation checkpoint (step; jitter ±{SCATTER_JITTER})",
           ylabel=f"crosscoder emergence checkpoint (step; jitter ±{SCATTER_JITTER})")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title or "when do features appear? crosscoder vs SAE-Track chain", fontsize=10)
    return fig


def phase_timeline_figure(
    perspectives: Sequence[tuple[str, Sequence[int], Sequence[tuple[int, int] | None]]],
    steps: Sequence[int],
    agreement_text: str = "",
    title: str = "",
) -> Figure:
    """Fig. X07 (issue 14, item 5): phase boundaries of every perspective on one axis of training steps.

    One row per ``(name, boundary steps, intervals)``; each boundary is a diamond at step + 1 (log x), and an
    interval ``(lo, hi)`` (steps; None: none) a capped bar around it. Thin vertical lines mark the checkpoints;
    ``agreement_text`` is printed under the axis.
    """
    steps = _steps(steps)
    for name, boundaries, intervals in perspectives:
        if len(intervals) not in (0, len(boundaries)):
            raise ValueError(f"perspective {name!r} has {len(boundaries)} boundaries but {len(intervals)} intervals.")
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.6 * max(len(perspectives), 1)), constrained_layout=True)
    for x in steps + 1.0:
        ax.axvline(x, color="lightgray", lw=0.6, zorder=0)
    for row, (_, boundaries, intervals) in enumerate(perspectives):
        for interval in intervals:
            if interval is not None:
                ax.plot([interval[0] + 1, interval[1] + 1], [row, row], color="black", lw=1.3, marker="|", ms=10)
        ax.plot(np.asarray(boundaries, dtype=float) + 1, [row] * len(boundaries), "D", ms=8, color="tab:red")
    ax.set_yticks(range(len(perspectives)), [name for name, _, _ in perspectives])
    ax.set(xscale="log", xlim=(steps.min() + 1, (steps.max() + 1) * 1.1), ylim=(len(perspectives) - 0.5, -0.5),
           xlabel=f"{STEP_AXIS} (grey lines: checkpoints)")  # fmt: skip
    handles = [Line2D([], [], marker="D", ls="", color="tab:red", label="phase boundary"),
               Line2D([], [], marker="|", color="black", ms=10, label="interval (lo, hi)")]  # fmt: skip
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if agreement_text:
        fig.supxlabel(agreement_text, fontsize=8)
    ax.set_title(title or "phase boundaries from each perspective")
    return fig


def matching_figure(steps: Sequence[int], cosines: Sequence[np.ndarray], title: str = "") -> Figure:
    """Fig. X08 (issue 14, item 5): Hungarian-matched decoder cosine, crosscoder vs chain link, per checkpoint.

    ``cosines[t]`` holds the cosines between the crosscoder's decoder vectors at checkpoint ``t`` and their
    Hungarian partners in the chain's SAE at that checkpoint (any length; empty: no match). Drawn: median with
    25-75% and 5-95% bands against checkpoint step + 1 (log x).
    """
    steps = _steps(steps)
    if len(cosines) != len(steps):
        raise ValueError(f"cosines must hold one array per checkpoint ({len(steps)}), got {len(cosines)}.")
    arrays = [_array(f"cosines[{t}]", c, (None,)).astype(float) for t, c in enumerate(cosines)]
    q = np.array([_quantiles(c, None) if c.size else np.full(5, np.nan) for c in arrays])
    x = steps + 1.0
    fig, ax = plt.subplots(figsize=(7, 4.2), constrained_layout=True)
    ax.fill_between(x, q[:, 0], q[:, 4], color="tab:olive", alpha=0.18, lw=0, label="5-95%")
    ax.fill_between(x, q[:, 1], q[:, 3], color="tab:olive", alpha=0.4, lw=0, label="25-75%")
    ax.plot(x, q[:, 2], "o-", ms=3, lw=2, color="tab:olive", label="median")
    ax.set(xscale="log", ylim=(-0.05, 1.05), xlabel=STEP_AXIS, ylabel="decoder cosine of matched features")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="Hungarian-matched, crosscoder vs chain link", title_fontsize=8)
    ax.set_title(title or "crosscoder decoders vs the chain's SAE at the same checkpoint")
    return fig
