"""Quality metrics of one SAE link on held-out activations of its own checkpoint.

Conventions (``x`` a held-out activation ``[d_in]``, ``x_hat`` its reconstruction, ``f`` the features):

* ``mse`` — per element: ``mean over tokens and dimensions of (x - x_hat)^2`` (SAELens' evaluation MSE);
  ``mse_per_token`` — ``mean over tokens of ||x - x_hat||^2`` (the first term of Eq. 3, SAELens' training
  ``mse_loss``); ``mse_per_token = d_in * mse``.
* ``explained_variance`` — ``1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2``, sums over the whole set
  (not a mean of per-batch ratios), with ``mean(x)`` the held-out mean.
* ``l0`` — mean number of active features per token; ``l1`` — mean ``sum_i f_i(x)`` per token (Eq. 5's
  L1; the norm-weighted L1 of Eq. 4 is ``l1_weighted``).
* ``dead_fraction`` — features never active on the held-out set; ``dense_fraction`` — features active on
  more than ``dense_threshold`` of the tokens.

:func:`ce_loss_recovered` splices the reconstruction into a language model and reports how much of the
cross-entropy gap between the clean model and zero-ablation the SAE recovers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from sae_lens import SAE
from tqdm import tqdm

__all__ = [
    "ArrayLike",
    "ce_loss_recovered",
    "feature_frequencies",
    "reconstruction_metrics",
]


ArrayLike = np.ndarray | torch.Tensor


def _batches(x: ArrayLike, batch_size: int, device: torch.device, dtype: torch.dtype) -> Iterator[torch.Tensor]:
    if batch_size <= 0:
        raise ValueError(f"batch_size = {batch_size} is invalid: must be > 0.")
    for start in range(0, int(x.shape[0]), batch_size):
        chunk = x[start : start + batch_size]
        if not isinstance(chunk, torch.Tensor):
            chunk = np.ascontiguousarray(chunk)
            if not chunk.flags.writeable:  # a read-only memory map (the activation cache): torch cannot wrap it
                chunk = chunk.copy()  # one batch, about to be copied to the device anyway
        tensor = chunk if isinstance(chunk, torch.Tensor) else torch.from_numpy(chunk)
        yield tensor.to(device=device, dtype=dtype)


def _check_input(sae: SAE[Any], x: ArrayLike) -> None:
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] != sae.cfg.d_in:
        raise ValueError(f"x has shape {tuple(x.shape)}, expected a non-empty [n_tokens, d_in={sae.cfg.d_in}].")


@torch.no_grad()
def reconstruction_metrics(
    sae: SAE[Any],
    x: ArrayLike,
    *,
    batch_size: int = 4096,
    dense_threshold: float = 0.1,
    progress: bool = False,
) -> dict[str, float]:
    """Reconstruction and sparsity of ``sae`` on held-out activations ``x`` ``[n_tokens, d_in]``.

    Returns ``mse``, ``mse_per_token``, ``explained_variance``, ``l0``, ``l1``, ``l1_weighted``,
    ``dead_fraction``, ``dense_fraction`` and ``n_tokens`` (see the module docstring for definitions).
    Sums are accumulated in float64, so the result does not depend on ``batch_size`` beyond rounding.
    """
    _check_input(sae, x)
    if not 0 <= dense_threshold < 1:
        raise ValueError(f"dense_threshold = {dense_threshold} is invalid: must lie in [0, 1).")
    was_training = sae.training
    sae.eval()
    d_in, d_sae = sae.cfg.d_in, sae.cfg.d_sae
    dec_norms = sae.W_dec.norm(dim=1).double()
    zero = torch.zeros((), dtype=torch.float64, device=sae.device)
    sq_err, l0_sum, l1_sum, l1w_sum = zero.clone(), zero.clone(), zero.clone(), zero.clone()
    x_sum = torch.zeros(d_in, dtype=torch.float64, device=sae.device)
    x_sq_sum = torch.zeros(d_in, dtype=torch.float64, device=sae.device)
    fire_counts = torch.zeros(d_sae, dtype=torch.float64, device=sae.device)
    n = int(x.shape[0])
    batches = _batches(x, batch_size, sae.device, sae.dtype)
    for batch in tqdm(batches, total=-(-n // batch_size), desc="reconstruction metrics", disable=not progress):
        feats = sae.encode(batch)
        recon = sae.decode(feats)
        b64 = batch.double()
        sq_err += (b64 - recon.double()).pow(2).sum()
        x_sum += b64.sum(0)
        x_sq_sum += b64.pow(2).sum(0)
        active = feats > 0
        fire_counts += active.sum(0).double()
        l0_sum += active.sum()
        f64 = feats.double()
        l1_sum += f64.sum()
        l1w_sum += (f64 @ dec_norms).sum()
    if was_training:
        sae.train()
    mean = x_sum / n
    total_var = float((x_sq_sum - n * mean.pow(2)).sum())
    err = float(sq_err)
    freq = fire_counts / n
    return {
        "n_tokens": n,
        "mse": err / (n * d_in),
        "mse_per_token": err / n,
        "explained_variance": 1.0 - err / total_var if total_var > 0 else float("nan"),
        "l0": float(l0_sum) / n,
        "l1": float(l1_sum) / n,
        "l1_weighted": float(l1w_sum) / n,
        "dead_fraction": float((fire_counts == 0).double().mean()),
        "dense_fraction": float((freq > dense_threshold).double().mean()),
        "dense_threshold": dense_threshold,
    }


@torch.no_grad()
def feature_frequencies(sae: SAE[Any], x: ArrayLike, *, batch_size: int = 4096) -> np.ndarray:
    """Fraction of the tokens of ``x`` on which each feature is active (``f_i(x) > 0``), shape ``[d_sae]``."""
    _check_input(sae, x)
    counts = torch.zeros(sae.cfg.d_sae, dtype=torch.float64, device=sae.device)
    for batch in _batches(x, batch_size, sae.device, sae.dtype):
        counts += (sae.encode(batch) > 0).sum(0).double()
    return (counts / int(x.shape[0])).cpu().numpy()


@torch.no_grad()
def ce_loss_recovered(
    model: Any,
    sae: SAE[Any],
    tokens: torch.Tensor | np.ndarray,
    hook_name: str,
    *,
    batch_size: int = 16,
    progress: bool = False,
    min_gap: float = 0.05,
) -> dict[str, float]:
    """Cross-entropy of ``model`` (a ``transformer_lens.HookedTransformer``) clean, with the SAE, and ablated.

    For contexts ``tokens`` ``[n, ctx]`` it computes the next-token loss averaged over all predicted
    positions of all contexts: ``clean_loss``; ``sae_loss`` with the activation at ``hook_name`` replaced
    by the SAE's reconstruction at every position; ``zero_loss`` with it replaced by zeros; and
    ``ce_recovered = (zero_loss - sae_loss) / (zero_loss - clean_loss)`` (1 = the SAE loses nothing,
    0 = as bad as deleting the activation), plus ``ce_delta = sae_loss - clean_loss`` and
    ``ablation_gap = zero_loss - clean_loss``. When the gap is below ``min_gap`` nats (an untrained model,
    whose loss barely depends on the activation) the ratio divides noise by noise: ``ce_recovered`` is then
    NaN and only the raw losses are meaningful.
    """
    toks = torch.as_tensor(np.asarray(tokens) if isinstance(tokens, np.ndarray) else tokens, dtype=torch.long)
    if toks.ndim != 2 or toks.shape[0] == 0 or toks.shape[1] < 2:
        raise ValueError(f"tokens have shape {tuple(toks.shape)}, expected [n_contexts, context_length >= 2].")
    if hook_name not in model.hook_dict:
        raise ValueError(f"hook_name = {hook_name!r} is not a hook of the model.")
    if batch_size <= 0:
        raise ValueError(f"batch_size = {batch_size} is invalid: must be > 0.")
    model_device = next(model.parameters()).device
    was_training = (model.training, sae.training)
    model.eval()
    sae.eval()

    def splice(act: torch.Tensor, hook: Any) -> torch.Tensor:
        recon = sae.decode(sae.encode(act.to(device=sae.device, dtype=sae.dtype)))
        return recon.to(device=act.device, dtype=act.dtype)

    def zero(act: torch.Tensor, hook: Any) -> torch.Tensor:
        return torch.zeros_like(act)

    sums = {"clean_loss": 0.0, "sae_loss": 0.0, "zero_loss": 0.0}
    count = 0
    starts = range(0, toks.shape[0], batch_size)
    for start in tqdm(starts, desc="CE loss recovered", disable=not progress):
        batch = toks[start : start + batch_size].to(model_device)
        clean = model(batch, return_type="loss", loss_per_token=True)
        with_sae = model.run_with_hooks(batch, return_type="loss", loss_per_token=True, fwd_hooks=[(hook_name, splice)])
        ablated = model.run_with_hooks(batch, return_type="loss", loss_per_token=True, fwd_hooks=[(hook_name, zero)])
        sums["clean_loss"] += float(clean.double().sum())
        sums["sae_loss"] += float(with_sae.double().sum())
        sums["zero_loss"] += float(ablated.double().sum())
        count += clean.numel()
    if was_training[0]:
        model.train()
    if was_training[1]:
        sae.train()
    result = {k: v / count for k, v in sums.items()}
    gap = result["zero_loss"] - result["clean_loss"]
    result["ablation_gap"] = gap
    result["ce_recovered"] = (result["zero_loss"] - result["sae_loss"]) / gap if abs(gap) >= min_gap else float("nan")
    result["ce_delta"] = result["sae_loss"] - result["clean_loss"]
    result["n_predictions"] = count
    return result
