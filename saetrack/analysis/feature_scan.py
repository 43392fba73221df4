"""One streamed pass over an activation set: every feature's statistics and top-k datapoints, reduced on the device.

:func:`scan_features` encodes ``x`` (``[N, d_in]``: array, memory map, lazy view or tensor) in batches of
``batch_size`` rows on the SAE's device and folds each ``[b, F]`` activation block into a :class:`FeatureScan`
that lives on that device: active-row counts (int64), sums (float64), maxima (float64) and a running top-k
(values float32, row indices int64). Nothing of size ``[b, F]`` leaves the device; the final statistics come back
in one packed device->host copy (:meth:`FeatureScan.to_host`). The statistics (App. A.1) and the top-k datapoints
(Eq. 12's D_i) come from the same encoding of each batch, so a checkpoint is encoded once, not once per quantity.

Host traffic of one scan (N rows, d_in, F = d_sae, k; float32 inputs), in bytes:

* host -> device: the rows, ``4 * N * d_in`` (where ``x`` lies on the host);
* device -> host: ``F * (8 + 8 + 8) + F * k * (8 + 4)`` = ``F * (24 + 12 k)`` (count, sum, max, top-k indices and
  values), once.

The old reduction copied every activation block to the host in each of its two passes (statistics, then top-k):
``2 * 4 * N * F`` device -> host and ``2 * 4 * N * d_in`` host -> device.
:func:`saetrack.stages.formation.passes.host_traffic` evaluates both for a config.

Numbers are those of the old two-pass host reduction, bit for bit on CPU: the same float64 sums (``sum(dtype=
float64)`` over the same batch equals summing the float64 copy), exact counts and maxima, and the top-k merge is
the same ``torch.topk`` over ``cat([best, batch])`` (so ties, e.g. the many exact zeros of ReLU, are broken as
before); only the ``[F, k + b]`` int64 index tensor is no longer built (a row is ``best_idx[pos]`` for
``pos < k`` and ``start + pos - k`` after). Ties are real (ReLU zeros fill the lists of features with fewer than k
active rows; identical token prefixes give identical positive activations) and the CPU ``topk`` breaks them by its
selection algorithm, not by row order (the old result already depended on ``batch_size``); on a GPU, CUDA's
``topk`` may pick other rows among exactly equal values (before, the top-k always ran on the CPU), so only the
indices of tied entries can differ between a GPU and a CPU run, never the values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from saetrack.sae.weights import SAEWeights, feature_activations

__all__ = ["FeatureScan", "FeatureStats", "check_rows", "scan_device", "scan_features", "scan_host_bytes"]

_NUMPY: dict[torch.dtype, Any] = {torch.int64: np.int64, torch.float64: np.float64, torch.float32: np.float32}


@dataclass(frozen=True)
class FeatureStats:
    """Per-feature statistics of one SAE on one activation set (all arrays ``[F]``, float64)."""

    density: np.ndarray  # fraction of rows with f_i(x) > 0
    max_activation: np.ndarray  # max over rows of f_i(x)
    mean_activation: np.ndarray  # mean over rows of f_i(x) (zeros included)
    n_rows: int


def check_rows(x: Any, weights: SAEWeights, batch_size: int) -> None:
    """Raise ``ValueError`` unless ``x`` is a non-empty ``[n, d_in]`` set for ``weights`` and ``batch_size >= 1``."""
    if len(x.shape) != 2:
        raise ValueError(f"x must be [n, d_in], got shape {tuple(x.shape)}.")
    if x.shape[0] == 0:
        raise ValueError("x has no rows.")
    if x.shape[1] != weights.W_enc.shape[0]:
        raise ValueError(f"x has d_in = {x.shape[1]}, the SAE expects {weights.W_enc.shape[0]}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")


class FeatureScan:
    """Running per-feature statistics and top-k of a streamed activation set, held on one device.

    ``stats`` keeps count / sum / max (App. A.1); ``k > 0`` keeps the ``k`` largest activations of every feature
    with their row indices (Eq. 12), sorted descending, merged batch by batch as ``topk(cat([best, batch]))``.
    """

    def __init__(self, n_features: int, k: int, device: torch.device | str, stats: bool = True) -> None:
        """Empty accumulators for ``n_features`` features on ``device`` (``k = 0``: no top-k)."""
        self.k, self.stats, self.n_rows = int(k), stats, 0
        self.count = torch.zeros(n_features, dtype=torch.int64, device=device)
        self.total = torch.zeros(n_features, dtype=torch.float64, device=device)
        self.maximum = torch.zeros(n_features, dtype=torch.float64, device=device)
        self.best_val = torch.empty(n_features, 0, dtype=torch.float32, device=device)
        self.best_idx = torch.empty(n_features, 0, dtype=torch.int64, device=device)

    def update(self, acts: torch.Tensor, start: int) -> None:
        """Fold the activations ``acts [b, F]`` of rows ``start .. start + b - 1`` in, on their device."""
        if self.stats:
            self.count += (acts > 0).sum(dim=0)
            self.total += acts.sum(dim=0, dtype=torch.float64)
            self.maximum = torch.maximum(self.maximum, acts.amax(dim=0).double())
        if self.k > 0:
            held = self.best_val.shape[1]
            cand = torch.cat([self.best_val, acts.float().T], dim=1)
            self.best_val, pos = torch.topk(cand, min(self.k, cand.shape[1]), dim=1, largest=True, sorted=True)
            rows = pos + (start - held)
            if held:
                rows = torch.where(pos < held, self.best_idx.gather(1, pos.clamp(max=held - 1)), rows)
            self.best_idx = rows
        self.n_rows += int(acts.shape[0])

    def device_tensors(self) -> list[torch.Tensor]:
        """The accumulators in host-copy order (8-byte types first): count, sum, max, top-k indices, values."""
        return [self.count, self.total, self.maximum, self.best_idx, self.best_val]

    def to_host(self) -> tuple[FeatureStats | None, np.ndarray, np.ndarray]:
        """``(stats, values [F, k] float32, indices [F, k] int64)`` on the host, from one device->host copy of the
        packed accumulators (``stats`` is ``None`` without statistics); density = count / N, mean = sum / N."""
        tensors = self.device_tensors()
        packed = torch.cat([t.contiguous().reshape(-1).view(torch.uint8) for t in tensors]).cpu().numpy()
        host, offset = [], 0
        for t in tensors:
            size = t.numel() * t.element_size()
            host.append(packed[offset : offset + size].view(_NUMPY[t.dtype]).reshape(tuple(t.shape)))
            offset += size
        count, total, maximum, indices, values = host
        n = self.n_rows
        stats = FeatureStats(count / n, maximum.copy(), total / n, int(n)) if self.stats else None
        return stats, values, indices


def _batches(n: int, batch_size: int, desc: str) -> Any:
    starts = range(0, n, batch_size)
    return tqdm(starts, desc=desc, total=len(starts), leave=False, disable=len(starts) < 2)


@torch.no_grad()
def scan_device(
    weights: SAEWeights, x: Any, k: int = 0, batch_size: int = 8192, stats: bool = True, desc: str = "feature scan"
) -> FeatureScan:
    """Encode ``x`` (Eq. 2) batch by batch on the weights' device and fold every batch into a :class:`FeatureScan`
    there; nothing is copied back. ``x`` rows are read ``batch_size`` at a time (a tensor stays a tensor; a set with
    ``device_rows(start, stop)``, a streamed one, gives them on its device)."""
    check_rows(x, weights, batch_size)
    n = x.shape[0]
    if k and not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n_rows = {n}], got {k}.")
    scan = FeatureScan(weights.W_enc.shape[1], k, weights.W_enc.device, stats)
    for start in _batches(n, batch_size, desc):
        # a streamed set hands its rows over on the device (LazyActivations.device_rows): no host round trip
        rows = x.device_rows(start, start + batch_size) if hasattr(x, "device_rows") else x[start : start + batch_size]
        acts = feature_activations(weights, rows if isinstance(rows, torch.Tensor) else np.asarray(rows))
        scan.update(acts, start)
    return scan


def scan_features(
    weights: SAEWeights, x: Any, k: int = 25, batch_size: int = 8192
) -> tuple[FeatureStats, np.ndarray, np.ndarray]:
    """Density, max and mean of every feature's activation (App. A.1) and its ``k`` top datapoints (Eq. 12), from
    one encoding of ``x``: ``(stats, values [F, k] float32, indices [F, k] int64)``, equal to
    :func:`saetrack.analysis.features.feature_statistics` and :func:`~saetrack.analysis.features.top_k_datapoints`
    (one device->host copy at the end)."""
    stats, values, indices = scan_device(weights, x, k, batch_size, stats=True).to_host()
    assert stats is not None
    return stats, values, indices


def scan_host_bytes(n_rows: int, d_in: int, d_sae: int, k: int) -> dict[str, int]:
    """Host traffic in bytes of one SAE's statistics and top-k on an ``[n_rows, d_in]`` float32 set (module doc):
    ``h2d = 4 N d_in`` and ``d2h = F (24 + 12 k)`` now; ``old_h2d = 8 N d_in``, ``old_d2h = 8 N F`` (two passes)."""
    return {
        "h2d": 4 * n_rows * d_in,
        "d2h": d_sae * (24 + 12 * k),
        "old_h2d": 2 * 4 * n_rows * d_in,
        "old_d2h": 2 * 4 * n_rows * d_sae,
    }
