"""Saving and reloading SAEs in SAELens' on-disk format, with each link's own hyperparameters re-applied."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sae_lens import SAE, TrainingSAE
from safetensors.numpy import load_file
from safetensors.torch import save_file

from saetrack.config import ChainConfig
from saetrack.sae.model import LinkSAE, check_hyperparameters, with_link_hyperparameters
from saetrack.store import atomic_dir, file_sha256

__all__ = [
    "SAE_CFG_FILE",
    "SAE_SPARSITY_FILE",
    "SAE_WEIGHTS_FILE",
    "load_firing_frequency",
    "load_training_sae",
    "save_sae",
]


#: Added to the firing frequency before its log10 is stored (SAELens' convention: a dead feature's log10 is -10).
SPARSITY_EPSILON = 1e-10

#: File names of SAELens' on-disk format.
SAE_CFG_FILE = "cfg.json"


SAE_WEIGHTS_FILE = "sae_weights.safetensors"


SAE_SPARSITY_FILE = "sparsity.safetensors"


def save_sae(
    sae: SAE[Any],
    folder: str | os.PathLike[str],
    *,
    feature_sparsity: torch.Tensor | np.ndarray | None = None,
) -> dict[str, str]:
    """Save ``sae`` in SAELens format (``cfg.json``, ``sae_weights.safetensors``) atomically; return file hashes.

    The folder is written under a temporary name and renamed into place (replacing an existing one).
    A training SAE is saved with its full training config (including ``l1_coefficient`` and
    ``decoder_norm``); ``sae_lens.SAE.load_from_disk`` reads it for inference. A BatchTopK SAE is saved as SAELens
    saves it for inference, a JumpReLU SAE with its running threshold for every feature. ``feature_sparsity``
    (per-feature firing frequency) is written as SAELens' ``sparsity.safetensors`` (log10 of the frequency).
    Returns ``{file name: sha256}``.
    """
    with atomic_dir(folder) as tmp:
        sae.save_model(tmp)
        if feature_sparsity is not None:
            freq = torch.as_tensor(np.asarray(feature_sparsity), dtype=torch.float32).cpu()
            if freq.shape != (sae.cfg.d_sae,):
                raise ValueError(f"feature_sparsity has shape {tuple(freq.shape)}, expected ({sae.cfg.d_sae},).")
            save_file({"sparsity": torch.log10(freq + SPARSITY_EPSILON)}, str(tmp / SAE_SPARSITY_FILE))
    final = Path(folder)
    return {p.name: file_sha256(p) for p in sorted(final.iterdir()) if p.is_file()}


def load_firing_frequency(folder: str | os.PathLike[str]) -> np.ndarray | None:
    """Each feature's firing frequency ``[d_sae]`` (float64, in [0, 1]) as :func:`save_sae` stored it in SAELens'
    ``sparsity.safetensors`` (log10 of the frequency, the density of App. A.1); ``None`` when the folder has none."""
    path = Path(folder) / SAE_SPARSITY_FILE
    if not path.is_file():
        return None
    return np.clip(10.0 ** load_file(str(path))["sparsity"].astype(np.float64) - SPARSITY_EPSILON, 0.0, 1.0)


def load_training_sae(
    folder: str | os.PathLike[str],
    chain: ChainConfig,
    *,
    l1_coefficient: float | None = None,
    device: str = "cpu",
) -> LinkSAE:
    """Reload a saved SAE for further training, with *this* link's hyperparameters re-applied.

    SAELens' ``TrainingSAE.load_from_disk`` restores the saved weights, but an SAE saved for inference
    comes back with ``l1_coefficient = 1.0``; the weights are therefore copied into a fresh
    training SAE of ``chain.architecture`` built from ``chain`` and the sparsity coefficient ``l1_coefficient``
    (default ``chain.l1_coefficient``), and :func:`check_hyperparameters` verifies the result. A BatchTopK link,
    saved as SAELens' JumpReLU, comes back as a BatchTopK training SAE with its running threshold.
    """
    path = Path(folder)
    for name in (SAE_CFG_FILE, SAE_WEIGHTS_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path} holds no SAELens SAE: {name} is missing.")
    # SAELens' training configs rewrite metadata.training_architecture on construction, so a BatchTopK link (saved as
    # JumpReLU, marked in that field) is read back as SAELens' inference SAE, which keeps the mark.
    reader = SAE if chain.architecture == "batchtopk" else TrainingSAE
    loaded = reader.load_from_disk(path, device="cpu")
    sae = with_link_hyperparameters(loaded, chain, l1_coefficient=l1_coefficient, device=device)
    check_hyperparameters(sae, chain, l1_coefficient=l1_coefficient)
    return sae
