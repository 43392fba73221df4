"""Known answers of the statistical-learning measures: KL, entropies, and models that predict the corpus exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from saetrack.analysis.statistical_learning import (
    PredictionAccumulator,
    bigram_entropy,
    conditional_entropies,
    count_ngrams,
    first_below_fraction,
    kl_divergence,
    unigram_entropy,
)

#: A stream with hand-computed statistics: unigram counts 0:3, 1:2, 2:1 over a vocabulary of 4 (token 3 unseen);
#: pairs (0,1) (1,0) (0,1) (1,0) (0,2): p(.|0) = (0, 2/3, 1/3, 0), p(.|1) = (1, 0, 0, 0), tokens 2 and 3 start no pair.
HAND_STREAM = np.array([0, 1, 0, 1, 0, 2], dtype=np.uint16)


def test_kl_on_a_hand_computed_three_token_example() -> None:
    p = np.array([0.5, 0.25, 0.25])
    q = np.array([0.25, 0.25, 0.5])
    # 0.5 ln 2 + 0.25 ln 1 + 0.25 ln 0.5 = 0.25 ln 2
    assert kl_divergence(p, q) == pytest.approx(0.25 * math.log(2), abs=1e-15)
    # a zero-probability corpus entry contributes 0: 0.5 ln 2 + 0.5 ln 2
    assert kl_divergence(np.array([0.5, 0.5, 0.0]), q) == pytest.approx(math.log(2), abs=1e-15)
    assert kl_divergence(p, p) == 0.0
    assert kl_divergence(p, np.array([0.5, 0.5, 0.0])) == math.inf  # q = 0 where p > 0
    with pytest.raises(ValueError, match="one length"):
        kl_divergence(p, q[:2])


def test_counts_and_entropies_of_a_hand_computed_stream() -> None:
    stats = count_ngrams(HAND_STREAM, vocab_size=4)
    np.testing.assert_array_equal(stats.unigram_counts, [3, 2, 1, 0])
    np.testing.assert_array_equal(stats.bigram_counts.toarray(), [[0, 2, 1, 0], [2, 0, 0, 0], [0] * 4, [0] * 4])
    np.testing.assert_allclose(stats.conditional.toarray()[0], [0, 2 / 3, 1 / 3, 0])
    np.testing.assert_array_equal(stats.seen_previous, [True, True, False, False])
    h_u = -(0.5 * math.log(0.5) + (1 / 3) * math.log(1 / 3) + (1 / 6) * math.log(1 / 6))
    assert unigram_entropy(stats) == pytest.approx(h_u, abs=1e-12)
    # H(B|A) = p(a=0) H(2/3, 1/3) + p(a=1) * 0, with p(a=0) = 3/5 of the 5 pairs
    h_row0 = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    np.testing.assert_allclose(stats.row_entropy, [h_row0, 0, 0, 0], atol=1e-12)
    assert bigram_entropy(stats) == pytest.approx(0.6 * h_row0, abs=1e-12)


def test_chunked_counting_counts_every_pair_once() -> None:
    stream = np.random.default_rng(0).integers(0, 7, size=1001)
    whole, chunked = count_ngrams(stream, 7), count_ngrams(stream, 7, chunk=10)
    np.testing.assert_array_equal(whole.unigram_counts, chunked.unigram_counts)
    assert (whole.bigram_counts != chunked.bigram_counts).nnz == 0
    assert whole.bigram_counts.sum() == 1000 and whole.n_tokens == 1001


def test_counts_stay_sparse_at_pythia_vocabulary_size() -> None:
    stream = np.random.default_rng(0).integers(0, 50_304, size=20_000)
    stats = count_ngrams(stream, 50_304)
    assert sp.issparse(stats.bigram_counts) and sp.issparse(stats.conditional)
    assert stats.bigram_counts.nnz <= 19_999 and stats.bigram_counts.sum() == 19_999
    np.testing.assert_allclose(np.asarray(stats.conditional.sum(axis=1)).reshape(-1)[stats.seen_previous], 1.0)


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="outside the vocabulary"):
        count_ngrams(np.array([0, 5]), 4)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        count_ngrams(np.array([1]), 4)
    with pytest.raises(ValueError, match="no predictions"):
        PredictionAccumulator(count_ngrams(HAND_STREAM, 4)).measures()
    with pytest.raises(ValueError, match="corpus statistics cover 4"):
        PredictionAccumulator(count_ngrams(HAND_STREAM, 4)).add(torch.zeros(1, 3, 5), torch.zeros(1, 3))


def _log(p: np.ndarray) -> torch.Tensor:
    """Logits whose softmax is ``p`` exactly (``-inf`` where ``p`` is 0)."""
    with np.errstate(divide="ignore"):
        return torch.from_numpy(np.log(p))


def test_a_model_predicting_the_unigram_distribution_has_zero_unigram_kl() -> None:
    stream = np.random.default_rng(1).integers(0, 6, size=400)
    stats = count_ngrams(stream, 8)  # tokens 6, 7 never occur: p = 0 there
    contexts = torch.from_numpy(stream.reshape(10, 40))
    logits = _log(stats.unigram).expand(10, 40, 8).clone()
    acc = PredictionAccumulator(stats)
    acc.add(logits[:4], contexts[:4])  # two batches accumulate like one
    acc.add(logits[4:], contexts[4:])
    m = acc.measures()
    assert m.unigram_kl == pytest.approx(0.0, abs=1e-12)
    assert m.positions == 10 * 39 and m.bigram_coverage == 1.0
    targets = contexts[:, 1:].reshape(-1).numpy()
    assert m.loss == pytest.approx(-np.log(stats.unigram[targets]).mean(), abs=1e-12)
    # its bigram KL is the mean over positions of KL(p(.|a) || p): positive, since the stream's pairs are not flat
    prev = contexts[:, :-1].reshape(-1).numpy()
    dense = stats.conditional.toarray()
    expected = np.mean([kl_divergence(dense[a], stats.unigram) for a in prev])
    assert m.bigram_kl == pytest.approx(expected, abs=1e-12) and m.bigram_kl > 0


def test_a_model_predicting_the_bigram_conditional_has_zero_bigram_kl() -> None:
    # a Markov chain, so the bigram statistics are far from the unigram marginal
    rng = np.random.default_rng(2)
    transition = rng.dirichlet(np.full(5, 0.3), size=5)
    stream = [0]
    for _ in range(2999):
        stream.append(int(rng.choice(5, p=transition[stream[-1]])))
    tokens = np.asarray(stream)
    stats = count_ngrams(tokens, 5)
    dense = stats.conditional.toarray()
    # evaluated on the training stream as one context: positions t = 1 .. N-1 with previous token x_{t-1}
    context = torch.from_numpy(tokens[None, :])
    logits = _log(dense[tokens])[None]
    acc = PredictionAccumulator(stats)
    acc.add(logits, context)
    m = acc.measures()
    assert m.bigram_kl == pytest.approx(0.0, abs=1e-12) and m.bigram_coverage == 1.0
    assert m.loss == pytest.approx(bigram_entropy(stats), abs=1e-12)  # the best bigram model's loss is H(B|A)
    # its marginal is the unigram distribution of x_1 .. x_{N-1}: KL to the whole stream's unigram ~ 0
    marginal = np.bincount(tokens[1:], minlength=5) / (len(tokens) - 1)
    assert m.unigram_kl == pytest.approx(kl_divergence(stats.unigram, marginal), abs=1e-12)
    assert m.unigram_kl < 1e-5
    assert bigram_entropy(stats) < unigram_entropy(stats)


def test_bigram_coverage_counts_only_previous_tokens_seen_in_training() -> None:
    stats = count_ngrams(HAND_STREAM, 4)  # tokens 2 and 3 start no pair
    contexts = torch.tensor([[0, 1, 2, 3, 0]])  # previous tokens 0, 1, 2, 3: half are covered
    logits = torch.zeros(1, 5, 4)  # uniform predictions
    acc = PredictionAccumulator(stats)
    acc.add(logits, contexts)
    m = acc.measures()
    assert m.bigram_coverage == 0.5 and m.loss == pytest.approx(math.log(4))
    # KL(p(.|0) || uniform) = ln 4 - H(2/3, 1/3); KL(p(.|1) || uniform) = ln 4
    expected = (2 * math.log(4) - stats.row_entropy[0]) / 2
    assert m.bigram_kl == pytest.approx(expected, abs=1e-12)
    assert m.unigram_kl == pytest.approx(math.log(4) - unigram_entropy(stats), abs=1e-12)


def test_conditional_entropies_of_empty_and_deterministic_rows_are_zero() -> None:
    matrix = sp.csr_matrix(np.array([[0.5, 0.5], [0.0, 0.0], [1.0, 0.0]]))
    np.testing.assert_allclose(conditional_entropies(matrix), [math.log(2), 0.0, 0.0])


def test_first_below_fraction() -> None:
    assert first_below_fraction(np.array([2.0, 1.0, 0.3, 0.2]), 0.1) is None  # 0.2 is not below 0.2
    assert first_below_fraction(np.array([2.0, 1.0, 0.15, 0.1]), 0.1) == 2
    with pytest.raises(ValueError, match="non-empty"):
        first_below_fraction(np.array([]), 0.1)
