"""Recurrent initialisation (Sec. 3.2.2): SAE[k] starts from SAE[k-1]'s weights with link k's own hyperparameters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sae_lens import SAE

from saetrack.config import ChainConfig
from saetrack.sae.model import LinkSAE, with_link_hyperparameters

__all__ = [
    "recurrent_init",
]


def recurrent_init(
    previous_sae: SAE[Any],
    chain: ChainConfig,
    *,
    l1_coefficient: float | None = None,
    device: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> LinkSAE:
    """Recurrent initialisation (Sec. 3.2.2): SAE[k] starts as a copy of SAE[k-1] = ``previous_sae``.

    Theorem 3.1 (Eq. 7, training-step continuity) is its motivation: activations move little between nearby
    checkpoints, so the previous link's dictionary is a good start for the next.

    Every parameter and buffer is copied (for ``ChainConfig.architecture`` ``"jumprelu"`` its thresholds, for
    ``"batchtopk"`` its running threshold). The copy takes every hyperparameter from link k — ``chain`` and the
    sparsity coefficient ``l1_coefficient`` (default
    ``chain.l1_coefficient``) — never from ``previous_sae``'s config (see
    :func:`~saetrack.sae.model.with_link_hyperparameters`); ``metadata`` names link k's own checkpoint.
    """
    return with_link_hyperparameters(
        previous_sae, chain, l1_coefficient=l1_coefficient, device=device, metadata=metadata
    )
