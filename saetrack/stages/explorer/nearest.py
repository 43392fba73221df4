"""Each feature's nearest features by decoder direction at one link (a feature page's neighbours at the final step)."""

from __future__ import annotations

import numpy as np
import torch

from saetrack.sae.weights import SAEWeights, decoder_directions

__all__ = ["NEAREST_CHUNK", "nearest_features"]

#: Rows of decoder directions compared with all others at once (peak ``NEAREST_CHUNK x F`` floats).
NEAREST_CHUNK = 4096


@torch.no_grad()
def nearest_features(weights: SAEWeights, k: int, chunk: int = NEAREST_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` features whose unit decoder directions (columns of Eq. 1's ``W^dec``) are closest to each feature's by
    cosine, itself left out: indices ``[F, k]`` (int64) and cosines ``[F, k]`` (float32), best first.

    Computed in blocks of ``chunk`` rows on the weights' device: peak memory ``chunk x F`` floats, never ``F x F``.
    """
    unit = decoder_directions(weights)
    n = unit.shape[0]
    k = min(int(k), n - 1)
    index = np.zeros((n, max(k, 0)), dtype=np.int64)
    cosine = np.zeros((n, max(k, 0)), dtype=np.float32)
    if k <= 0:
        return index, cosine
    for start in range(0, n, chunk):
        sims = unit[start : start + chunk] @ unit.T
        own = torch.arange(start, min(start + chunk, n), device=sims.device)
        sims[torch.arange(own.numel(), device=sims.device), own] = -torch.inf
        values, found = sims.topk(k, dim=1)
        index[start : start + chunk] = found.cpu().numpy()
        cosine[start : start + chunk] = values.float().cpu().numpy()
    return index, cosine
