"""The checkpoint-density figure (notebook 04): how the chain fares over every 1st, 2nd, 4th, 8th checkpoint.

Four panels against the checkpoint step + 1 (log x, as the drift figures): (a) the persistence share of each pair of
adjacent links (at the later link's step) per density, with the null (the later link's features permuted) dotted;
(b) agreement with the dense chain at shared checkpoints (share >= the threshold solid, median cosine dashed);
(c) the tokens each link needed to converge, against the link budget; (d) each density's median decoder cosine to its
own final link, with its three-phase boundaries (dashed: Emergent, dotted: Convergent) marked on (a) and (d).
Saved as ``figures/<preset>/fig_density.png`` and ``.pdf`` (:func:`save_density_figure`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from saetrack import paths, store

__all__ = ["DENSITY_FIGURE", "density_colour", "density_figure", "save_density_figure"]


#: File stem of the figure under ``figures/<preset>/``.
DENSITY_FIGURE = "fig_density"


def density_colour(position: int) -> Any:
    """The colour of the ``position``-th chain of the study (0: the dense chain)."""
    return plt.get_cmap("tab10")(position % 10)


def _x(steps: list[int]) -> np.ndarray:
    """Step + 1 (the figures' log x)."""
    return np.asarray(steps, dtype=float) + 1


def _ordinal(n: int) -> str:
    """2nd, 3rd, 4th, 11th, 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _values(items: list[Any]) -> np.ndarray:
    """Floats with None as NaN (a gap in the line)."""
    return np.asarray([np.nan if v is None else v for v in items], dtype=float)


def _mark_phases(ax: Any, chain: Mapping[str, Any], axis: str, colour: Any) -> None:
    """The chain's three-segment boundaries on ``axis`` as vertical lines (dashed Emergent, dotted Convergent)."""
    record = chain["phases"][axis]
    for key, style in (("emergent_step", "--"), ("convergent_step", ":")):
        if record.get(key) is not None:
            ax.axvline(record[key] + 1, color=colour, ls=style, lw=1, alpha=0.8)


def _draw_chain(axes: np.ndarray, chain: Mapping[str, Any], position: int, link_tokens: int, axis: str) -> None:
    """One chain's lines on the four panels."""
    colour, stride = density_colour(position), chain["stride"]
    label = "every checkpoint (the run's chain)" if stride == 1 else f"every {_ordinal(stride)} checkpoint"
    pairs, links = chain["pairs"], chain["links"]
    to = _x([p["to_step"] for p in pairs])
    axes[0, 0].plot(to, _values([p["persistence"] for p in pairs]), "o-", color=colour, ms=3, label=label)
    axes[0, 0].plot(to, _values([p["null"] for p in pairs]), ":", color=colour, lw=1)
    if stride != 1:
        x = _x([x["step"] for x in links[1:]])
        axes[0, 1].plot(x, _values([x.get("agreement") for x in links[1:]]), "o-", color=colour, ms=3, label=label)
        axes[0, 1].plot(x, _values([x.get("agreement_median_cosine") for x in links[1:]]), "--", color=colour, lw=1)
    axes[1, 0].plot(_x([x["step"] for x in links[1:]]), _values([x["tokens_to_converge"] for x in links[1:]]), "o",
                    color=colour, ms=4, alpha=0.8, label=label)  # fmt: skip
    axes[1, 1].plot(_x(chain["steps"]), _values(chain["median_cosine_to_final"]), "o-", color=colour, ms=3, label=label)
    for ax in (axes[0, 0], axes[1, 1]):
        _mark_phases(ax, chain, axis, colour)
    axes[1, 0].axhline(link_tokens, color="black", lw=0.8, ls="-.")


def density_figure(study: Mapping[str, Any], title: str = "") -> Figure:
    """The density figure (module doc) of a finished study (:func:`saetrack.stages.drift.density.load_density`)."""
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    axis = study.get("figure_axis", "index")
    for position, chain in enumerate(study["chains"]):
        _draw_chain(axes, chain, position, study["config"]["link_tokens"], axis)
    threshold = "cosine >= 0.7"
    axes[0, 0].set(ylabel=f"persistence: share {threshold}", ylim=(-0.02, 1.02),
                   title="(a) persistence, adjacent links (dotted: null)")  # fmt: skip
    axes[0, 1].set(ylabel=f"agreement: share {threshold}", ylim=(-0.02, 1.02),
                   title="(b) agreement with the run's chain (dashed: median cosine)")  # fmt: skip
    axes[1, 0].set(ylabel="tokens to converge", title="(c) tokens to converge (dash-dot: the link budget)")
    axes[1, 0].set_ylim(bottom=0)
    axes[1, 1].set(ylabel="median cosine to own final link", ylim=(-0.02, 1.02),
                   title="(d) drift to own final (dashed Emergent, dotted Convergent)")  # fmt: skip
    for ax in axes.flat:
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("checkpoint step + 1")
    axes[0, 0].legend(fontsize=8, loc="lower right")
    recommendation = study.get("recommendation", {})
    suptitle = title or "checkpoint density"
    if recommendation:
        suptitle += f" (recommended: every {recommendation['stride']} checkpoint(s))"
    fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def save_density_figure(fig: Figure, preset: str, dpi: int = 150) -> list[Path]:
    """Write the density figure as PNG and PDF to ``figures/<preset>/fig_density.*`` atomically; return the paths."""
    written = []
    for suffix in (".png", ".pdf"):
        target = paths.figures_dir(preset) / f"{DENSITY_FIGURE}{suffix}"
        with store.atomic_path(target) as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=dpi, bbox_inches="tight")
        written.append(target)
    return written
