"""Figures of the cross-snapshot crosscoder (notebook 06, issue 14), drawn from plain numpy arrays.

The measures are those of Ge et al. 2025, *Evolution of Concepts in Language Model Pre-Training* (arXiv
2509.17196), set beside the SAE-Track chain: quality per checkpoint (Fig. X01), decaying initialisation features and
the directional turning point (X04), the statistical-learning phase (X05), the phase timeline of every perspective
(X07) and the Hungarian-matched decoder cosine per chain link with its chance level (X08). The emergence figures
(X02, X03, X06, X09, X10) are in :mod:`saetrack.plots.crosscoder_emergence`. Training steps run along a log axis of
step + 1 (step 0 included), as in the other figures; figures indexed by checkpoint label their ticks with the steps.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = [
    "CROSSCODER_COLOUR",
    "STEP_AXIS",
    "checked_array",
    "crosscoder_quality_figure",
    "evolution_figure",
    "index_ticks",
    "matching_figure",
    "phase_timeline_figure",
    "statistical_learning_figure",
    "steps_array",
]

CROSSCODER_COLOUR, CHAIN_COLOUR = "tab:green", "tab:blue"
QUALITY_PANELS = (("explained_variance", "explained variance"), ("l0", "mean L0 (active features per token)"),
                  ("dead_fraction", "dead fraction of features"))  # fmt: skip
STEP_AXIS = "checkpoint step + 1"


def steps_array(steps: Sequence[int]) -> np.ndarray:
    """``steps`` as a non-empty 1-D array of training steps, or a one-sentence ValueError."""
    array = np.asarray(steps)
    if array.ndim != 1 or len(array) == 0:
        raise ValueError(f"steps must be a non-empty 1-D sequence of training steps, got shape {array.shape}.")
    return array


def checked_array(name: str, values: np.ndarray | Sequence[float], shape: tuple[int | None, ...]) -> np.ndarray:
    """``values`` as an array of ``shape`` (None: any length), or a one-sentence ValueError."""
    array = np.asarray(values)
    mismatch = array.ndim != len(shape) or any(
        w is not None and g != w for g, w in zip(array.shape, shape, strict=True)
    )
    if mismatch:
        wanted = "[" + ", ".join("any" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {wanted}, got {array.shape}.")
    return array


def index_ticks(ax: Axes, steps: np.ndarray, axis: str = "x", max_ticks: int = 12) -> None:
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
    steps = steps_array(steps)
    x = steps + 1.0
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
    for ax, (key, label) in zip(axes, QUALITY_PANELS, strict=True):
        for name, metrics, colour, marker in (("crosscoder", crosscoder, CROSSCODER_COLOUR, "s"),
                                              ("SAE-Track chain link", chain, CHAIN_COLOUR, "o")):  # fmt: skip
            if key not in metrics:
                raise ValueError(f"the {name} metrics have no {key!r}; expected {[k for k, _ in QUALITY_PANELS]}.")
            values = checked_array(f"{name} {key}", metrics[key], (len(steps),)).astype(float)
            ax.plot(x, values, marker=marker, ms=3.5, color=colour, label=name)
        ax.set(xscale="log", xlabel=STEP_AXIS, ylabel=label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, title="equal dictionary size", title_fontsize=8)
    fig.suptitle(title or "crosscoder vs chain: held-out quality per checkpoint")
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
    steps = steps_array(steps)
    x = steps + 1.0
    init_norms = checked_array("init_norms", init_norms, (None, len(steps))).astype(float)
    cosine = checked_array("cosine_to_final", cosine_to_final, (None, len(steps))).astype(float)
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
    steps = steps_array(steps)
    x = steps + 1.0
    unigram_kl = checked_array("unigram_kl", unigram_kl, (len(steps),)).astype(float)
    bigram_kl = checked_array("bigram_kl", bigram_kl, (len(steps),)).astype(float)
    loss = checked_array("loss", loss, (len(steps),)).astype(float)
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


def phase_timeline_figure(
    perspectives: Sequence[tuple[str, Sequence[int]]],
    steps: Sequence[int],
    agreement_text: str = "",
    title: str = "",
) -> Figure:
    """Fig. X07 (issue 14, item 5): phase boundaries of every perspective on one axis of training steps.

    One row per ``(name, boundary steps)``; each boundary is a diamond at step + 1 (log x). Thin vertical lines mark
    the checkpoints; ``agreement_text`` is printed under the axis.
    """
    steps = steps_array(steps)
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.6 * max(len(perspectives), 1)), constrained_layout=True)
    for x in steps + 1.0:
        ax.axvline(x, color="lightgray", lw=0.6, zorder=0)
    for row, (_, boundaries) in enumerate(perspectives):
        ax.plot(np.asarray(boundaries, dtype=float) + 1, [row] * len(boundaries), "D", ms=8, color="tab:red",
                label="phase boundary" if row == 0 else None)  # fmt: skip
    ax.set_yticks(range(len(perspectives)), [name for name, _ in perspectives])
    ax.set(xscale="log", xlim=(steps.min() + 1, (steps.max() + 1) * 1.1), ylim=(len(perspectives) - 0.5, -0.5),
           xlabel=f"{STEP_AXIS} (grey lines: checkpoints)")  # fmt: skip
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if agreement_text:
        fig.supxlabel(agreement_text, fontsize=8)
    ax.set_title(title or "phase boundaries from each perspective")
    return fig


def matching_figure(
    steps: Sequence[int], cosines: Sequence[np.ndarray], chance: Sequence[float] | None = None, title: str = ""
) -> Figure:
    """Fig. X08 (issue 14, item 5): Hungarian-matched decoder cosine, crosscoder vs chain link, per checkpoint.

    ``cosines[t]`` holds the cosines between the crosscoder's decoder vectors at checkpoint ``t`` and their
    Hungarian partners in the chain's SAE at that checkpoint (any length; empty: no match). Drawn: median with
    25-75% and 5-95% bands against checkpoint step + 1 (log x). ``chance[t]`` (NaN: none) is the median cosine of
    the same crosscoder vectors matched to as many random unit vectors, drawn as the chance level.
    """
    steps = steps_array(steps)
    if len(cosines) != len(steps):
        raise ValueError(f"cosines must hold one array per checkpoint ({len(steps)}), got {len(cosines)}.")
    arrays = [checked_array(f"cosines[{t}]", c, (None,)).astype(float) for t, c in enumerate(cosines)]
    q = np.array([_quantiles(c, None) if c.size else np.full(5, np.nan) for c in arrays])
    x = steps + 1.0
    fig, ax = plt.subplots(figsize=(7, 4.2), constrained_layout=True)
    ax.fill_between(x, q[:, 0], q[:, 4], color="tab:olive", alpha=0.18, lw=0, label="5-95%")
    ax.fill_between(x, q[:, 1], q[:, 3], color="tab:olive", alpha=0.4, lw=0, label="25-75%")
    ax.plot(x, q[:, 2], "o-", ms=3, lw=2, color="tab:olive", label="median")
    if chance is not None:
        level = checked_array("chance", chance, (len(steps),)).astype(float)
        ax.plot(x, level, "--", color="black", lw=1.2, label="chance: matched to random unit vectors (median)")
    ax.set(xscale="log", ylim=(-0.05, 1.05), xlabel=STEP_AXIS, ylabel="decoder cosine of matched features")
    ax.grid(alpha=0.3)
    # below the axes, clear of the chance line
    ax.legend(fontsize=8, title="Hungarian-matched, crosscoder vs chain link", title_fontsize=8, loc="upper center",
              bbox_to_anchor=(0.5, -0.16), ncol=2)  # fmt: skip
    ax.set_title(title or "crosscoder decoders vs the chain's SAE at the same checkpoint")
    return fig
