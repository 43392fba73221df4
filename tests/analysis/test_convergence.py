"""Convergence speed from a loss curve: the trailing token-window mean and the tokens needed to reach a target."""

from __future__ import annotations

import numpy as np
import pytest

from saetrack.analysis.convergence import (
    TRIVIAL_RULE,
    is_trivial_probe,
    smoothed,
    smoothed_at,
    summarise_convergence,
    tokens_to_reach,
)


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


def test_smoothed_at_reads_the_last_point_before_a_budget() -> None:
    tokens = np.arange(1, 11) * 100
    losses = np.array([10, 8, 6, 4, 2, 2, 2, 2, 2, 2], dtype=float)
    assert smoothed_at(tokens, losses, 450, 200) == 5.0  # last point <= 450 is 400: mean(6, 4)
    assert smoothed_at(tokens, losses, 10_000, 100) == 2.0
    assert smoothed_at(tokens, losses, 50, 100) is None  # nothing logged yet


def test_trivial_probe_rule_and_summary_exclude_a_planted_trivial_probe() -> None:
    window = 1000
    assert is_trivial_probe(1000, window) and is_trivial_probe(100, window)
    assert not is_trivial_probe(1001, window) and not is_trivial_probe(None, window)
    items = [
        # planted trivial probe: on target within the first window, a tiny ratio that would drag the median down
        {"step": 1, "recurrent_tokens_to_target": 500, "token_ratio": 0.001},
        {"step": 64, "recurrent_tokens_to_target": 80_000, "token_ratio": 0.2},
        {"step": 700, "recurrent_tokens_to_target": 20_000, "token_ratio": 0.05},
        {"step": 1400, "recurrent_tokens_to_target": None, "token_ratio": None},  # hit the budget
    ]
    summary = summarise_convergence(items, window_tokens=window, link_tokens=50_000)
    assert summary["median_token_ratio"] == pytest.approx(0.05)  # all three that reached: 0.001, 0.05, 0.2
    assert summary["median_token_ratio_nontrivial"] == pytest.approx(0.125)  # mean of 0.05 and 0.2
    assert summary["trivial_steps"] == [1]
    assert summary["nontrivial_steps"] == [64, 700]
    assert summary["not_reached_steps"] == [1400] and summary["n_not_reached"] == 1
    assert summary["beyond_link_budget_steps"] == [64, 1400] and summary["n_beyond_link_budget"] == 2
    assert summary["n_probes"] == 4 and summary["trivial_rule"] == TRIVIAL_RULE
    empty = summarise_convergence([], window_tokens=window, link_tokens=50_000)
    assert empty["median_token_ratio"] is None and empty["median_token_ratio_nontrivial"] is None
