"""Feature matching at the paper's dictionary sizes: decoder cosines in chunks, top-k candidates, a sparse assignment.

The exact Hungarian assignment of :func:`saetrack.analysis.matching.match_features` needs the full ``F x F'`` cosine
matrix (34 GB in float64 at F = 65,536) and ``O(F^3)`` time. Here the cosines are computed a block of rows at a time
(``chunk x F'`` float32 on the run's device) and only the ``k`` best partners of every feature of *either* side are
kept, ``O((F + F') k)`` memory; the assignment maximising the summed cosine is then solved exactly on that sparse
candidate graph (``scipy.sparse.csgraph.min_weight_full_bipartite_matching``, LAPJVsp). It equals the exact
Hungarian assignment whenever the optimal pairs are among the candidates - the case for dictionaries whose features
have clear partners (chain links, seeds, methods); a candidate graph with no full matching doubles ``k`` and retries.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

__all__ = ["DEFAULT_CANDIDATES", "candidate_cosines", "pair_cosines", "sparse_assignment"]

#: Candidates kept per feature of each side.
DEFAULT_CANDIDATES = 16


def _unit(w: np.ndarray | torch.Tensor, device: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(w) if isinstance(w, np.ndarray) else w).to(device=device, dtype=torch.float32)
    return t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)


def pair_cosines(
    w_a: np.ndarray | torch.Tensor,
    w_b: np.ndarray | torch.Tensor,
    index_a: np.ndarray,
    index_b: np.ndarray,
    chunk: int = 8192,
) -> np.ndarray:
    """The decoder cosine of each pair ``(w_a[index_a[n]], w_b[index_b[n]])`` in float64 (as the exact matching
    reports it), a block of pairs at a time."""
    out = np.empty(len(index_a), dtype=np.float64)
    for start in range(0, len(index_a), chunk):
        rows = [torch.as_tensor(np.asarray(w[idx[start : start + chunk]]) if isinstance(w, np.ndarray) else
                                w[torch.as_tensor(idx[start : start + chunk])]).double().cpu()
                for w, idx in ((w_a, index_a), (w_b, index_b))]  # fmt: skip
        dots = (rows[0] * rows[1]).sum(dim=1)
        norms = rows[0].norm(dim=1).clamp_min(1e-12) * rows[1].norm(dim=1).clamp_min(1e-12)
        out[start : start + chunk] = (dots / norms).clamp(-1.0, 1.0).numpy()
    return out


@torch.no_grad()
def candidate_cosines(
    w_a: np.ndarray | torch.Tensor, w_b: np.ndarray | torch.Tensor, k: int, *, chunk: int = 1024, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidate pairs ``(rows, cols, cosines)``: for every row of ``w_a`` ``[F, D]`` its ``k`` most similar rows
    of ``w_b`` ``[F', D]`` by decoder cosine, and for every row of ``w_b`` its ``k`` most similar rows of ``w_a``,
    without repeats. One pass over ``w_a`` in blocks of ``chunk`` rows; peak memory ``chunk x F'`` float32 plus the
    candidates."""
    a, b = _unit(w_a, device), _unit(w_b, device)
    n_a, n_b = a.shape[0], b.shape[0]
    k_row, k_col = min(k, n_b), min(k, n_a)
    row_v = torch.empty(n_a, k_row, device=device)
    row_i = torch.empty(n_a, k_row, dtype=torch.long, device=device)
    col_v = torch.full((0, n_b), -2.0, device=device)
    col_i = torch.zeros((0, n_b), dtype=torch.long, device=device)
    for start in range(0, n_a, chunk):
        sims = a[start : start + chunk] @ b.T
        row_v[start : start + chunk], row_i[start : start + chunk] = sims.topk(k_row, dim=1)
        block_v, block_i = sims.topk(min(k_col, sims.shape[0]), dim=0)
        merged_v, merged_i = torch.cat([col_v, block_v]), torch.cat([col_i, block_i + start])
        best = merged_v.topk(min(k_col, merged_v.shape[0]), dim=0)
        col_v, col_i = best.values, merged_i.gather(0, best.indices)
    rows = np.concatenate([np.repeat(np.arange(n_a), k_row), col_i.T.reshape(-1).cpu().numpy()])
    cols = np.concatenate([row_i.reshape(-1).cpu().numpy(), np.repeat(np.arange(n_b), col_i.shape[0])])
    cosines = np.concatenate([row_v.reshape(-1).cpu().numpy(), col_v.T.reshape(-1).cpu().numpy()])
    _, first = np.unique(rows.astype(np.int64) * n_b + cols, return_index=True)
    return rows[first], cols[first], np.clip(cosines[first].astype(np.float64), -1.0, 1.0)


def sparse_assignment(
    w_a: np.ndarray | torch.Tensor,
    w_b: np.ndarray | torch.Tensor,
    *,
    k: int = DEFAULT_CANDIDATES,
    chunk: int = 1024,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The one-to-one pairs ``(rows, cols, cosines)`` of ``min(F, F')`` features maximising the summed decoder cosine
    over the candidate graph of :func:`candidate_cosines` (the exact assignment restricted to each feature's ``k``
    best partners); ``k`` doubles until the graph has a full matching. Rows come sorted."""
    n_a, n_b = np.shape(w_a)[0], np.shape(w_b)[0]
    while True:
        rows, cols, cosines = candidate_cosines(w_a, w_b, k, chunk=chunk, device=device)
        graph = csr_matrix((2.0 - cosines, (rows, cols)), shape=(n_a, n_b))  # weights in [1, 3]: all edges present
        try:
            matched_a, matched_b = min_weight_full_bipartite_matching(graph)
        except ValueError:  # no full matching among the candidates
            if k >= max(n_a, n_b):
                raise
            k = min(2 * k, max(n_a, n_b))
            continue
        order = np.argsort(matched_a)  # (row, column) index pairs, like linear_sum_assignment's
        pair_a, pair_b = matched_a[order], matched_b[order]
        return pair_a.astype(np.int64), pair_b.astype(np.int64), pair_cosines(w_a, w_b, pair_a, pair_b)
