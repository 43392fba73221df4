"""Known-answer tests of saetrack.analysis.features on hand-made weights, stats and labels (fast, offline, seeded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from transformers import PreTrainedTokenizerFast

from saetrack.analysis.features import (
    FeatureStats,
    classify_patterns,
    classify_token_concept,
    feature_statistics,
    filter_features,
    interrupted_identities,
    interruption_lengths,
    pattern_counts,
    pick_examples,
    render_context,
    top_k_datapoints,
)
from saetrack.sae.weights import SAEWeights, feature_activations
from tests.analysis.helpers import chain_problem


def _identity_weights(d: int) -> SAEWeights:
    """Features f_i(x) = ReLU(x_i) for i < d and f_{d+i}(x) = ReLU(-x_i): an encoder of +e_i and -e_i."""
    w_enc = torch.cat([torch.eye(d), -torch.eye(d)], dim=1)
    return SAEWeights(
        W_enc=w_enc, b_enc=torch.zeros(2 * d), W_dec=w_enc.T.clone(), b_dec=torch.zeros(d), apply_b_dec_to_input=True
    )


def _random_weights(d_in: int, d_sae: int, seed: int) -> SAEWeights:
    g = torch.Generator().manual_seed(seed)
    return SAEWeights(
        W_enc=torch.randn(d_in, d_sae, generator=g),
        b_enc=torch.randn(d_sae, generator=g) - 1.0,
        W_dec=torch.randn(d_sae, d_in, generator=g),
        b_dec=torch.randn(d_in, generator=g) * 0.1,
    )


def test_feature_statistics_exact_on_identity_encoder() -> None:
    x = np.array([[1.0, 0.0, -2.0], [3.0, 0.0, 0.0], [0.0, 0.0, 4.0], [2.0, 0.0, -1.0]], dtype=np.float32)
    stats = feature_statistics(_identity_weights(3), x, batch_size=3)  # two batches: 3 + 1 rows
    np.testing.assert_allclose(stats.density, [0.75, 0.0, 0.25, 0.0, 0.0, 0.5])
    np.testing.assert_allclose(stats.max_activation, [3.0, 0.0, 4.0, 0.0, 0.0, 2.0])
    np.testing.assert_allclose(stats.mean_activation, [1.5, 0.0, 1.0, 0.0, 0.0, 0.75])
    assert stats.n_rows == 4


def test_feature_statistics_rejects_wrong_width() -> None:
    with pytest.raises(ValueError, match="d_in = 2"):
        feature_statistics(_identity_weights(3), np.zeros((4, 2), dtype=np.float32))


def test_top_k_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((203, 6)).astype(np.float32)
    weights = _random_weights(6, 12, seed=1)
    acts = feature_activations(weights, x).numpy().T  # [F, N]
    values, indices = top_k_datapoints(weights, x, k=7, batch_size=16)
    assert values.shape == indices.shape == (12, 7)
    want_idx = np.argsort(-acts, axis=1, kind="stable")[:, :7]
    want_val = np.take_along_axis(acts, want_idx, axis=1)
    np.testing.assert_allclose(values, want_val, rtol=1e-6)
    active = want_val > 0
    np.testing.assert_array_equal(indices[active], want_idx[active])
    np.testing.assert_array_equal(np.take_along_axis(acts, indices, axis=1), values)
    assert (np.diff(values, axis=1) <= 0).all()


def test_top_k_feature_subset_and_zero_padding() -> None:
    x = np.array([[1.0, 0.0], [5.0, 0.0], [0.0, 2.0], [3.0, 0.0], [-1.0, 0.0]], dtype=np.float32)
    values, indices = top_k_datapoints(_identity_weights(2), x, k=3, batch_size=2, features=np.array([1, 0]))
    np.testing.assert_array_equal(indices[1], [1, 3, 0])
    np.testing.assert_array_equal(values[1], [5.0, 3.0, 1.0])
    assert values[0, 0] == 2.0 and indices[0, 0] == 2
    np.testing.assert_array_equal(values[0, 1:], [0.0, 0.0])  # only one active row: padded with value 0
    with pytest.raises(ValueError, match="k must be"):
        top_k_datapoints(_identity_weights(2), x, k=6)


def test_top_k_datapoints_give_the_top_activating_rows_d_i() -> None:
    analysis, weights = chain_problem(n_steps=1, n_points=97)
    acts = feature_activations(weights[0], analysis[0]).numpy()
    expected = np.argsort(-acts, axis=0, kind="stable")[:5].T
    got = top_k_datapoints(weights[0], analysis[0], k=5, batch_size=10)[1]
    np.testing.assert_array_equal(np.take_along_axis(acts.T, got, 1), np.take_along_axis(acts.T, expected, 1))
    sub = top_k_datapoints(weights[0], analysis[0], k=5, features=np.array([3, 0]), batch_size=1000)[1]
    np.testing.assert_array_equal(
        np.take_along_axis(acts.T[[3, 0]], sub, 1), np.take_along_axis(acts.T, expected, 1)[[3, 0]]
    )


def test_classify_token_concept_rules() -> None:
    tokens = np.array([7] * 10 + [1, 2, 3, 4, 5, 6, 8, 9, 10, 11])
    values = np.array(
        [
            [5.0, 4.0, 3.0, 2.0, 1.0, 0.5],  # all token 7
            [5.0, 4.0, 3.0, 2.0, 1.0, 0.5],  # mixed tokens
            [5.0, 4.0, 0.0, 0.0, 0.0, 0.0],  # two active only
            [5.0, 4.0, 3.0, 2.0, 1.0, 0.0],  # 3 of 5 on token 7 -> share 0.6
        ]
    )
    indices = np.array(
        [
            [0, 1, 2, 3, 4, 5],
            [10, 11, 12, 0, 14, 15],
            [0, 1, 2, 3, 4, 5],
            [0, 1, 2, 10, 11, 12],
        ]
    )
    labels, dominant, share = classify_token_concept(values, indices, tokens, token_share=0.5, min_active=5)
    assert labels.tolist() == ["token", "concept", "inactive", "token"]
    assert dominant[0] == 7 and share[0] == 1.0
    assert share[1] == pytest.approx(1 / 6)
    assert dominant[2] == 7 and share[2] == 1.0  # inactive: too few active datapoints
    assert share[3] == pytest.approx(0.6)
    labels_strict, _, _ = classify_token_concept(values, indices, tokens, token_share=0.7, min_active=5)
    assert labels_strict[3] == "concept"
    empty_labels, empty_dom, empty_share = classify_token_concept(np.zeros((1, 3)), np.zeros((1, 3), int), tokens)
    assert empty_labels.tolist() == ["inactive"] and empty_dom[0] == -1 and empty_share[0] == 0.0


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint16])
def test_the_dominant_token_is_the_mode_whatever_the_token_arrays_dtype(dtype: type) -> None:
    # the analysis set's tokens are stored as int32: the mode must not be lost to a wrapped fill value
    tokens = np.array([7] * 10 + [1, 2, 3, 4, 5, 6, 8, 9, 10, 11], dtype=dtype)
    values = np.array([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0], [5.0, 4.0, 3.0, 2.0, 1.0, 0.5]])
    indices = np.array([[0, 1, 2, 10, 11, 12], [13, 11, 12, 14, 15, 16]])
    labels, dominant, share = classify_token_concept(values, indices, tokens, token_share=0.5, min_active=5)
    assert dominant.tolist() == [7, 2]  # 3 of 5 on token 7; all distinct: the smallest id
    assert labels.tolist() == ["token", "concept"] and share[0] == pytest.approx(0.6)


def test_classify_patterns_each_case() -> None:
    labels = np.array(
        [
            ["token", "token", "token", "concept", "inactive", "token", "token"],
            ["token", "token", "token", "inactive", "concept", "token", "inactive"],
            ["token", "concept", "token", "token", "token", "token", "inactive"],
        ]
    )
    dominant = np.array(
        [
            [3, 5, 5, -1, -1, 4, 2],
            [3, 5, 5, -1, 9, 8, -1],
            [3, 9, 6, 1, 2, 4, -1],
        ]
    )
    patterns = classify_patterns(labels, dominant)
    # feature 3 (concept, inactive, token) was active, died and came back: an interrupted identity, not grouping
    assert patterns.tolist() == ["maintaining", "shifting", "shifting", "interrupted", "grouping", "other", "other"]
    assert pattern_counts(patterns) == {"maintaining": 1, "shifting": 2, "grouping": 1, "other": 2, "interrupted": 1}
    without = classify_patterns(labels, dominant, interrupted=False)
    assert without.tolist() == ["maintaining", "shifting", "shifting", "grouping", "grouping", "other", "other"]
    with pytest.raises(ValueError, match="unknown labels"):
        classify_patterns(np.array([["tok"]]), np.array([[1]]))


def _stats(density: list[float], max_activation: list[float]) -> FeatureStats:
    d = np.array(density)
    return FeatureStats(density=d, max_activation=np.array(max_activation), mean_activation=d, n_rows=1000)


def test_filter_features_dead_ultra_low_live() -> None:
    steps = [
        _stats([0.0, 0.0, 0.1, 0.0, 0.2], [0.0, 1e-3, 2.0, 0.0, 3.0]),
        _stats([0.0, 1e-5, 0.1, 0.3, 0.0], [0.0, 2e-3, 2.0, 0.01, 0.0]),
    ]
    filt = filter_features(steps, min_density=1e-4)
    # feature 1: tiny density; feature 3: max 0.01 < 1% of median(2e-3, 2, 0.01, 3) = 0.01005
    assert filt.dead.tolist() == [True, False, False, False, False]
    assert filt.ultra_low.tolist() == [False, True, False, True, False]
    assert filt.live.tolist() == [False, False, True, False, True]
    assert filt.counts() == {"dead": 1, "ultra_low": 2, "live": 2}
    assert filt.min_max_activation == pytest.approx(0.01 * np.median([2e-3, 2.0, 0.01, 3.0]))
    absolute = filter_features(steps, min_density=1e-6, min_max_activation=1e-3)
    assert absolute.counts() == {"dead": 1, "ultra_low": 0, "live": 4}


def test_pick_examples_reproducible_highest_first() -> None:
    patterns = np.array(["shifting", "maintaining", "shifting", "shifting", "grouping"])
    scores = np.array([0.5, 0.1, 0.9, 0.9, np.nan])
    picks = pick_examples(patterns, scores, n_per_pattern=3, seed=0)
    assert picks == pick_examples(patterns, scores, n_per_pattern=3, seed=0)
    assert sorted(picks["shifting"][:2]) == [2, 3] and picks["shifting"][2] == 0
    assert picks["maintaining"] == [1] and picks["grouping"] == [4] and picks["other"] == []
    assert {tuple(pick_examples(patterns, scores, 1, seed=s)["shifting"]) for s in range(20)} == {(2,), (3,)}


def _word_tokenizer() -> PreTrainedTokenizerFast:
    words = ["[UNK]", "the", "cat", "sat", "<b>", "&", "on", "mat", "a", "dog"]
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def test_render_context_marks_token_and_escapes_html() -> None:
    tokenizer = _word_tokenizer()
    tokens = np.array([[1, 2, 3, 6, 1, 7], [8, 9, 4, 5, 2, 3]])
    plain, marked = render_context(tokenizer, tokens, flat_index=6 + 2, window=8)
    assert plain == "a dog «<b>» & cat"
    assert marked == "a dog <mark>&lt;b&gt;</mark> &amp; cat"
    plain0, _ = render_context(tokenizer, tokens, flat_index=3, window=2)
    assert plain0 == "cat sat «on» the mat"
    with pytest.raises(ValueError, match="flat_index"):
        render_context(tokenizer, tokens, flat_index=12)


def test_interrupted_identities_need_activity_on_both_sides_of_the_gap() -> None:
    t, c, i = "token", "concept", "inactive"
    cases = {  # one feature per case: labels from the first to the final checkpoint -> interrupted?
        "token, dead, concept (the index was reused)": ([t, t, i, c, c], True),
        "dead at two checkpoints in the middle": ([c, i, i, c, c], True),
        "a one-checkpoint gap then dead to the end": ([t, i, t, i, i], True),
        "grouping from inactive: inactive first, active after": ([i, i, c, c, t], False),
        "active then dead to the end (other: ->inactive)": ([t, t, c, i, i], False),
        "never active": ([i, i, i, i, i], False),
        "active throughout, labels changing": ([t, c, t, c, c], False),
        "inactive at the start and the end only": ([i, t, c, t, i], False),
    }
    labels = np.array([case for case, _ in cases.values()]).T
    expected = [answer for _, answer in cases.values()]
    assert interrupted_identities(labels).tolist() == expected
    dominant = np.zeros(labels.shape, dtype=np.int64)
    patterns = classify_patterns(labels, dominant)
    assert [p == "interrupted" for p in patterns] == expected
    assert patterns[3] == "grouping"  # grouping from noise stays grouping
    assert interruption_lengths(labels).tolist() == [1, 2, 1, 0, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="labels must be"):
        interrupted_identities(np.array(["token"]))
