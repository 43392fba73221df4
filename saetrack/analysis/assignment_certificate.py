"""A proof that an assignment found on each feature's best candidates is optimal over *all* pairs.

:mod:`saetrack.analysis.sparse_matching` solves the matching problem (maximise the summed decoder cosine over
one-to-one pairs) on a sparse candidate graph: every feature's ``k`` most similar partners on the other side. Its
answer is optimal on that graph; it is optimal on the full ``F x F'`` problem exactly when no pair left out of the
graph could improve it. This module checks that with linear-programming duality, without ever forming the full
cosine matrix.

Write the problem as a min-cost flow with costs ``c_ij = -cos_ij`` (rows ``i`` of the smaller side all matched,
columns ``j`` at most once, a sink ``t`` collecting the columns). A matching is optimal iff its residual graph has no
negative cycle; then shortest-path distances ``d`` from a virtual root (joined to the columns and the sink) are
potentials with non-negative reduced cost
``c_ij + d_i - d_j >= 0`` on every residual arc (:func:`residual_potentials`, Bellman-Ford on the candidates). A pair
left out of the graph is neither among row ``i``'s ``k`` best (so ``cos_ij <= r_i``, the row's ``k``-th best) nor
column ``j``'s (``cos_ij <= s_j``), so ``c_ij >= -min(r_i, s_j)``; if ``-min(r_i, s_j) + d_i - d_j >= 0`` for *every*
``(i, j)`` the same potentials prove the matching optimal on the full problem (:func:`certifies_all_pairs`, an
``O((F + F') log F')`` sweep over sorted potentials). The bound is conservative: a failed check means "unproven",
and the caller widens the candidates.
"""

from __future__ import annotations

import numpy as np

__all__ = ["certifies_all_pairs", "residual_potentials"]

#: Slack (in cosine) allowed in the checks against float64 round-off of the potentials.
TOLERANCE = 1e-9


def _shortest_from_root(sources: np.ndarray, tails: np.ndarray, heads: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Distances from a virtual root joined by a 0-cost arc to the nodes where ``sources`` is true (Bellman-Ford,
    vectorised per round)."""
    n_nodes = sources.size
    order = np.argsort(heads, kind="stable")
    tails, heads, weights = tails[order], heads[order], weights[order]
    starts = np.flatnonzero(np.r_[True, heads[1:] != heads[:-1]]) if heads.size else np.zeros(0, dtype=np.int64)
    targets = heads[starts]
    dist = np.where(sources, 0.0, np.inf)
    for _ in range(n_nodes + 1):
        if not heads.size:
            return dist
        best = np.minimum.reduceat(dist[tails] + weights, starts)
        improved = best < dist[targets] - 1e-12
        if not improved.any():
            return dist
        dist[targets[improved]] = best[improved]
    raise ArithmeticError("the matching's residual graph has a negative cycle: it is not optimal on its candidates.")


def residual_potentials(
    n_rows: int,
    n_cols: int,
    rows: np.ndarray,
    cols: np.ndarray,
    cosines: np.ndarray,
    matched_cols: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Potentials ``(d_rows, d_cols)`` with ``-cos_ij + d_i - d_j >= 0`` on every candidate pair ``(rows, cols)`` and
    equality on the matching (row ``i`` matched to ``matched_cols[i]``; ``n_rows <= n_cols``, every row matched).

    Shortest-path distances on the matching's residual graph (module doc): arcs ``i -> j`` of cost ``-cos_ij`` for
    unmatched candidates, ``j -> i`` of cost ``cos_ij`` for matched pairs, ``j -> t`` for free columns and ``t -> j``
    for matched ones. Raises :class:`ArithmeticError` when the matching is not optimal on its own candidates.
    """
    if n_rows > n_cols:
        raise ValueError(f"the rows must be the smaller side, got {n_rows} rows and {n_cols} columns.")
    matched = matched_cols[rows] == cols
    sink = n_rows + n_cols
    taken = np.zeros(n_cols, dtype=bool)
    taken[matched_cols] = True
    col_ids = np.arange(n_cols) + n_rows
    tails = np.concatenate([rows[~matched], cols[matched] + n_rows, col_ids[~taken], np.full(taken.sum(), sink)])
    heads = np.concatenate([cols[~matched] + n_rows, rows[matched], np.full((~taken).sum(), sink), col_ids[taken]])
    weights = np.concatenate([-cosines[~matched], cosines[matched], np.zeros(n_cols)])
    sources = np.arange(n_rows + n_cols + 1) >= n_rows  # the columns and the sink: a row is reached only through
    dist = _shortest_from_root(sources, tails, heads, weights)  # its partner, so the matched pairs are tight
    return dist[:n_rows], dist[n_rows:sink]


def certifies_all_pairs(
    d_rows: np.ndarray, d_cols: np.ndarray, row_kth: np.ndarray, col_kth: np.ndarray, tolerance: float = TOLERANCE
) -> np.ndarray:
    """For each row ``i``, whether ``-min(r_i, s_j) + d_i - d_j >= -tolerance`` holds for every column ``j``.

    ``row_kth[i] = r_i`` bounds the cosine of row ``i`` with any column outside its candidates (``-inf`` when all are
    candidates), ``col_kth[j] = s_j`` likewise; the potentials come from :func:`residual_potentials`. A violation
    needs ``d_j > d_i - r_i`` and ``d_j + s_j > d_i``: the columns are sorted by ``d_j`` once, and each row reads the
    largest ``d_j + s_j`` among the columns above its threshold. ``True`` for every row proves the matching optimal
    over all ``F x F'`` pairs (module doc).
    """
    order = np.argsort(-d_cols, kind="stable")
    descending = d_cols[order]
    prefix_max = np.maximum.accumulate(d_cols[order] + col_kth[order])
    n_above = np.searchsorted(-descending, -(d_rows - row_kth + tolerance), side="left")
    worst = np.where(n_above > 0, prefix_max[np.maximum(n_above - 1, 0)], -np.inf)
    return worst <= d_rows + tolerance
