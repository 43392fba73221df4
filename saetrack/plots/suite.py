"""Fig. S1: the nano model suite's language-model loss over training, with its checkpoints."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "loss_curve_figure",
]


def loss_curve_figure(manifest: dict[str, Any]) -> Figure:
    """Train and held-out loss (nats) of the suite's checkpoints against step + 1 (log x), with the unigram entropy.

    The unigram entropy of the held-out stream is the loss of the best context-free model; a language model
    that learned anything about context lies far below it.
    """
    records = manifest["checkpoints"]
    x = np.array([r["step"] for r in records]) + 1
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(x, [r["train_loss"] for r in records], "o-", ms=3, label="train loss (recent steps)")
    ax.plot(x, [r["heldout_loss"] for r in records], "s-", ms=3, label="held-out loss")
    entropy = manifest["heldout_unigram_entropy"]
    ax.axhline(entropy, color="grey", ls="--", lw=1, label=f"held-out unigram entropy ({entropy:.2f})")
    ax.set_xscale("log")
    ax.set_xlabel("training step + 1")
    ax.set_ylabel("cross-entropy (nats / token)")
    suite = manifest["config"]["suite"]
    ax.set_title(f"nano suite: {suite['n_layers']} layers, d_model {suite['d_model']}")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    return fig
