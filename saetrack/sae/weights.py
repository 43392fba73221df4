"""The analysis view of a trained SAE.

Its weights as plain tensors, feature activations (Eq. 2), decoder directions and reconstructions (Eq. 1).

Feature activations follow the link's architecture (``ChainConfig.architecture``), as SAELens' inference SAEs encode:
``"standard"``: ``ReLU(h)`` with ``h = (x - c b_dec) @ W_enc + b_enc`` (Eq. 2); ``"topk"``: the ``k`` largest of
``h`` per token through a ReLU, the rest zero (SAELens' ``TopK``); ``"jumprelu"``: ``ReLU(h) [h > threshold]`` per
feature; ``"batchtopk"``: in a training SAE the running threshold as JumpReLU's (a saved BatchTopK link *is* a
JumpReLU SAE, as SAELens saves it). With ``rescale_acts_by_decoder_norm`` (TopK and BatchTopK links of
``decoder_norm="weighted"``) ``h`` is multiplied by the decoder row norms before the selection and
:func:`decode` divides the activations by them again, as SAELens does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sae_lens import SAE
from sae_lens.saes.topk_sae import TopK
from safetensors import safe_open
from safetensors.torch import load_file

from saetrack.sae.io import SAE_CFG_FILE, SAE_WEIGHTS_FILE
from saetrack.store import StaleArtifactError

__all__ = [
    "SAELike",
    "SAEWeights",
    "decode",
    "decoder_directions",
    "feature_activations",
    "load_decoder",
]


#: Encodings :func:`feature_activations` knows (a BatchTopK SAE encodes as ``"jumprelu"`` at inference).
ENCODINGS = ("standard", "topk", "jumprelu")


@dataclass(frozen=True)
class SAEWeights:
    """The four tensors of an SAE in SAELens' layout, ``c`` of Eq. 2, and its encoding (module docstring):
    ``architecture`` (one of :data:`ENCODINGS`), TopK's ``k``, JumpReLU's ``threshold`` ``[d_sae]`` and whether the
    pre-activations are rescaled by the decoder norms (``rescale_acts_by_decoder_norm``)."""

    W_enc: torch.Tensor  # [d_in, d_sae]
    b_enc: torch.Tensor  # [d_sae]
    W_dec: torch.Tensor  # [d_sae, d_in]
    b_dec: torch.Tensor  # [d_in]
    apply_b_dec_to_input: bool = True
    architecture: str = "standard"
    k: int | None = None
    threshold: torch.Tensor | None = None  # [d_sae]
    rescale_acts_by_decoder_norm: bool = False

    def __post_init__(self) -> None:
        if self.architecture not in ENCODINGS:
            raise ValueError(f"architecture = {self.architecture!r} is invalid: one of {', '.join(ENCODINGS)}.")
        if self.architecture == "topk" and self.k is None:
            raise ValueError("a 'topk' SAE needs k.")
        if self.architecture == "jumprelu" and self.threshold is None:
            raise ValueError("a 'jumprelu' SAE needs its threshold.")

    @classmethod
    def from_sae(cls, sae: SAE[Any]) -> SAEWeights:
        """The (detached) weights and encoding of a SAELens SAE (standard, TopK, BatchTopK or JumpReLU)."""
        cfg, architecture = sae.cfg, sae.cfg.architecture()
        threshold = getattr(sae, "threshold", None)
        if architecture == "batchtopk":  # SAELens' inference rule: its running threshold, as JumpReLU's
            architecture, threshold = "jumprelu", sae.topk_threshold.expand(cfg.d_sae)
        return cls(
            W_enc=sae.W_enc.detach(),
            b_enc=sae.b_enc.detach(),
            W_dec=sae.W_dec.detach(),
            b_dec=sae.b_dec.detach(),
            apply_b_dec_to_input=bool(cfg.apply_b_dec_to_input),
            architecture=architecture,
            k=getattr(cfg, "k", None) if architecture == "topk" else None,
            threshold=None if threshold is None else threshold.detach(),
            rescale_acts_by_decoder_norm=bool(getattr(cfg, "rescale_acts_by_decoder_norm", False)),
        )

    @classmethod
    def load(cls, folder: str | os.PathLike[str], device: str = "cpu") -> SAEWeights:
        """Read the weights of a SAELens-format folder without building an SAE module."""
        path = Path(folder)
        cfg = _raw_weights_config(path)
        tensors = load_file(str(path / SAE_WEIGHTS_FILE), device=device)
        architecture = cfg.get("architecture", "standard")
        return cls(
            W_enc=tensors["W_enc"],
            b_enc=tensors["b_enc"],
            W_dec=tensors["W_dec"],
            b_dec=tensors["b_dec"],
            apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
            architecture=architecture,
            k=cfg.get("k") if architecture == "topk" else None,
            threshold=tensors.get("threshold"),
            rescale_acts_by_decoder_norm=bool(cfg.get("rescale_acts_by_decoder_norm", False)),
        )


def _raw_weights_config(path: Path) -> dict[str, Any]:
    """The SAELens config in ``path``; refused for an SAE trained with activation normalisation."""
    cfg = json.loads((path / SAE_CFG_FILE).read_text())
    if cfg.get("normalize_activations", "none") != "none":
        raise StaleArtifactError(
            f"{path}: normalize_activations = {cfg.get('normalize_activations')!r}; the raw weights of an "
            "SAE trained with activation normalisation do not act on raw activations (SAE-Track needs 'none')."
        )
    return cfg


def load_decoder(folder: str | os.PathLike[str], device: str = "cpu") -> torch.Tensor:
    """``W_dec`` ``[F, d]`` of the SAELens-format SAE in ``folder``, read alone from its safetensors file (the
    encoder and biases are not read) onto ``device``; refused, like :meth:`SAEWeights.load`, for an SAE trained with
    activation normalisation."""
    path = Path(folder)
    _raw_weights_config(path)
    with safe_open(str(path / SAE_WEIGHTS_FILE), framework="pt", device=device) as weights:
        return weights.get_tensor("W_dec")


SAELike = SAE[Any] | SAEWeights | str | os.PathLike[str]


def _as_weights(sae_or_weights: SAELike) -> SAEWeights:
    if isinstance(sae_or_weights, SAEWeights):
        return sae_or_weights
    if isinstance(sae_or_weights, SAE):
        return SAEWeights.from_sae(sae_or_weights)
    if isinstance(sae_or_weights, str | os.PathLike):
        return SAEWeights.load(sae_or_weights)
    raise TypeError(f"expected a SAELens SAE, SAEWeights or a folder, got {type(sae_or_weights).__name__}.")


@torch.no_grad()
def feature_activations(sae_or_weights: SAELike, x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Feature activations ``f(x) = ReLU((x - c * b_dec) @ W_enc + b_enc)`` (Eq. 2), shape ``[..., d_sae]``.

    The encoding of the SAE's architecture (module docstring): TopK keeps the ``k`` largest per token, JumpReLU (and
    BatchTopK) zero what is not above the threshold. ``x`` (``[..., d_in]``, any float dtype, array or tensor) is cast
    to the weights' dtype and device.
    """
    w = _as_weights(sae_or_weights)
    if isinstance(x, np.ndarray) and not x.flags.writeable:  # a read-only memory map: torch wants writable memory
        x = np.array(x)
    xt = torch.as_tensor(x)
    xt = xt.to(device=w.W_enc.device, dtype=w.W_enc.dtype)
    if xt.shape[-1] != w.W_enc.shape[0]:
        raise ValueError(f"x has last dimension {xt.shape[-1]}, the SAE expects d_in = {w.W_enc.shape[0]}.")
    if w.apply_b_dec_to_input:
        xt = xt - w.b_dec
    hidden = xt @ w.W_enc + w.b_enc
    if w.architecture == "standard":
        return torch.relu(hidden)
    if w.rescale_acts_by_decoder_norm:
        hidden = hidden * w.W_dec.norm(dim=-1)
    if w.architecture == "topk":
        return TopK(int(w.k or 0))(hidden)
    threshold = w.threshold.to(hidden.dtype) if w.threshold is not None else hidden.new_zeros(())
    return hidden.relu() * (hidden > threshold).to(hidden.dtype)


@torch.no_grad()
def decoder_directions(sae_or_weights: SAELike) -> torch.Tensor:
    """Unit-normalised decoder directions ``W_dec[i] / ||W_dec[i]||``, shape ``[d_sae, d_in]``.

    Row ``i`` is column ``i`` of the paper's ``W^dec`` (Eq. 1), scaled to unit length.
    """
    w_dec = _as_weights(sae_or_weights).W_dec
    return w_dec / w_dec.norm(dim=1, keepdim=True).clamp(min=1e-12)


def decode(sae_or_weights: SAELike, feature_acts: torch.Tensor) -> torch.Tensor:
    """Reconstruction ``x_hat = f @ W_dec + b_dec`` (Eq. 1) from feature activations ``[..., d_sae]`` (divided by the
    decoder row norms first when the SAE rescales its pre-activations by them, as SAELens' TopK decode does)."""
    w = _as_weights(sae_or_weights)
    acts = feature_acts.to(w.W_dec.dtype)
    if w.rescale_acts_by_decoder_norm:
        acts = acts * (1 / w.W_dec.norm(dim=-1))
    return acts @ w.W_dec + w.b_dec
