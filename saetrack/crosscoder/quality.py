"""Quality of a crosscoder per snapshot on held-out tokens: explained variance, L0 and dead features (issue 14, item 2).

Definitions match the chain's (:func:`saetrack.analysis.metrics.reconstruction_metrics`), so the two sit side by side:

* ``explained_variance[θ] = 1 - Σ ||x^θ - x̂^θ||² / Σ ||x^θ - mean(x^θ)||²`` over the held-out tokens (unchanged by the
  per-snapshot normalisation, which scales both sums alike);
* ``l0``: active features per token (one number: the encoder is shared); ``l0_present[θ]``: active features per token
  that are *present* at ``θ`` (decoder norm at least the emergence fraction of the feature's maximum), the features
  that actually write into snapshot ``θ``'s reconstruction;
* ``dead_fraction``: features active on no held-out token; ``absent_fraction[θ]``: features not present at ``θ``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from saetrack.analysis.evolution import decoder_norm_matrix, present_mask
from saetrack.crosscoder.model import Crosscoder

__all__ = [
    "crosscoder_metrics",
]


def crosscoder_metrics(
    model: Crosscoder,
    heldout: np.ndarray,
    scales: np.ndarray,
    *,
    present_fraction: float,
    offsets: np.ndarray | None = None,
    batch_size: int = 1024,
    device: str = "cpu",
) -> dict[str, Any]:
    """Per-snapshot quality of ``model`` on held-out activations ``heldout`` ``[n, T, d]`` (model units), normalised
    as in training: ``(x - offsets) / scales`` (``offsets`` ``[T, d]``, none for the uncentred normalisation).

    Returns ``explained_variance [T]``, ``l0``, ``l0_present [T]``, ``dead_fraction``, ``absent_fraction [T]`` (lists
    for JSON) and ``fire_counts [F]`` (an array: held-out tokens on which each feature fired). Sums in float64.
    """
    n, t, d = heldout.shape
    if (t, d) != (model.shape.n_snapshots, model.shape.d_model):
        raise ValueError(
            f"held-out activations are [n, {t}, {d}]; the crosscoder reads [n, {model.shape.n_snapshots}, "
            f"{model.shape.d_model}]."
        )
    norms = decoder_norm_matrix(model.W_dec.detach().cpu().numpy())
    present = torch.as_tensor(present_mask(norms, present_fraction), dtype=torch.float64)
    scale_t = torch.as_tensor(scales, dtype=torch.float32, device=device)
    offset_t = torch.as_tensor(np.zeros((t, d)) if offsets is None else offsets, dtype=torch.float32, device=device)
    sq_err = torch.zeros(t, dtype=torch.float64)
    x_sum = torch.zeros(t, d, dtype=torch.float64)
    x_sq = torch.zeros(t, dtype=torch.float64)
    fire = torch.zeros(model.shape.d_sae, dtype=torch.float64)
    l0_present = torch.zeros(t, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, n, batch_size):
            x = torch.as_tensor(np.array(heldout[start : start + batch_size], dtype=np.float32), device=device)
            x = (x - offset_t) / scale_t[None, :, None]
            f = model.encode(x)
            x_hat = model.decode(f)
            sq_err += (x_hat - x).double().pow(2).sum(dim=(0, 2)).cpu()
            x64 = x.double().cpu()
            x_sum += x64.sum(0)
            x_sq += x64.pow(2).sum(dim=(0, 2))
            active = (f > 0).double().cpu()
            fire += active.sum(0)
            l0_present += (active @ present).sum(0)
    total_var = x_sq - x_sum.pow(2).sum(-1) / n
    return {
        "n_tokens": n,
        "explained_variance": (1 - sq_err / total_var).tolist(),
        "l0": float(fire.sum() / n),
        "l0_present": (l0_present / n).tolist(),
        "dead_fraction": float((fire == 0).double().mean()),
        "absent_fraction": (1 - present.mean(0)).tolist(),
        "fire_counts": fire.numpy(),
    }
