"""A link that died or saturated is an error that names the fix, never a silent curve.

The rule, fixed before any run was looked at through it, on a link's held-out quality (App. C.1's metrics):

* **dead**: fewer than one feature fires per token (L0 < 1), or most of the dictionary never fires (dead share
  >= 0.5) while the reconstruction is no better than the activations' mean (explained variance <= 0). The penalty
  is too strong for this model: nothing the later analyses read is a feature.
* **saturated**: more features fire per token than the activation has dimensions (L0 > d_in): the code is not
  sparse, so "a feature" means nothing either. The penalty is too weak.

Either raises :class:`LinkHealthError` before the link is saved, so the chain stops at the first bad link with every
earlier link kept, and the message says which setting to change.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

from saetrack.config.run import RunConfig
from saetrack.sae.calibration import default_target_l0
from saetrack.stages.chain.links import ChainTrainingError

__all__ = ["DEAD_SHARE", "LinkHealthError", "check_link_health", "link_health"]

#: A link whose dead share reaches this while it explains no variance is dead.
DEAD_SHARE = 0.5


class LinkHealthError(ChainTrainingError):
    """A link died or saturated (:func:`link_health`); the message names the setting to change."""


def link_health(metrics: Mapping[str, float], d_in: int) -> str | None:
    """``"dead"``, ``"saturated"`` or ``None`` (healthy) for a link's held-out ``metrics`` (module doc's rule)."""
    l0, dead, ev = metrics["l0"], metrics["dead_fraction"], metrics["explained_variance"]
    if l0 < 1 or (dead >= DEAD_SHARE and ev <= 0):
        return "dead"
    if l0 > d_in:
        return "saturated"
    return None


def _fix(run: RunConfig, verdict: str, d_in: int) -> str:
    chain = run.chain
    if chain.target_l0 is None:
        way = "lower" if verdict == "dead" else "raise"
        target = f"{default_target_l0(d_in):g}"
        return (f"calibrate the penalty to a sparsity instead of guessing it (--set chain.target_l0={target}), or "
                f"{way} chain.l1_coefficient (now {chain.l1_coefficient:g}).")  # fmt: skip
    way = "raise" if verdict == "dead" else "lower"
    return (
        f"the penalty calibrated to L0 {chain.target_l0:g} on the first checkpoint does not hold here: {way} "
        "chain.target_l0, or calibrate on more tokens (chain.calibration_tokens)."
    )


def check_link_health(run: RunConfig, metrics: Mapping[str, float], d_in: int, desc: str) -> None:
    """Raise :class:`LinkHealthError` naming ``desc`` (the link), its numbers and the fix when the link is dead or
    saturated (:func:`link_health`), or only warn with ``chain.link_check = "warn"``; return quietly when healthy."""
    verdict = link_health(metrics, d_in)
    if verdict is None:
        return
    message = (
        f"{desc} is {verdict}: explained variance {metrics['explained_variance']:.3f}, L0 {metrics['l0']:.2f}, "
        f"dead {metrics['dead_fraction']:.0%} of features (d_in {d_in}). Fix: {_fix(run, verdict, d_in)}"
    )
    if run.chain.link_check == "warn":
        warnings.warn(f"{message} (chain.link_check = 'warn': the chain goes on)", stacklevel=2)
        return
    raise LinkHealthError(f"{message} Every earlier link is kept on disk.")
