"""Feature matching at the paper's dictionary sizes: decoder cosines in chunks, top-k candidates, a sparse assignment.

The exact Hungarian assignment of :func:`saetrack.analysis.matching.match_features` needs the full ``F x F'`` cosine
matrix (34 GB in float64 at F = 65,536) and ``O(F^3)`` time. Here the cosines are computed a block of rows at a time
(``chunk x F'`` float32 on the run's device) and only the ``k`` best partners of every feature of *either* side are
kept, ``O((F + F') k)`` memory; the assignment maximising the summed cosine is then solved exactly on that sparse
candidate graph (``scipy.sparse.csgraph.min_weight_full_bipartite_matching``, LAPJVsp). It equals the exact
Hungarian assignment whenever the optimal pairs are among the candidates - the case for dictionaries whose features
have clear partners (chain links, seeds, methods) - and says so: a duality certificate
(:mod:`saetrack.analysis.assignment_certificate`) proves the answer optimal over all ``F x F'`` pairs from the
candidates alone. Unproven, ``k`` grows (x4) up to :data:`MAX_CANDIDATES`, then the features still unproven get
their cosines with the whole other side (column generation); an answer still unproven then is returned marked
``certified=False``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

from saetrack.analysis.assignment_certificate import TOLERANCE, certifies_all_pairs, residual_potentials

__all__ = [
    "DEFAULT_CANDIDATES",
    "MAX_CANDIDATES",
    "CandidatePool",
    "Candidates",
    "SparseAssignment",
    "candidate_cosines",
    "candidate_pool",
    "pair_cosines",
    "sparse_assignment",
]

#: Candidates kept per feature of each side at first.
DEFAULT_CANDIDATES = 16
#: The most candidates a side tried before an unproven answer is returned: at F = F' = 65,536, about 33.6M candidate
#: pairs (~1.1 GB of indices and cosines on the host; nano needs 256 = F / 4 for its independent SAEs).
MAX_CANDIDATES = 256
#: Rounds of column generation for features left unproven at ``max_k`` candidates, and the most features a round
#: completes (their cosines with the whole other side: ``MAX_REPAIR_FEATURES x F'`` on the device).
REPAIR_ROUNDS = 4
MAX_REPAIR_FEATURES = 8192
#: How far (in cosine) below a repaired feature's threshold pairs are added: the potentials may move this much.
REPAIR_SLACK = 0.05
#: Added to each side's k-th best float32 cosine so that it bounds every left-out pair's float64 cosine.
FLOAT32_MARGIN = 1e-5


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


@dataclass(frozen=True)
class Candidates:
    """The candidate graph: pairs ``(rows, cols)`` with their float32 cosines, and each side's ``k``-th best cosine
    (``row_kth[i]`` bounds row ``i``'s cosine with any column outside its candidates; ``-inf`` when all are in), and
    each row's most similar column ``top_partner``."""

    rows: np.ndarray
    cols: np.ndarray
    cosines: np.ndarray
    row_kth: np.ndarray
    col_kth: np.ndarray
    top_partner: np.ndarray
    #: Features completed by :func:`_repair`: ``(side_b, features, their potentials then, the other side's then)``.
    repairs: tuple[tuple[bool, np.ndarray, np.ndarray, np.ndarray], ...] = ()


@dataclass(frozen=True)
class SparseAssignment:
    """One-to-one pairs ``(rows, cols)`` (rows sorted) with float64 ``cosines``; ``certified`` when the pairs are
    proven optimal over all pairs (:mod:`saetrack.analysis.assignment_certificate`), with ``k`` candidates a side."""

    rows: np.ndarray
    cols: np.ndarray
    cosines: np.ndarray
    certified: bool
    k: int


def _kth(values: torch.Tensor, k: int, n_other: int) -> np.ndarray:
    """The ``k``-th best cosine of each feature (last column of its sorted top-k), ``-inf`` when ``k`` covers all."""
    kth = values[:, -1].double().cpu().numpy() + FLOAT32_MARGIN
    return np.full(kth.shape, -np.inf) if k >= n_other else kth


@dataclass(frozen=True)
class CandidatePool:
    """Each feature's ``size`` most similar features on the other side, best first: ``row_values``/``row_index``
    ``[F, size]`` for the rows of ``w_a``, ``col_values``/``col_index`` ``[F', size]`` for those of ``w_b``; the
    candidate graph of any ``k <= size`` is read from it (:meth:`candidates`) without computing a cosine again."""

    row_values: torch.Tensor
    row_index: torch.Tensor
    col_values: torch.Tensor
    col_index: torch.Tensor

    @property
    def size(self) -> int:
        """Partners kept per feature (the smaller of the two sides' counts)."""
        return min(self.row_values.shape[1], self.col_values.shape[1])

    def candidates(self, k: int) -> Candidates:
        """The candidate graph of each side's ``k`` best partners (``k <= size``, or all of the other side)."""
        n_a, n_b = self.row_values.shape[0], self.col_values.shape[0]
        k_row, k_col = min(k, self.row_values.shape[1]), min(k, self.col_values.shape[1])
        row_v, row_i = self.row_values[:, :k_row], self.row_index[:, :k_row]
        col_v, col_i = self.col_values[:, :k_col], self.col_index[:, :k_col]
        rows = np.concatenate([np.repeat(np.arange(n_a), k_row), col_i.reshape(-1).cpu().numpy()])
        cols = np.concatenate([row_i.reshape(-1).cpu().numpy(), np.repeat(np.arange(n_b), k_col)])
        cosines = np.concatenate([row_v.reshape(-1).cpu().numpy(), col_v.reshape(-1).cpu().numpy()])
        _, first = np.unique(rows.astype(np.int64) * n_b + cols, return_index=True)
        return Candidates(
            rows=rows[first],
            cols=cols[first],
            cosines=np.clip(cosines[first].astype(np.float64), -1.0, 1.0),
            row_kth=_kth(row_v, k_row, n_b),
            col_kth=_kth(col_v, k_col, n_a),
            top_partner=self.row_index[:, 0].cpu().numpy().astype(np.int64),
        )


@torch.no_grad()
def candidate_pool(
    w_a: np.ndarray | torch.Tensor, w_b: np.ndarray | torch.Tensor, size: int, *, chunk: int = 1024, device: str = "cpu"
) -> CandidatePool:
    """The :class:`CandidatePool` of ``w_a`` ``[F, D]`` and ``w_b`` ``[F', D]`` by decoder cosine: one pass over
    ``w_a`` in blocks of ``chunk`` rows on ``device``; peak memory ``chunk x F'`` float32 plus the pool."""
    a, b = _unit(w_a, device), _unit(w_b, device)
    n_a, n_b = a.shape[0], b.shape[0]
    k_row, k_col = min(size, n_b), min(size, n_a)
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
    return CandidatePool(row_v, row_i, col_v.T.contiguous(), col_i.T.contiguous())


def candidate_cosines(
    w_a: np.ndarray | torch.Tensor, w_b: np.ndarray | torch.Tensor, k: int, *, chunk: int = 1024, device: str = "cpu"
) -> Candidates:
    """The candidate graph of ``w_a`` ``[F, D]`` and ``w_b`` ``[F', D]``: for every row of ``w_a`` its ``k`` most
    similar rows of ``w_b`` by decoder cosine and for every row of ``w_b`` its ``k`` most similar rows of ``w_a``,
    without repeats (:func:`candidate_pool` of size ``k``)."""
    return candidate_pool(w_a, w_b, k, chunk=chunk, device=device).candidates(k)


def _repaired(found: Candidates, side_b: bool, d_mine: np.ndarray, d_other: np.ndarray) -> np.ndarray:
    """Which features of the checked side a repair proves: completed with every pair of cosine above
    ``d_i - d_j - REPAIR_SLACK`` under earlier potentials, feature ``i`` is proven under the new ones when no
    potential moved by more than the slack against it: ``max_j (d_j' - d_j) - (d_i' - d_i) <= REPAIR_SLACK``."""
    proven = np.zeros(d_mine.size, dtype=bool)
    for side, idx, mine_then, other_then in found.repairs:
        if side == side_b:
            moved = np.max(d_other - other_then) - (d_mine[idx] - mine_then)
            proven[idx] |= moved <= REPAIR_SLACK - TOLERANCE
    return proven


def _assign_and_certify(
    w_a: np.ndarray | torch.Tensor, w_b: np.ndarray | torch.Tensor, found: Candidates, chunk: int
) -> tuple[SparseAssignment, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]] | None:
    """The best full matching on ``found`` (float64 cosines), whether it is proven optimal, and the features whose
    certificate fails (of ``w_a``, of ``w_b``: one side is checked, the smaller) with the potentials ``(d_a, d_b)``
    for :func:`_repair`; ``None`` when the candidates hold no full matching."""
    n_a, n_b = found.row_kth.size, found.col_kth.size
    exact = pair_cosines(w_a, w_b, found.rows, found.cols, chunk=8 * chunk)
    graph = csr_matrix((2.0 - exact, (found.rows, found.cols)), shape=(n_a, n_b))  # weights in [1, 3]: all present
    try:
        matched_a, matched_b = min_weight_full_bipartite_matching(graph)
    except ValueError:  # no full matching among the candidates
        return None
    order = np.argsort(matched_a)  # (row, column) index pairs, like linear_sum_assignment's
    pair_a, pair_b = matched_a[order].astype(np.int64), matched_b[order].astype(np.int64)
    if n_a <= n_b:
        partner = np.full(n_a, -1, dtype=np.int64)
        partner[pair_a] = pair_b
        d_a, d_b = residual_potentials(n_a, n_b, found.rows, found.cols, exact, partner)
        proof = certifies_all_pairs(d_a, d_b, found.row_kth, found.col_kth) | _repaired(found, False, d_a, d_b)
        unproven_a, unproven_b = np.flatnonzero(~proof), np.zeros(0, dtype=np.int64)
    else:
        partner = np.full(n_b, -1, dtype=np.int64)
        partner[pair_b] = pair_a
        d_b, d_a = residual_potentials(n_b, n_a, found.cols, found.rows, exact, partner)
        proof = certifies_all_pairs(d_b, d_a, found.col_kth, found.row_kth) | _repaired(found, True, d_b, d_a)
        unproven_a, unproven_b = np.zeros(0, dtype=np.int64), np.flatnonzero(~proof)
    certified = not (unproven_a.size or unproven_b.size)
    result = SparseAssignment(pair_a, pair_b, pair_cosines(w_a, w_b, pair_a, pair_b), certified, 0)
    return result, unproven_a, unproven_b, (d_a, d_b)


@torch.no_grad()
def _repair(
    w_a: np.ndarray | torch.Tensor,
    w_b: np.ndarray | torch.Tensor,
    found: Candidates,
    unproven: tuple[np.ndarray, np.ndarray],
    potentials: tuple[np.ndarray, np.ndarray],
    device: str,
) -> Candidates:
    """``found`` with, for each unproven feature, every pair whose cosine could undercut the potentials by less than
    :data:`REPAIR_SLACK` (``cos_ij > d_i - d_j - slack``) added, its bound tightened to the best pair left out, and
    the potentials recorded so that :func:`_repaired` can prove it once the matching is solved again.

    Column generation: the cosines of those features with the whole other side are computed once on ``device``; the
    re-solved matching is then certified again against the new bounds."""
    rows, cols, cosines = [found.rows], [found.cols], [found.cosines]
    row_kth, col_kth = found.row_kth.copy(), found.col_kth.copy()
    repairs = list(found.repairs)
    for mine, other, kth, flip in ((w_a, w_b, row_kth, False), (w_b, w_a, col_kth, True)):
        idx = unproven[1] if flip else unproven[0]
        if not idx.size:
            continue
        d_mine, d_other = (potentials[1], potentials[0]) if flip else potentials
        sims = _unit(np.asarray(mine)[idx] if isinstance(mine, np.ndarray) else mine[torch.as_tensor(idx)], device)
        full = (sims @ _unit(other, device).T).double().cpu().numpy()  # [n_unproven, n_other]
        # the certificate needs cos <= d_mine - d_other on every pair of the checked side (module of the certificate)
        add = full > d_mine[idx][:, None] - d_other[None, :] - REPAIR_SLACK - FLOAT32_MARGIN
        repairs.append((flip, idx, d_mine[idx].copy(), d_other.copy()))
        left = np.where(add, -np.inf, full).max(axis=1)
        kth[idx] = np.where(np.isfinite(left), left + FLOAT32_MARGIN, -np.inf)
        where_i, where_j = np.nonzero(add)
        rows.append(idx[where_i] if not flip else where_j)
        cols.append(where_j if not flip else idx[where_i])
        cosines.append(full[where_i, where_j])
    all_rows, all_cols = np.concatenate(rows), np.concatenate(cols)
    _, first = np.unique(all_rows.astype(np.int64) * found.col_kth.size + all_cols, return_index=True)
    merged = np.clip(np.concatenate(cosines)[first], -1.0, 1.0)
    return Candidates(all_rows[first], all_cols[first], merged, row_kth, col_kth, found.top_partner, tuple(repairs))


def sparse_assignment(
    w_a: np.ndarray | torch.Tensor,
    w_b: np.ndarray | torch.Tensor,
    *,
    k: int = DEFAULT_CANDIDATES,
    max_k: int = MAX_CANDIDATES,
    chunk: int = 1024,
    device: str = "cpu",
) -> SparseAssignment:
    """The ``min(F, F')`` one-to-one pairs maximising the summed decoder cosine, solved on the candidate graph of
    :func:`candidate_cosines` and proven optimal over all pairs when possible.

    The cosines are computed once, keeping ``max_k`` partners a feature (:func:`candidate_pool`). Starts with ``k``
    candidates a side and quadruples ``k`` while the candidates hold no full matching (without limit) or the
    certificate fails (up to ``max_k``). Still unproven at ``max_k``, up to :data:`REPAIR_ROUNDS` rounds of column
    generation complete the candidates of the features the certificate could not prove (when at most
    :data:`MAX_REPAIR_FEATURES` are): every pair of theirs within :data:`REPAIR_SLACK` of a negative reduced cost
    under the certificate's potentials is added and the assignment solved again (nano's consecutive links need it
    where a 4-cycle runs through a pair ranked 514th). An answer still unproven after that is returned with
    ``certified=False``. Candidate cosines are recomputed in float64 so that the assignment is solved on the same
    numbers as the exact Hungarian one.
    """
    n_a, n_b = np.shape(w_a)[0], np.shape(w_b)[0]
    pool = candidate_pool(w_a, w_b, max(k, max_k), chunk=chunk, device=device)  # one pass of cosines for all k
    while True:
        if k > pool.size and pool.size < min(n_a, n_b):  # widening past max_k for a full matching: a new pass
            pool = candidate_pool(w_a, w_b, k, chunk=chunk, device=device)
        found = pool.candidates(k)
        solved = _assign_and_certify(w_a, w_b, found, chunk)
        if solved is not None and (solved[0].certified or k >= max_k):
            break
        if k >= max(n_a, n_b):  # cannot happen: all pairs are candidates by then
            raise ValueError(f"no full matching among all {n_a} x {n_b} pairs.")
        k = min(4 * k, max(n_a, n_b), max(max_k, k) if solved is not None else 4 * k)
    result, unproven_a, unproven_b, potentials = solved  # type: ignore[misc]
    for _ in range(REPAIR_ROUNDS):  # column generation for the few features the certificate could not prove
        n_unproven = unproven_a.size + unproven_b.size
        if result.certified or n_unproven > MAX_REPAIR_FEATURES:
            break
        found = _repair(w_a, w_b, found, (unproven_a, unproven_b), potentials, device)
        result, unproven_a, unproven_b, potentials = _assign_and_certify(w_a, w_b, found, chunk)  # type: ignore[misc]
    return SparseAssignment(result.rows, result.cols, result.cosines, result.certified, k)
