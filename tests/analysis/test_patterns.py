"""Known-answer tests of saetrack.analysis.patterns: sub-patterns, Fig. 2's rule-based picks, the sensitivity report."""

from __future__ import annotations

import numpy as np
import pytest

from saetrack.analysis.patterns import (
    FIG2_RULES,
    SUB_PATTERNS,
    pattern_sensitivity,
    pick_fig2_examples,
    sub_pattern_counts,
    sub_patterns,
)

# columns: one feature per case, rows: first, middle, final checkpoint
LABELS = np.array(
    [
        ["token", "token", "token", "inactive", "inactive", "concept", "concept", "token", "token", "concept"],
        ["token", "concept", "token", "concept", "token", "token", "concept", "concept", "token", "token"],
        ["token", "concept", "token", "token", "concept", "token", "concept", "token", "inactive", "inactive"],
    ]
)
DOMINANT = np.array(
    [
        [1, 1, 1, -1, -1, 5, 6, 7, 8, 9],
        [1, 2, 3, 4, 5, 5, 6, 7, 8, 9],
        [1, 2, 3, 4, 5, 5, 6, 7, 8, 9],
    ]
)
EXPECTED = [
    "maintaining: token->same token",
    "shifting: token->concept",
    "shifting: token->token",
    "grouping: inactive->token",
    "grouping: inactive->concept",
    "grouping: concept->token",
    "grouping: concept->concept",
    "other: token->same token, not throughout",
    "other: ->inactive",
    "other: ->inactive",
]


def test_sub_patterns_each_case_and_counts() -> None:
    subs = sub_patterns(LABELS, DOMINANT)
    assert subs.tolist() == EXPECTED
    counts = sub_pattern_counts(subs)
    assert list(counts) == list(SUB_PATTERNS)
    assert counts["other: ->inactive"] == 2 and sum(counts.values()) == 10


def test_pick_fig2_examples_by_the_stated_scores() -> None:
    subs = np.array(
        ["maintaining: token->same token"] * 2
        + ["shifting: token->token"] * 2
        + ["shifting: token->concept"] * 2
        + ["grouping: inactive->concept", "grouping: concept->token", "other: ->inactive"]
    )
    share = np.array(
        [
            [1.0, 0.9, 0.9, 1.0, 0.6, 0.8, 0.1, 0.2, 1.0],
            [0.5, 0.8, 0.2, 0.2, 0.3, 0.3, 0.5, 0.5, 1.0],
            [1.0, 0.9, 0.7, 0.5, 0.2, 0.2, 0.3, 0.9, 1.0],
        ]
    )
    progress = np.array(
        [
            [0.1] * 9,
            [0.2] * 9,
            [0.5, 0.4, 0.3, 0.9, 0.6, 0.1, 0.7, 0.5, 0.9],
        ]
    )
    picks = pick_fig2_examples(subs, share, progress, n_per_category=1, seed=0)
    assert [p["category"] for p in picks] == list(FIG2_RULES)
    # maintaining: min share 0.5 vs 0.8 -> feature 1; token->token: min(0.9, 0.7) = 0.7 vs 0.5 -> feature 2;
    # token->concept: first share 0.6 vs 0.8 -> feature 5; grouping: rise 0.6 vs 0.4 -> feature 6
    assert [p["index"] for p in picks] == [1, 2, 5, 6]
    assert [p["score"] for p in picks] == pytest.approx([0.8, 0.7, 0.8, 0.6])
    assert all(p["rule"] == FIG2_RULES[p["category"]][1] for p in picks)
    # a tie on the share goes to the higher final progress measure
    share[:, 4] = share[:, 5]
    assert pick_fig2_examples(subs, share, progress)[2]["index"] == 4
    # two per category; a category with no feature is left out
    without = np.where(subs == "shifting: token->concept", "other: ->inactive", subs)
    two = pick_fig2_examples(without, share, progress, 2)
    assert [p["category"] for p in two].count("shifting token->concept") == 0
    assert [p["index"] for p in two if p["category"] == "maintaining"] == [1, 0]
    with pytest.raises(ValueError, match="must be"):
        pick_fig2_examples(subs, share[:, :3], progress)


def test_pattern_sensitivity_recounts_labels_at_each_threshold() -> None:
    # one checkpoint-pair, two features; tokens: rows 0-9 are token 1, rows 10-19 token 2, ...
    tokens = np.repeat(np.arange(1, 6), 10)
    values = np.ones((2, 2, 10))
    # feature 0: 5 of 10 datapoints are token 1 at both checkpoints (share 0.5)
    f0 = np.array([0, 1, 2, 3, 4, 10, 20, 30, 40, 41])
    # feature 1: first 4 of 10 token 1 (0.4), final 6 of 10 token 2 (0.6)
    f1_first = np.array([0, 1, 2, 3, 10, 20, 30, 40, 41, 42])
    f1_final = np.array([10, 11, 12, 13, 14, 15, 0, 20, 30, 40])
    indices = np.stack([np.stack([f0, f1_first]), np.stack([f0, f1_final])])
    out = pattern_sensitivity(values, indices, tokens, np.array([0, 1]), min_active=5)
    assert list(out) == ["0.4", "0.5", "0.6"]
    # 0.4: both token-level at both ends; f0 same token -> maintaining; f1 token 1 -> token 2 -> shifting
    assert out["0.4"]["patterns"] == {"maintaining": 1, "shifting": 1, "grouping": 0, "other": 0, "interrupted": 0}
    # 0.5: f0 maintaining; f1 concept -> token -> grouping
    assert out["0.5"]["patterns"] == {"maintaining": 1, "shifting": 0, "grouping": 1, "other": 0, "interrupted": 0}
    assert out["0.5"]["sub_patterns"]["grouping: concept->token"] == 1
    # 0.6: f0 concept at both ends -> grouping concept->concept; f1 concept -> token -> grouping
    assert out["0.6"]["patterns"] == {"maintaining": 0, "shifting": 0, "grouping": 2, "other": 0, "interrupted": 0}
    assert out["0.6"]["sub_patterns"]["grouping: concept->concept"] == 1


def test_an_interrupted_identity_is_its_own_sub_pattern_and_never_a_fig2_example() -> None:
    labels = np.array([["token", "token"], ["inactive", "token"], ["concept", "concept"]])  # feature 0 interrupted
    dominant = np.array([[1, 2], [-1, 2], [3, 3]])
    subs = sub_patterns(labels, dominant)
    assert subs.tolist() == ["interrupted: active->inactive->active", "shifting: token->concept"]
    assert SUB_PATTERNS[-1] == "interrupted: active->inactive->active"
    assert all(subs[0] not in members for members, _ in FIG2_RULES.values())
    share = np.array([[1.0, 1.0], [0.0, 1.0], [0.2, 0.2]])
    picks = pick_fig2_examples(subs, share, np.zeros((3, 2)))
    assert [p["index"] for p in picks] == [1] and picks[0]["category"] == "shifting token->concept"


def test_pattern_sensitivity_gives_every_sub_pattern_and_interrupted_at_each_threshold() -> None:
    # feature 0: top-5 all token 1 at t=0, none active at t=1, all token 1 again at t=2 -> interrupted
    tokens = np.array([1, 1, 1, 1, 1, 2, 3, 4, 5, 6])
    values = np.zeros((3, 1, 5), dtype=np.float32)
    values[[0, 2]] = 1.0
    indices = np.tile(np.arange(5), (3, 1, 1))
    out = pattern_sensitivity(values, indices, tokens, np.array([0]), min_active=5)
    for counts in out.values():
        assert list(counts["sub_patterns"]) == list(SUB_PATTERNS)
        assert counts["patterns"]["interrupted"] == 1
        assert counts["sub_patterns"]["interrupted: active->inactive->active"] == 1
