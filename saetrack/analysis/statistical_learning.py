"""The statistical-learning phase: how close a model's predictions are to the corpus unigram and bigram statistics.

*Evolution of Concepts in Language Model Pre-Training* (Ge et al. 2025, "statistical learning -> feature learning")
finds that early training is spent fitting the corpus's unigram and bigram distributions: the KL divergence between
the model's predictions and those statistics falls quickly to a low value while the loss approaches the unigram and
then the bigram entropy; only afterwards do sparse features form. Definitions (all in nats, natural logarithms):

**Corpus statistics** come from the run's *training* token stream ``x_1 .. x_N`` (plug-in estimates):

* unigram ``p(b) = c(b) / N``, with ``c(b)`` the count of token ``b`` in the stream;
* bigram conditional ``p(b | a) = c(a, b) / c(a, .)``, with ``c(a, b)`` the count of adjacent pairs
  ``(x_i, x_{i+1}) = (a, b)`` for ``i = 1 .. N-1`` and ``c(a, .) = sum_b c(a, b)``; counts are held sparse
  (``scipy.sparse``), never as a dense ``V x V`` array, so Pythia's 50k vocabulary fits;
* unigram entropy ``H(U) = -sum_b p(b) ln p(b)``, the loss of the best context-free model on the stream;
* bigram conditional entropy ``H(B|A) = -sum_{a,b} c(a, b) / (N-1) ln p(b | a)``, the loss of the best model that
  sees only the previous token.

**Model side**, on held-out contexts ``x_0 .. x_{n-1}``: every position ``t = 1 .. n-1`` (one with a previous token)
gets the model's next-token distribution ``q_t = softmax(logits at t-1)``, its prediction of ``x_t`` from
``x_0 .. x_{t-1}``. Over the ``P`` such positions of all contexts:

* **unigram KL** ``= KL(p || q_bar) = sum_b p(b) ln(p(b) / q_bar(b))`` with ``q_bar = (1/P) sum_t q_t``, the
  model's predicted next-token marginal;
* **bigram KL** ``= mean_t KL(p(. | x_{t-1}) || q_t)`` over the positions whose previous token ``x_{t-1}`` occurs as
  the first token of a pair in the training stream (``c(x_{t-1}, .) > 0``); their share of the ``P`` positions is
  the **bigram coverage**;
* **loss** ``= -(1/P) sum_t ln q_t(x_t)``, the model's mean cross-entropy on all ``P`` positions.

In every KL the corpus distribution is the first argument, so its zero-probability entries contribute 0 and the
values are finite wherever the model gives every token positive probability (a softmax always does). Sums are
accumulated in float64. A model that predicts ``p`` at every position has unigram KL 0; one that predicts
``p(. | x_{t-1})`` has bigram KL 0 and, evaluated on the training stream as one context, loss ``H(B|A)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

__all__ = [
    "NgramStatistics",
    "PredictionAccumulator",
    "PredictionMeasures",
    "bigram_entropy",
    "conditional_entropies",
    "count_ngrams",
    "first_below_fraction",
    "kl_divergence",
    "unigram_entropy",
]

#: Tokens counted at once by :func:`count_ngrams` (bounds the temporary pair arrays).
COUNT_CHUNK = 1 << 22


def _xlogy_sum(p: np.ndarray, q: np.ndarray) -> float:
    """``sum p ln q`` over the entries where ``p > 0`` (0 ln 0 = 0), in float64."""
    mask = p > 0
    return float(np.sum(p[mask] * np.log(q[mask])))


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """``KL(p || q) = sum_b p(b) ln(p(b) / q(b))`` in nats; entries with ``p(b) = 0`` contribute 0.

    ``p`` and ``q`` are probability vectors of the same length (each summing to 1); infinite when ``q`` is 0 where
    ``p`` is not. The divergence of the corpus distribution ``p`` from the model's ``q`` (module doc).
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"kl_divergence needs two vectors of one length; got shapes {p.shape} and {q.shape}.")
    if (p < 0).any() or (q < 0).any():
        raise ValueError("kl_divergence needs non-negative probabilities.")
    with np.errstate(divide="ignore"):
        return _xlogy_sum(p, p) - _xlogy_sum(p, q)


@dataclass(frozen=True)
class NgramStatistics:
    """Unigram and adjacent-pair counts of a token stream over a vocabulary of ``vocab_size`` ids (module doc)."""

    unigram_counts: np.ndarray  # [V] int64, c(b)
    bigram_counts: sp.csr_matrix  # [V, V] int64, c(a, b) over adjacent pairs
    conditional: sp.csr_matrix = field(init=False, repr=False)  # [V, V] float64, p(b | a); rows of unseen a empty
    row_entropy: np.ndarray = field(init=False, repr=False)  # [V] float64, H(B | A = a); 0 for unseen a

    def __post_init__(self) -> None:
        row_totals = np.asarray(self.bigram_counts.sum(axis=1)).reshape(-1).astype(np.float64)
        scale = sp.diags(np.divide(1.0, row_totals, out=np.zeros_like(row_totals), where=row_totals > 0))
        conditional = sp.csr_matrix(scale @ self.bigram_counts.astype(np.float64))
        conditional.sort_indices()
        object.__setattr__(self, "conditional", conditional)
        object.__setattr__(self, "row_entropy", conditional_entropies(conditional))

    @property
    def vocab_size(self) -> int:
        """Number of token ids ``V`` the counts range over."""
        return int(self.unigram_counts.size)

    @property
    def n_tokens(self) -> int:
        """Length ``N`` of the counted stream."""
        return int(self.unigram_counts.sum())

    @property
    def unigram(self) -> np.ndarray:
        """The unigram distribution ``p(b) = c(b) / N``: ``[V]`` float64."""
        return self.unigram_counts / max(self.n_tokens, 1)

    @property
    def seen_previous(self) -> np.ndarray:
        """``[V]`` bool: tokens ``a`` that start at least one pair (``c(a, .) > 0``)."""
        return np.diff(self.bigram_counts.indptr) > 0


def count_ngrams(stream: np.ndarray, vocab_size: int, chunk: int = COUNT_CHUNK) -> NgramStatistics:
    """Unigram counts ``c(b)`` and sparse adjacent-pair counts ``c(a, b)`` of ``stream`` (module doc).

    The stream (any integer array, e.g. a memory map) is read in chunks of ``chunk`` tokens that overlap by one, so
    every adjacent pair is counted once and no dense ``V x V`` array is ever built.
    """
    flat = np.asarray(stream).reshape(-1)
    if flat.size < 2:
        raise ValueError(f"corpus statistics need a stream of at least 2 tokens; got {flat.size}.")
    if vocab_size < 1 or chunk < 1:
        raise ValueError(f"vocab_size = {vocab_size} and chunk = {chunk} must both be >= 1.")
    unigram = np.zeros(vocab_size, dtype=np.int64)
    bigram = sp.csr_matrix((vocab_size, vocab_size), dtype=np.int64)
    for start in range(0, flat.size, chunk):
        piece = np.asarray(flat[start : start + chunk + 1], dtype=np.int64)
        if piece.min() < 0 or piece.max() >= vocab_size:
            raise ValueError(
                f"the stream holds token ids in [{piece.min()}, {piece.max()}], outside the vocabulary of {vocab_size}."
            )
        unigram += np.bincount(piece[:chunk], minlength=vocab_size)
        if piece.size > 1:
            ones = np.ones(piece.size - 1, dtype=np.int64)
            bigram = bigram + sp.csr_matrix((ones, (piece[:-1], piece[1:])), shape=(vocab_size, vocab_size))
    bigram.sum_duplicates()
    return NgramStatistics(unigram, sp.csr_matrix(bigram))


def unigram_entropy(stats: NgramStatistics) -> float:
    """Plug-in unigram entropy ``H(U) = -sum_b p(b) ln p(b)`` in nats (module doc)."""
    p = stats.unigram
    return -_xlogy_sum(p, p)


def conditional_entropies(conditional: sp.csr_matrix) -> np.ndarray:
    """``H(B | A = a) = -sum_b p(b | a) ln p(b | a)`` for every row ``a`` of a sparse conditional; 0 for empty rows."""
    matrix = sp.csr_matrix(conditional, dtype=np.float64)
    terms = matrix.copy()
    terms.data = np.where(matrix.data > 0, -matrix.data * np.log(np.where(matrix.data > 0, matrix.data, 1.0)), 0.0)
    return np.asarray(terms.sum(axis=1), dtype=np.float64).reshape(-1)


def bigram_entropy(stats: NgramStatistics) -> float:
    """Plug-in conditional entropy ``H(B|A) = -sum_{a,b} c(a,b)/(N-1) ln p(b|a)`` in nats (module doc)."""
    row_totals = np.asarray(stats.bigram_counts.sum(axis=1), dtype=np.float64).reshape(-1)
    return float(np.dot(row_totals / row_totals.sum(), stats.row_entropy))


@dataclass(frozen=True)
class PredictionMeasures:
    """The three measures of one checkpoint (module doc), with the positions behind them."""

    loss: float
    unigram_kl: float
    bigram_kl: float
    bigram_coverage: float
    positions: int


class PredictionAccumulator:
    """Accumulates a model's next-token predictions over batches of contexts into :class:`PredictionMeasures`.

    Feed :meth:`add` the logits ``[b, n, V]`` of contexts ``[b, n]``; :meth:`measures` returns the loss, unigram KL,
    bigram KL and bigram coverage over every position ``t >= 1`` seen (module doc). The predicted marginal and the
    KL sums are kept in float64 on the logits' device; memory stays ``O(b n V)`` (a few float64 copies of one
    batch's predictions), never ``V x V``.
    """

    def __init__(self, stats: NgramStatistics) -> None:
        self.stats = stats
        self._conditional = stats.conditional
        self._seen = torch.from_numpy(stats.seen_previous)
        self._row_entropy = torch.from_numpy(stats.row_entropy)
        self._q_sum: torch.Tensor | None = None
        self._loss_sum = 0.0
        self._bigram_sum = 0.0
        self._covered = 0
        self._positions = 0

    def add(self, logits: torch.Tensor, tokens: torch.Tensor) -> None:
        """Add the predictions ``softmax(logits[:, t-1])`` of ``tokens[:, t]`` for ``t = 1 .. n-1``."""
        if logits.ndim != 3 or tokens.shape != logits.shape[:2]:
            raise ValueError(f"logits {tuple(logits.shape)} must be [b, n, V] over tokens {tuple(tokens.shape)}.")
        if logits.shape[2] != self.stats.vocab_size:
            raise ValueError(
                f"the model predicts {logits.shape[2]} token ids but the corpus statistics cover "
                f"{self.stats.vocab_size}; count the corpus over the model's vocabulary."
            )
        device = logits.device
        log_q = torch.log_softmax(logits[:, :-1].to(torch.float64), dim=-1).reshape(-1, logits.shape[2])
        previous = tokens[:, :-1].reshape(-1).to(device=device, dtype=torch.long)
        target = tokens[:, 1:].reshape(-1).to(device=device, dtype=torch.long)
        if self._q_sum is None:
            self._q_sum = torch.zeros(logits.shape[2], dtype=torch.float64, device=device)
        self._q_sum += log_q.exp().sum(dim=0)
        self._loss_sum -= float(log_q.gather(1, target[:, None]).sum())
        self._positions += int(target.numel())

        covered = self._seen.to(device)[previous]
        rows = torch.nonzero(covered).reshape(-1)
        if rows.numel():
            self._bigram_sum += float(self._bigram_terms(log_q[rows], previous[rows]).sum())
            self._covered += int(rows.numel())

    def _bigram_terms(self, log_q: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """``KL(p(. | a_r) || q_r) = -H(B | A = a_r) - sum_b p(b | a_r) ln q_r(b)`` for each row ``r``.

        The conditional rows of the distinct previous tokens are expanded to dense ``[rows, V]`` (the size of
        ``log_q``, never ``V x V``); entries with ``p(b | a) = 0`` contribute 0 even where ``ln q`` is ``-inf``.
        """
        device = log_q.device
        distinct, inverse = np.unique(previous.cpu().numpy(), return_inverse=True)
        dense = torch.from_numpy(self._conditional[distinct].toarray()).to(device)
        p = dense[torch.from_numpy(inverse.reshape(-1)).to(device)]
        cross = torch.where(p > 0, p * log_q, torch.zeros((), dtype=log_q.dtype, device=device)).sum(dim=1)
        return -self._row_entropy.to(device)[previous] - cross

    def measures(self) -> PredictionMeasures:
        """Loss, unigram KL, bigram KL (NaN when no position is covered) and coverage over all positions added."""
        if self._q_sum is None or self._positions == 0:
            raise ValueError("no predictions were added; give at least one context of 2 or more tokens.")
        q_bar = (self._q_sum / self._positions).cpu().numpy()
        return PredictionMeasures(
            loss=self._loss_sum / self._positions,
            unigram_kl=kl_divergence(self.stats.unigram, q_bar),
            bigram_kl=self._bigram_sum / self._covered if self._covered else float("nan"),
            bigram_coverage=self._covered / self._positions,
            positions=self._positions,
        )


def first_below_fraction(values: np.ndarray, fraction: float) -> int | None:
    """Index of the first entry that falls below ``fraction`` times the first entry; ``None`` when none does.

    Applied to the unigram and bigram KL curves (fraction 0.1) it dates the end of the statistical-learning phase.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("first_below_fraction needs a non-empty 1-D curve.")
    below = np.nonzero(values < fraction * values[0])[0]
    return int(below[0]) if below.size else None
