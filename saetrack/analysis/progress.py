"""The feature-formation progress measure (paper Def. 5.4, Eq. 14-19) and its similarity metrics (App. C.2).

For a feature i at checkpoint t, take the set of datapoints that activate it (A_i^t, activation space) or their SAE
codes (F_i^t, feature space). The progress measure is the mean pairwise similarity inside that set minus the mean
pairwise similarity of a fixed set of randomly drawn datapoints at the same checkpoint (Eq. 14 / 17). Similarity is
cosine (Eq. 27), Jaccard on supports (Eq. 28) or weighted Jaccard (Eq. 29).

Beside Eq. 14: the baseline-normalised measure N_i(t) = (S_i(t) - B(t)) / (1 - B(t)) (:func:`normalised_progress`),
the share of the room above the random baseline that feature i's set fills (1 = identical directions); and the
within-set cosine of sets with some members left out (:func:`masked_mean_cosine`, for top-k lists with fewer than k
active datapoints).

All computation is in float64 and vectorised over any leading batch dimensions.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "METRICS",
    "masked_mean_cosine",
    "normalised_progress",
    "pairwise_mean_similarity",
    "progress_measure",
    "random_baseline",
    "random_indices",
    "within_set_similarity",
]


METRICS: tuple[str, ...] = ("cosine", "jaccard", "weighted_jaccard")


def _check_metric(metric: str) -> None:
    """Raise ValueError unless ``metric`` is one of :data:`METRICS`."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def _upper_pairs(mat: torch.Tensor) -> torch.Tensor:
    """The strictly-upper-triangular entries (j < k) of ``mat [B, n, n]`` as ``[B, n(n-1)/2]``."""
    n = mat.shape[-1]
    rows, cols = torch.triu_indices(n, n, offset=1, device=mat.device)
    return mat[:, rows, cols]


def _masked_mean(sim: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``sim [B, P]`` over the pairs where ``valid`` is True; NaN where no pair is valid."""
    total = torch.where(valid, sim, torch.zeros_like(sim)).sum(dim=-1)
    count = valid.sum(dim=-1).to(sim.dtype)
    return total / count  # 0 / 0 -> NaN when every pair is excluded


def _cosine_pairs(x: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity (Eq. 27) over pairs j<k of each set in ``x [B, n, d]``; zero vectors give 0."""
    norms = x.norm(dim=-1, keepdim=True)
    unit = torch.where(norms > 0, x / norms.clamp_min(torch.finfo(x.dtype).tiny), torch.zeros_like(x))
    return _upper_pairs(unit @ unit.transpose(-1, -2)).mean(dim=-1)


def _jaccard_pairs(x: torch.Tensor) -> torch.Tensor:
    """Mean Jaccard similarity (Eq. 28) of supports (entries > 0) over pairs j<k of each set in ``x [B, n, d]``.

    Intersections are a batched matmul of the binary support matrices; pairs with an empty union are excluded.
    """
    binary = (x > 0).to(x.dtype)
    inter = _upper_pairs(binary @ binary.transpose(-1, -2))
    sizes = binary.sum(dim=-1)
    union = _upper_pairs(sizes[:, :, None] + sizes[:, None, :]) - inter
    valid = union > 0
    return _masked_mean(inter / torch.where(valid, union, torch.ones_like(union)), valid)


def _weighted_jaccard_pairs(x: torch.Tensor, chunk: int) -> torch.Tensor:
    """Mean weighted Jaccard similarity (Eq. 29) over pairs j<k of each set in ``x [B, n, d]`` (x >= 0).

    For non-negative vectors Σmin(u, v) = (Σu + Σv − ||u − v||₁) / 2 and Σmax(u, v) = (Σu + Σv + ||u − v||₁) / 2,
    so the pairwise L1 distances of ``torch.cdist`` give both without an ``[n, n, d]`` tensor of minima (about 8x
    faster on CPU). ``chunk`` sets are processed at a time. Pairs with an empty union (Σmax = 0) are excluded.
    """
    n = x.shape[-2]
    rows, cols = torch.triu_indices(n, n, offset=1, device=x.device)
    sums = x.sum(dim=-1)
    sum_pairs = sums[:, rows] + sums[:, cols]
    l1 = torch.cat([torch.cdist(part, part, p=1.0)[:, rows, cols] for part in torch.split(x, chunk, dim=0)], dim=0)
    mins = (sum_pairs - l1).clamp_min(0.0) / 2
    maxs = (sum_pairs + l1) / 2
    valid = maxs > 0
    return _masked_mean(mins / torch.where(valid, maxs, torch.ones_like(maxs)), valid)


def pairwise_mean_similarity(x: torch.Tensor, metric: str, chunk: int = 64) -> torch.Tensor:
    """Mean of Sim(x_j, x_k) over the n(n-1)/2 unordered pairs j<k of each set (paper Eq. 15/16/18/19).

    Args:
        x: ``[..., n, d]``, a batch of sets of n vectors of dimension d.
        metric: ``"cosine"`` (Eq. 27; a zero vector has similarity 0 with anything), ``"jaccard"`` (Eq. 28, on
            supports = entries > 0) or ``"weighted_jaccard"`` (Eq. 29, non-negative input only). For the two
            Jaccard metrics a pair whose union is empty (both vectors all-zero) is excluded from the mean, and a
            set in which every pair is excluded gives NaN.
        chunk: number of sets processed at once for ``weighted_jaccard`` (bounds memory); ignored otherwise.

    Returns:
        ``[...]`` float64 tensor of mean pairwise similarities.
    """
    _check_metric(metric)
    if x.dim() < 2:
        raise ValueError(f"x must have shape [..., n, d], got shape {tuple(x.shape)}")
    n, d = x.shape[-2], x.shape[-1]
    if n < 2:
        raise ValueError(f"need at least 2 vectors per set to form a pair, got n={n}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    lead = x.shape[:-2]
    flat = x.detach().to(torch.float64).reshape(-1, n, d)
    if metric == "cosine":
        out = _cosine_pairs(flat)
    elif metric == "jaccard":
        out = _jaccard_pairs(flat)
    else:
        if flat.numel() and bool((flat < 0).any()):
            raise ValueError(f"weighted_jaccard needs non-negative input, got minimum {flat.min().item():.6g}")
        out = _weighted_jaccard_pairs(flat, chunk)
    return out.reshape(lead)


def random_indices(n_points: int, n_random: int, seed: int) -> np.ndarray:
    """The random datapoints of the baseline (Eq. 16 / 19): ``n_random`` distinct indices of ``n_points``.

    Drawn once with ``numpy.random.default_rng(seed)`` and used at every checkpoint.
    """
    if not 2 <= n_random <= n_points:
        raise ValueError(f"n_random must be in [2, N={n_points}], got {n_random}")
    return np.random.default_rng(seed).choice(n_points, size=n_random, replace=False).astype(np.int64)


def random_baseline(x_random: torch.Tensor, metric: str) -> float:
    """The random baseline of one checkpoint (paper Eq. 16 in activation space, Eq. 19 in feature space).

    The mean pairwise similarity (Eq. 15 / 18 with Eq. 27-29) of a fixed set of random datapoints ``x_random``
    ``[n_random, d]`` (activations, or their SAE codes) at that checkpoint. The datapoints are drawn once with
    :func:`random_indices` and are the same at every checkpoint.
    """
    _check_metric(metric)
    if x_random.dim() != 2:
        raise ValueError(f"x_random must have shape [n_random, d], got shape {tuple(x_random.shape)}")
    return float(pairwise_mean_similarity(x_random, metric))


def progress_measure(within: torch.Tensor | np.ndarray, baseline: float) -> np.ndarray:
    """Feature-formation progress measure M_i(t) (paper Def. 5.4, Eq. 14 / Eq. 17) at one checkpoint.

    ``M_i(t) = S(A_i^t) - S(random set at t)``: the mean pairwise similarity inside feature i's set (``within``,
    ``[F]``, from :func:`pairwise_mean_similarity` on the sets ``[F, k, d]``) minus the checkpoint's
    :func:`random_baseline`. Returns ``[F]`` float64.
    """
    values = within.numpy() if isinstance(within, torch.Tensor) else np.asarray(within)
    return values.astype(np.float64, copy=False) - baseline


def within_set_similarity(progress: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """The within-set term S(A_i^t) of the progress measure (Eq. 15 / 18), recovered from M_i(t) (Def. 5.4, Eq. 14 /
    17) and the random baseline (Eq. 16 / 19): ``S = M + baseline``.

    ``progress`` is ``[T, F]`` (checkpoints first), ``baseline`` ``[T]`` (one number per checkpoint). Splitting M into
    its two terms shows whether a change of M comes from the feature's own set or from the random baseline.
    Returns ``[T, F]`` float64.
    """
    m = np.asarray(progress, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if m.ndim != 2 or b.shape != (m.shape[0],):
        raise ValueError(f"progress must be [T, F] and baseline [T], got shapes {m.shape} and {b.shape}")
    return m + b[:, None]


def masked_mean_cosine(x: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray) -> np.ndarray:
    """Mean pairwise cosine similarity (Eq. 15 with Eq. 27) over the members of each set that ``mask`` keeps.

    ``x`` is ``[F, k, d]`` (F sets of k vectors), ``mask`` ``[F, k]`` bool: the mean runs over the pairs j < l with
    both members kept, so a set whose top-k list holds fewer than k active datapoints is measured on its active ones
    only. With every member kept this equals :func:`pairwise_mean_similarity` with ``"cosine"``. A zero vector has
    similarity 0 with anything; a set with fewer than 2 kept members gives NaN. Computed in float64 with numpy
    (small batched products run several times faster than with torch's thread pool on a shared CPU). Returns ``[F]``
    float64.
    """
    xs = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    keep = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask, dtype=bool)
    if xs.ndim != 3 or keep.shape != xs.shape[:2]:
        raise ValueError(f"x must be [F, k, d] and mask [F, k], got shapes {xs.shape} and {keep.shape}")
    if xs.shape[1] < 2:
        raise ValueError(f"need at least 2 vectors per set to form a pair, got k={xs.shape[1]}")
    norms = np.linalg.norm(xs, axis=-1, keepdims=True)
    unit = np.divide(xs, norms, out=np.zeros_like(xs), where=norms > 0)
    rows, cols = np.triu_indices(xs.shape[1], k=1)
    sim = (unit @ unit.transpose(0, 2, 1))[:, rows, cols]
    kept = keep[:, rows] & keep[:, cols]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(kept, sim, 0.0).sum(axis=-1) / kept.sum(axis=-1)


def normalised_progress(within: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """Baseline-normalised progress measure N_i(t) = (S_i(t) - B(t)) / (1 - B(t)), beside Eq. 14 (Def. 5.4).

    ``within`` ``[T, F]`` is the within-set cosine similarity S_i(t) (Eq. 15), ``baseline`` ``[T]`` the random
    baseline B(t) (Eq. 16). The numerator is M_i(t) of Eq. 14; dividing by the room above the baseline (cosine
    similarity is at most 1) gives the share of that room the set fills: 0 = no more similar than random datapoints,
    1 = identical directions. Equivalently N = 1 - (1 - S) / (1 - B): the set's distance from identical directions
    relative to random datapoints'. M_i(t) rises whenever B(t) falls faster than S_i(t); N_i(t) rises only when the
    set's distance shrinks relative to the random one. NaN where B(t) >= 1 (no room). Returns ``[T, F]`` float64.
    """
    s = np.asarray(within, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if s.ndim != 2 or b.shape != (s.shape[0],):
        raise ValueError(f"within must be [T, F] and baseline [T], got shapes {s.shape} and {b.shape}")
    room = 1.0 - b
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(room[:, None] > 0, (s - b[:, None]) / room[:, None], np.nan)
