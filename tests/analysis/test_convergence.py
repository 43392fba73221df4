"""Convergence speed from a loss curve: the trailing token-window mean and the tokens needed to reach a target."""

from __future__ import annotations

import numpy as np

from saetrack.analysis.convergence import smoothed, tokens_to_reach


def test_smoothing_and_tokens_to_reach_on_known_curves() -> None:
    tokens = np.arange(1, 11) * 100
    losses = np.array([10, 8, 6, 4, 2, 2, 2, 2, 2, 2], dtype=float)
    np.testing.assert_allclose(smoothed(tokens, losses, 100), losses)  # window of one point
    np.testing.assert_allclose(smoothed(tokens, losses, 200)[:3], [10, 9, 7])
    assert tokens_to_reach(tokens, losses, 4.0, 100) == 400
    assert tokens_to_reach(tokens, losses, 3.0, 200) == 500  # mean(4, 2) = 3 at the 5th point
    assert tokens_to_reach(tokens, losses, 1.0, 100) is None


def test_smoothing_window_is_in_tokens_not_points() -> None:
    tokens = np.array([10, 20, 30, 100, 1000])  # uneven logging
    losses = np.array([9.0, 6.0, 3.0, 2.0, 1.0])
    # window 25 tokens: (t - 25, t] holds 1, 2, 3, 1 and 1 points
    np.testing.assert_allclose(smoothed(tokens, losses, 25), [9.0, 7.5, 6.0, 2.0, 1.0])
    # a window wider than the whole curve is the running mean
    np.testing.assert_allclose(smoothed(tokens, losses, 10_000), np.cumsum(losses) / np.arange(1, 6))
    assert smoothed(np.array([]), np.array([]), 100).shape == (0,)


def test_tokens_to_reach_is_the_first_crossing_as_an_int() -> None:
    tokens = np.array([100, 200, 300, 400])
    losses = np.array([5.0, 1.0, 6.0, 0.5])  # reaches 1.0 at 200, leaves it, reaches it again
    reached = tokens_to_reach(tokens, losses, 1.0, 1)
    assert reached == 200 and isinstance(reached, int)
    assert tokens_to_reach(tokens, losses, 5.0, 1) == 100  # "at or below" the target
    assert tokens_to_reach(tokens, losses, 0.1, 1) is None
    assert tokens_to_reach(tokens, losses, 3.0, 200) == 200  # smoothed over 2 points: mean(5, 1) = 3
