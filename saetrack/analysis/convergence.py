"""Convergence speed of an SAE from its loss curve: the smoothed loss and the tokens needed to reach a target loss.

The convergence study (the paper's "about 1/20 of the tokens") is summarised over **non-trivial** probes only. The
rule, fixed before looking at any result: a probe is *trivial* when its smoothed loss is at or below the target within
its first smoothing window (``tokens_to_target <= window_tokens``). The smoothed loss is the measurement's finest
resolution; a probe that is on target there started from a link that already fits this checkpoint as well as the
from-scratch SAE does, so its ratio measures that fit (and the window), not how fast recurrent training converges.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "TRIVIAL_RULE",
    "is_trivial_probe",
    "smoothed",
    "smoothed_at",
    "summarise_convergence",
    "tokens_to_reach",
]


#: The trivial-probe rule in words (recorded with the results).
TRIVIAL_RULE = (
    "trivial: the probe's smoothed loss reaches the target within its first smoothing window "
    "(tokens to target <= window tokens), i.e. its starting link already fits the checkpoint as well as the "
    "from-scratch SAE; such ratios are left out of the non-trivial median"
)


def smoothed(tokens: np.ndarray, losses: np.ndarray, window_tokens: int) -> np.ndarray:
    """Trailing mean of ``losses`` over the points whose token count lies in ``(t - window_tokens, t]``.

    Smoothing in token space (not in points) treats curves logged at different densities alike.
    """
    tokens = np.asarray(tokens, dtype=np.float64)
    losses = np.asarray(losses, dtype=np.float64)
    if len(losses) == 0:
        return losses
    cumsum = np.concatenate([[0.0], np.cumsum(losses)])
    lo = np.searchsorted(tokens, tokens - window_tokens, side="right")
    hi = np.arange(1, len(losses) + 1)
    return (cumsum[hi] - cumsum[lo]) / (hi - lo)


def tokens_to_reach(tokens: np.ndarray, losses: np.ndarray, target: float, window_tokens: int) -> int | None:
    """First token count at which the smoothed loss is at or below ``target`` (``None`` if never)."""
    below = np.nonzero(smoothed(tokens, losses, window_tokens) <= target)[0]
    return int(np.asarray(tokens)[below[0]]) if len(below) else None


def smoothed_at(tokens: np.ndarray, losses: np.ndarray, at_tokens: int, window_tokens: int) -> float | None:
    """The smoothed loss (:func:`smoothed`) at the last logged point at or before ``at_tokens`` (``None``: none)."""
    tokens = np.asarray(tokens, dtype=np.float64)
    last = int(np.searchsorted(tokens, at_tokens, side="right")) - 1
    if last < 0:
        return None
    return float(smoothed(tokens, losses, window_tokens)[last])


def is_trivial_probe(tokens_to_target: int | None, window_tokens: int) -> bool:
    """Whether a probe is trivial by :data:`TRIVIAL_RULE`: on target within its first smoothing window."""
    return tokens_to_target is not None and tokens_to_target <= window_tokens


def _median(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if values else None


def summarise_convergence(items: Sequence[Mapping[str, Any]], window_tokens: int, link_tokens: int) -> dict[str, Any]:
    """The convergence study's summary over probes ``items`` (``step``, ``recurrent_tokens_to_target``,
    ``token_ratio``), each judged by :data:`TRIVIAL_RULE`.

    Returns the median token ratio (recurrent / from scratch) over every probe that reached the target and over the
    non-trivial ones, the steps of each kind, the probes that hit their budget without reaching the target (reported
    as not reached, never as a ratio) and those that needed more than the chain's ``link_tokens``.
    """
    reached = [i for i in items if i["recurrent_tokens_to_target"] is not None]
    trivial = [i for i in reached if is_trivial_probe(i["recurrent_tokens_to_target"], window_tokens)]
    nontrivial = [i for i in reached if not is_trivial_probe(i["recurrent_tokens_to_target"], window_tokens)]
    not_reached = [i for i in items if i["recurrent_tokens_to_target"] is None]
    beyond = [i for i in reached if i["recurrent_tokens_to_target"] > link_tokens]
    return {
        "median_token_ratio": _median([i["token_ratio"] for i in reached if i["token_ratio"] is not None]),
        "median_token_ratio_nontrivial": _median(
            [i["token_ratio"] for i in nontrivial if i["token_ratio"] is not None]
        ),
        "n_probes": len(items),
        "trivial_steps": [i["step"] for i in trivial],
        "nontrivial_steps": [i["step"] for i in nontrivial],
        "not_reached_steps": [i["step"] for i in not_reached],
        "n_not_reached": len(not_reached),
        "beyond_link_budget_steps": [i["step"] for i in beyond + not_reached],
        "n_beyond_link_budget": len(beyond) + len(not_reached),
        "trivial_rule": TRIVIAL_RULE,
    }
