"""Matching SAE features across dictionaries by decoder-direction cosine (Hungarian algorithm).

SAE-Track identifies features along a chain by index: recurrent initialisation starts SAE[k] from
SAE[k-1]'s weights, so feature ``i`` is expected to stay feature ``i``. These functions *measure* how far
that holds (:func:`index_stability`) and align dictionaries that share no indices, e.g. a chain link and
an independently trained baseline (:func:`match_features`).

Dictionaries are given as decoder matrices ``[n_features, d_in]`` (SAELens' ``W_dec`` rows, or
:func:`saetrack.sae.decoder_directions`); rows are unit-normalised here, so norms do not matter. The exact
Hungarian assignment builds the full ``F x F'`` cosine matrix and costs ``O(F^3)``: fine for nano dictionaries
(a few thousand features). Beyond :data:`EXACT_MAX_CELLS` cosines, :func:`match_features` solves the same
assignment on each feature's best candidates (:mod:`saetrack.analysis.sparse_matching`), in bounded memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from saetrack.analysis.sparse_matching import candidate_cosines, pair_cosines, sparse_assignment

__all__ = [
    "EXACT_MAX_CELLS",
    "MatchResult",
    "MatrixLike",
    "cosine_matrix",
    "index_stability",
    "match_features",
]


MatrixLike = np.ndarray | torch.Tensor

#: The largest ``F x F'`` matched exactly by default (the full float64 cosine matrix: 134 MB; nano's 1024 x 1024 is
#: 8 MB); larger pairs of dictionaries go to the sparse assignment.
EXACT_MAX_CELLS = 4096 * 4096


@dataclass(frozen=True)
class MatchResult:
    """A one-to-one matching of features of dictionary A to features of dictionary B.

    ``index_a[k]`` is matched to ``index_b[k]`` with cosine ``cosines[k]`` (original indices of A and B).
    ``permutation`` has one entry per feature of A: its partner in B, or -1 when unmatched (outside the
    subset, or A has more features than B). ``mean_cosine`` and ``fraction_above`` (cosine > ``threshold``)
    are over the matched pairs. ``certified`` is ``False`` only for a sparse assignment not proven optimal over all
    pairs (:func:`saetrack.analysis.sparse_matching.sparse_assignment`).
    """

    index_a: np.ndarray
    index_b: np.ndarray
    cosines: np.ndarray
    permutation: np.ndarray
    mean_cosine: float
    fraction_above: float
    threshold: float
    certified: bool = True

    @property
    def n_matched(self) -> int:
        """Number of matched pairs (``min`` of the two dictionary or subset sizes)."""
        return int(self.index_a.size)


def _unit_rows(w: MatrixLike, name: str) -> np.ndarray:
    arr = w.detach().cpu().double().numpy() if isinstance(w, torch.Tensor) else np.asarray(w, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name} has shape {arr.shape}, expected a non-empty [n_features, d_in] matrix.")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return arr / np.maximum(norms, 1e-12)


def cosine_matrix(w_a: MatrixLike, w_b: MatrixLike) -> np.ndarray:
    """Cosine similarity of every row of ``w_a`` ``[F, D]`` with every row of ``w_b`` ``[F', D]``, ``[F, F']``.

    Zero rows have cosine 0 with everything. Values are clipped to ``[-1, 1]`` against rounding.
    """
    a, b = _unit_rows(w_a, "W_a"), _unit_rows(w_b, "W_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"W_a has d_in = {a.shape[1]} but W_b has d_in = {b.shape[1]}; they must agree.")
    return np.clip(a @ b.T, -1.0, 1.0)


def _subset(indices: np.ndarray | None, n: int, name: str) -> np.ndarray:
    if indices is None:
        return np.arange(n)
    idx = np.asarray(indices)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise ValueError(f"{name} is a boolean mask of shape {idx.shape}, expected ({n},).")
        idx = np.flatnonzero(idx)
    idx = idx.astype(np.int64)
    if idx.size == 0 or idx.min() < 0 or idx.max() >= n or np.unique(idx).size != idx.size:
        raise ValueError(f"{name} must hold distinct feature indices in [0, {n}), got {idx[:10]}...")
    return idx


def match_features(
    w_a: MatrixLike,
    w_b: MatrixLike,
    *,
    threshold: float = 0.7,
    subset_a: np.ndarray | None = None,
    subset_b: np.ndarray | None = None,
    method: str = "auto",
    device: str = "cpu",
) -> MatchResult:
    """Hungarian matching of the features of ``w_a`` ``[F, D]`` to those of ``w_b`` ``[F', D]``.

    Maximises the summed decoder cosine over one-to-one pairs; with ``F != F'`` the ``min(F, F')`` best-fitting
    pairs are formed. ``subset_a`` / ``subset_b`` (index arrays or boolean masks, e.g. live features) restrict each
    side before matching. ``method``: ``"exact"`` (``scipy.optimize.linear_sum_assignment`` on the full cosine
    matrix), ``"sparse"`` (the same assignment over each feature's best candidates, cosines computed in blocks on
    ``device``: :func:`saetrack.analysis.sparse_matching.sparse_assignment`), or ``"auto"``: exact up to
    :data:`EXACT_MAX_CELLS` cosines, sparse beyond.
    """
    if method not in ("auto", "exact", "sparse"):
        raise ValueError(f"method must be 'auto', 'exact' or 'sparse', got {method!r}.")
    n_a, n_b = int(w_a.shape[0]), int(w_b.shape[0])
    idx_a = _subset(subset_a, n_a, "subset_a")
    idx_b = _subset(subset_b, n_b, "subset_b")
    if method == "exact" or (method == "auto" and idx_a.size * idx_b.size <= EXACT_MAX_CELLS):
        cos = cosine_matrix(w_a, w_b)[np.ix_(idx_a, idx_b)]
        rows, cols = linear_sum_assignment(cos, maximize=True)
        cosines, certified = cos[rows, cols], True
    else:
        side_a = w_a[torch.as_tensor(idx_a)] if isinstance(w_a, torch.Tensor) else np.asarray(w_a)[idx_a]
        side_b = w_b[torch.as_tensor(idx_b)] if isinstance(w_b, torch.Tensor) else np.asarray(w_b)[idx_b]
        if side_a.shape[1] != side_b.shape[1]:
            raise ValueError(f"W_a has d_in = {side_a.shape[1]} but W_b has d_in = {side_b.shape[1]}; they must agree.")
        found = sparse_assignment(side_a, side_b, device=device)
        rows, cols, cosines, certified = found.rows, found.cols, found.cosines, found.certified
    matched_a, matched_b = idx_a[rows], idx_b[cols]
    permutation = np.full(n_a, -1, dtype=np.int64)
    permutation[matched_a] = matched_b
    return MatchResult(
        index_a=matched_a,
        index_b=matched_b,
        cosines=cosines,
        permutation=permutation,
        mean_cosine=float(cosines.mean()),
        fraction_above=float((cosines > threshold).mean()),
        threshold=threshold,
        certified=certified,
    )


def _row_argmax(w_a: MatrixLike, w_b: MatrixLike, device: str) -> np.ndarray:
    """Each row of ``w_a``'s most similar row of ``w_b`` by decoder cosine, from blocks of cosines on ``device``."""
    return candidate_cosines(w_a, w_b, 1, device=device).top_partner


def index_stability(
    w_prev: MatrixLike,
    w_next: MatrixLike,
    *,
    features: np.ndarray | None = None,
    threshold: float = 0.7,
    method: str = "auto",
    device: str = "cpu",
) -> dict[str, float]:
    """How far feature ``i`` of one dictionary stays feature ``i`` of the next (same size ``[F, D]``).

    Returns ``hungarian_same_index`` (fraction of features whose Hungarian partner is their own index),
    ``argmax_same_index`` (fraction whose most similar feature in ``w_next`` is their own index),
    ``mean_same_index_cosine`` (mean ``cos(w_prev[i], w_next[i])``), ``mean_matched_cosine`` and
    ``fraction_matched_above`` (Hungarian pairs with cosine > ``threshold``), and ``matching_certified``
    (see :class:`MatchResult`). The matching uses all features (``method`` as in :func:`match_features`);
    ``features`` (indices or a mask, e.g. live ones) selects which features the fractions are taken over.
    """
    n_prev, n_next = int(w_prev.shape[0]), int(w_next.shape[0])
    if n_prev != n_next:
        raise ValueError(f"index stability needs dictionaries of equal size, got {n_prev} and {n_next}.")
    idx = _subset(features, n_prev, "features")
    match = match_features(w_prev, w_next, threshold=threshold, method=method, device=device)
    partner = match.permutation
    if n_prev * n_next <= EXACT_MAX_CELLS and method != "sparse":
        cos = cosine_matrix(w_prev, w_next)
        argmax, same = cos[idx].argmax(axis=1), cos[idx, idx]
    else:
        argmax = _row_argmax(w_prev, w_next, device)[idx]
        same = pair_cosines(w_prev, w_next, idx, idx)
    matched = np.empty(n_prev)
    matched[match.index_a] = match.cosines
    matched = matched[idx]
    return {
        "n_features": int(idx.size),
        "hungarian_same_index": float((partner[idx] == idx).mean()),
        "argmax_same_index": float((argmax == idx).mean()),
        "mean_same_index_cosine": float(same.mean()),
        "mean_matched_cosine": float(matched.mean()),
        "fraction_matched_above": float((matched > threshold).mean()),
        "matching_certified": match.certified,
    }
