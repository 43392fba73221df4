"""Whether the chain is continuous at a checkpoint: two rules, each off by default (the paper's chain).

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
decoder cosine to the previous link) is the break, not a feature moving. On nano's real training run this reading
misfired at four early checkpoints whose links the continued chain carries, so it is opt-in (docs/live.md).

The outcome rule, ``chain.restart_l0_ratio`` (``saetrack watch`` sets 2.0): link k is trained from link k-1 as
usual; then its held-out L0 is compared with link k-1's on its own checkpoint (the number link k-1's record holds).
λ is held along the chain, so a link's sparsity moves only as the model's features do; when link k's L0 is more
than the factor above or below link k-1's (:func:`l0_breaks_chain`), the continued dictionary did not settle on
checkpoint k within the link budget, and link k is retrained as a first link (as above). The link records the
continued link's L0 and the previous link's either way. It reads the result, not a proxy for it: a continued link
that lands near its predecessor's sparsity is kept however poorly the predecessor fitted the new checkpoint before
training.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from saetrack import store
from saetrack.analysis.metrics import reconstruction_metrics
from saetrack.config.run import RunConfig
from saetrack.data.activations import ActivationSource
from saetrack.sae.model import SAETrackSAE

__all__ = [
    "ChainBreakError",
    "breaks_chain",
    "carried_explained_variance",
    "chain_restarts",
    "l0_breaks_chain",
    "require_continuous",
    "restart_note",
]


class ChainBreakError(ValueError):
    """An analysis that follows feature indices across links was asked to read across a restart of the chain."""


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


def l0_breaks_chain(run: RunConfig, continued: float, previous: float) -> bool:
    """Whether a continued link whose held-out L0 is ``continued`` restarts the chain after a previous link of L0
    ``previous`` (the outcome rule of the module doc): ``chain.restart_l0_ratio`` set and the ratio of the two
    outside ``[1 / r, r]``. A previous link with no firing feature (L0 0) never restarts: there is nothing to hold."""
    ratio = run.chain.restart_l0_ratio
    if ratio is None or previous <= 0:
        return False
    return not (previous / ratio <= continued <= previous * ratio)


def restart_note(link: Mapping[str, Any]) -> str:
    """The console's note on a link record restarted by either rule (``""`` otherwise): the reading that broke the
    chain and what was done about it."""
    if not link.get("restarted"):
        return ""
    done = "so this link was trained as a first link (drift across it is the break)"
    if link.get("restart_cause") == "l0":
        return (
            f"; chain restarted here: continued from the previous link it reached L0 {link['continued_l0']:.1f} "
            f"against the previous link's {link['previous_l0']:.1f}, {done}"
        )
    carried = link["carried_explained_variance"]
    return f"; chain restarted here: the previous link explains {carried:.3f} of this checkpoint's variance, {done}"


def chain_restarts(folders: Mapping[int, Path]) -> list[int]:
    """The steps (ascending) whose link restarted the chain, from the link manifests of ``folders`` (step ->
    link folder, :func:`~saetrack.stages.chain.load_chain`)."""
    restarts = []
    for step, folder in sorted(folders.items()):
        manifest = store.read_manifest(Path(folder)) or {}
        if manifest.get("link", {}).get("restarted"):
            restarts.append(int(step))
    return restarts


def require_continuous(folders: Mapping[int, Path], what: str) -> None:
    """Raise :class:`ChainBreakError` (one line, the way out named) when the chain of ``folders`` restarted
    anywhere: ``what`` (formation, drift) follows each feature's index from link to link, and an index names no
    feature across a restart, so its readings there would be the break, not features forming or moving."""
    restarts = chain_restarts(folders)
    if restarts:
        steps = ", ".join(str(s) for s in restarts)
        raise ChainBreakError(
            f"{what} reads each feature's index across links, but the chain restarted at step {steps} (a continuity "
            "rule: the link was trained as a first link, so its indices are new features). Train the continued "
            "chain for this analysis (--set chain.restart_l0_ratio=None --set chain.restart_below=None, in a new run "
            "directory), or read the links per stretch in the run's report."
        )
