"""Convergence speed of an SAE from its loss curve: the smoothed loss and the tokens needed to reach a target loss."""

from __future__ import annotations

import numpy as np

__all__ = [
    "smoothed",
    "tokens_to_reach",
]


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
