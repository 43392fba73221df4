"""Whether the chain is continuous at a checkpoint: the previous link, carried to it unchanged.

Recurrent initialisation (Sec. 3.2.2) assumes that checkpoint k's activations are close to checkpoint k-1's, so that
SAE[k-1] is a good start for SAE[k] and a short link budget suffices. The reading: SAE[k-1], unchanged, on checkpoint
k's held-out activations - its explained variance there, the *carried explained variance* (App. C.1's metric, on the
next checkpoint's data).

The rule, ``chain.restart_below`` (``None`` by default: the paper's chain, always continued), fixed before any run was
looked at through it: when the carried explained variance is at or below the threshold - ``saetrack watch`` uses 0,
the previous dictionary reconstructs checkpoint k no better than the activations' mean - the chain is broken at k.
Link k is then trained as a first link: freshly initialised with its own seed, at the first link's lr and warm-up,
for ``chain.first_tokens``, with a fresh Adam state; λ stays the chain's. The link records ``restarted`` and the
carried explained variance either way. Feature indices do not persist across a restart, so drift read across it (the
decoder cosine to the previous link) is the break, not a feature moving.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from saetrack.analysis.metrics import reconstruction_metrics
from saetrack.config.run import RunConfig
from saetrack.data.activations import ActivationSource
from saetrack.sae.model import SAETrackSAE

__all__ = ["breaks_chain", "carried_explained_variance", "restart_note"]


def carried_explained_variance(
    run: RunConfig, previous: SAETrackSAE, activations: ActivationSource, step: int
) -> float:
    """Explained variance of the previous link ``previous``, unchanged, on the held-out activations of ``step``
    (App. C.1's reconstruction metric; the module doc's reading)."""
    metrics = reconstruction_metrics(previous, activations.heldout(step), batch_size=run.chain.batch_size)
    return float(metrics["explained_variance"])


def breaks_chain(run: RunConfig, carried: float | None) -> bool:
    """Whether a link whose carried explained variance is ``carried`` restarts the chain (the module doc's rule):
    ``chain.restart_below`` set and ``carried`` at or below it. ``None`` (a first link, or the rule off): never."""
    threshold = run.chain.restart_below
    return threshold is not None and carried is not None and carried <= threshold


def restart_note(link: Mapping[str, Any]) -> str:
    """The console's note on a link record restarted by the rule (``""`` otherwise): the carried explained variance
    that broke the chain and what was done about it."""
    if not link.get("restarted"):
        return ""
    return (
        f"; chain restarted here: the previous link explains {link['carried_explained_variance']:.3f} of this "
        "checkpoint's variance, so this link was trained as a first link (drift across it is the break)"
    )
