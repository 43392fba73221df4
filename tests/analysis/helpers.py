"""Random float64 SAEs and analysis sets shared by the formation and feature tests (and the formation stage's)."""

from __future__ import annotations

import numpy as np
import torch

from saetrack.sae.weights import SAEWeights


def float64_weights(d: int, d_sae: int, seed: int) -> SAEWeights:
    """A random float64 SAE (float64 so that chunked and unchunked encodings agree to rounding)."""
    gen = torch.Generator().manual_seed(seed)
    return SAEWeights(
        W_enc=torch.randn(d, d_sae, generator=gen, dtype=torch.float64),
        b_enc=0.1 * torch.randn(d_sae, generator=gen, dtype=torch.float64),
        W_dec=torch.randn(d_sae, d, generator=gen, dtype=torch.float64),
        b_dec=0.1 * torch.randn(d, generator=gen, dtype=torch.float64),
    )


def chain_problem(
    n_steps: int = 3, n_points: int = 200, d: int = 8, d_sae: int = 16, seed: int = 0
) -> tuple[list[np.ndarray], list[SAEWeights]]:
    """Random analysis activations ``[n_points, d]`` and a random SAE for each of ``n_steps`` checkpoints."""
    rng = np.random.default_rng(seed)
    analysis = [rng.standard_normal((n_points, d)).astype(np.float32) for _ in range(n_steps)]
    weights = [float64_weights(d, d_sae, seed + 1 + t) for t in range(n_steps)]
    return analysis, weights
