"""The cross-snapshot crosscoder of *Evolution of Concepts in Language Model Pre-Training* (Ge et al., 2025).

One dictionary over ``T`` training checkpoints (snapshots) of one model at one hook. For a token, the input is the
stack of its activations at every snapshot, ``x = (x^1, ..., x^T)`` with ``x^θ in R^d``:

* encoder (shared, reads all snapshots at once): ``f(x) = JumpReLU_τ(Σ_θ W_enc^θ x^θ + b_enc)``;
* decoder (one per snapshot): ``x̂^θ = W_dec^θ f(x) + b_dec^θ``;
* loss: ``Σ_θ ||x^θ - x̂^θ||² + λ Σ_i Ω(f_i(x) Σ_θ ||W_dec,i^θ||)`` with ``Ω = tanh(c ·)`` (Anthropic's sparsity
  penalty, which that paper uses), so a feature absent from a snapshot can lower its penalty by shrinking that
  snapshot's decoder norm. ``||W_dec,i^θ||`` then measures feature ``i``'s presence at snapshot ``θ``.

The JumpReLU and its straight-through threshold gradient are SAELens' own autograd functions
(``sae_lens.saes.jumprelu_sae.JumpReLU``, rectangle kernel of width ``bandwidth``), the same ones SAELens trains its
JumpReLU SAEs with; the threshold is learned through ``log_threshold``. SAELens has no multi-snapshot architecture,
so the encoder and decoder shapes and the loss live here (see docs/crosscoder.md for why not
dictionary_learning's ``CrossCoder``: not on PyPI, ReLU + L1 only).

Shapes: ``W_enc [T, d, F]``, ``b_enc [F]``, ``log_threshold [F]``, ``W_dec [F, T, d]``, ``b_dec [T, d]``; a batch
``x`` is ``[B, T, d]``. Inputs are expected normalised per snapshot (``saetrack.crosscoder.activations``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from sae_lens.saes.jumprelu_sae import JumpReLU
from torch import nn

from saetrack.crosscoder.sparse import jumprelu_decode, sparse_linear, squared_error

__all__ = [
    "Crosscoder",
    "CrosscoderLoss",
    "CrosscoderShape",
    "pre_act_loss",
]


def pre_act_loss(
    coefficient: float, threshold: torch.Tensor, pre: torch.Tensor, dead: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """Anthropic's pre-activation loss over the dead features, ``c mean_b Σ_i ReLU(τ_i - pre_bi) dead_i w_i`` (SAELens'
    ``calculate_pre_act_loss``), computed whether or not any feature is dead: SAELens first asks ``dead.any()``, a
    host sync every step on a GPU; with no dead feature every term is zero, so the loss and its gradients are the
    same."""
    return coefficient * ((threshold - pre).relu() * dead * weight).sum(dim=-1).mean()


@dataclass(frozen=True)
class CrosscoderShape:
    """The sizes and fixed hyperparameters of a crosscoder (everything needed to rebuild it from its weights)."""

    n_snapshots: int
    d_model: int
    d_sae: int
    #: Width of the rectangle kernel of the threshold's straight-through gradient (SAELens' ``bandwidth``).
    bandwidth: float = 0.05
    #: Initial threshold of every feature (on the pre-activation scale of unit-norm snapshot inputs).
    initial_threshold: float = 0.05
    #: Initial norm of each feature's decoder row at each snapshot.
    initial_decoder_norm: float = 0.1

    def __post_init__(self) -> None:
        for name in ("n_snapshots", "d_model", "d_sae"):
            if getattr(self, name) < 1:
                raise ValueError(f"crosscoder {name} = {getattr(self, name)} is invalid: must be >= 1.")
        for name in ("bandwidth", "initial_threshold", "initial_decoder_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"crosscoder {name} = {getattr(self, name)} is invalid: must be > 0.")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields."""
        return asdict(self)


@dataclass(frozen=True)
class CrosscoderLoss:
    """The terms of one training step's loss (batch means)."""

    total: torch.Tensor
    mse: torch.Tensor  # Σ_θ ||x^θ - x̂^θ||², mean over tokens
    sparsity: torch.Tensor  # Σ_i tanh(c f_i Σ_θ ||W_dec,i^θ||), mean over tokens (before λ)
    l0: torch.Tensor  # active features per token, mean
    activations: torch.Tensor  # f(x) [B, F], detached (for firing counts)


class Crosscoder(nn.Module):
    """Shared-encoder, per-snapshot-decoder JumpReLU crosscoder (Ge et al. 2025, Sec. 3; see the module docstring)."""

    def __init__(self, shape: CrosscoderShape, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.shape = shape
        t, d, f = shape.n_snapshots, shape.d_model, shape.d_sae
        # decoder rows: random directions, norm initial_decoder_norm at every snapshot; encoder = decoder transposed,
        # scaled by 1/T so that a feature's pre-activation sums T snapshots' projections to the scale of one
        w_dec = torch.randn(f, t, d, generator=generator)
        w_dec = w_dec / w_dec.norm(dim=-1, keepdim=True) * shape.initial_decoder_norm
        self.W_dec = nn.Parameter(w_dec)
        self.W_enc = nn.Parameter(w_dec.permute(1, 2, 0).clone() / (math.sqrt(t) * shape.initial_decoder_norm))
        self.b_enc = nn.Parameter(torch.zeros(f))
        self.b_dec = nn.Parameter(torch.zeros(t, d))
        self.log_threshold = nn.Parameter(torch.full((f,), math.log(shape.initial_threshold)))

    @property
    def threshold(self) -> torch.Tensor:
        """The learned JumpReLU threshold τ of every feature, ``[F]``."""
        return self.log_threshold.exp()

    def _encoder_operands(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` flattened and the encoder matrix it multiplies: ``[B, T d] @ [T d, F]``; for ``x`` ``[B, 1, d]``, one
        activation at every snapshot, ``[B, d] @ Σ_θ W_enc^θ`` (the same product, ``T`` times cheaper)."""
        t, d = self.shape.n_snapshots, self.shape.d_model
        if x.ndim != 3 or x.shape[2] != d or x.shape[1] not in (t, 1):
            raise ValueError(
                f"crosscoder input has shape {tuple(x.shape)}, expected [batch, {t}, {d}] (or [batch, 1, {d}]: the "
                "same activation at every snapshot)."
            )
        if x.shape[1] == 1 and t > 1:
            return x[:, 0], self.W_enc.sum(dim=0)
        return x.flatten(1), self.W_enc.flatten(0, 1)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """``Σ_θ W_enc^θ x^θ + b_enc``, ``[B, F]``: the shared encoder reads every snapshot of the token (``x`` is
        ``[B, T, d]``, or ``[B, 1, d]`` for a token whose activation is the same at every snapshot)."""
        flat, w_enc = self._encoder_operands(x)
        return flat @ w_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations ``f(x) = JumpReLU_τ(pre-activation)``, ``[B, F]`` (SAELens' JumpReLU function)."""
        return JumpReLU.apply(self.pre_activation(x), self.threshold, self.shape.bandwidth, False)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Per-snapshot reconstructions ``x̂^θ = W_dec^θ f + b_dec^θ``, ``[B, T, d]``."""
        out = f @ self.W_dec.flatten(1)
        return out.view(f.shape[0], self.shape.n_snapshots, self.shape.d_model) + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction of ``x`` ``[B, T, d]``."""
        return self.decode(self.encode(x))

    def decoder_norms(self) -> torch.Tensor:
        """``||W_dec,i^θ||`` for every feature and snapshot, ``[F, T]``: feature ``i``'s presence at snapshot ``θ``."""
        return self.W_dec.norm(dim=-1)

    def loss(
        self,
        x: torch.Tensor,
        sparsity_coefficient: float,
        tanh_scale: float,
        *,
        pre_act_coefficient: float = 0.0,
        dead: torch.Tensor | None = None,
        sparse: bool = False,
    ) -> CrosscoderLoss:
        """The training loss of Ge et al. (2025): ``Σ_θ ||x^θ - x̂^θ||² + λ Σ_i tanh(c f_i(x) Σ_θ ||W_dec,i^θ||)``.

        Both terms are means over the batch's tokens; ``λ`` is ``sparsity_coefficient``, ``c`` is ``tanh_scale``.
        With ``pre_act_coefficient > 0`` and a boolean ``dead`` mask ``[F]``, Anthropic's pre-activation loss
        ``Σ_i ReLU(τ_i - pre_i) Σ_θ ||W_dec,i^θ||`` over the dead features is added (SAELens'
        ``calculate_pre_act_loss``): the only gradient that reaches a feature whose pre-activation never crosses
        its threshold, so features killed early in training can come back.

        ``x`` ``[B, 1, d]`` stands for the same activation at every snapshot (a null of notebook 06): the loss and
        gradients of ``x`` repeated ``T`` times, with the encoder's work divided by ``T``.

        ``sparse``: the same loss and gradients computed over the code's active entries only
        (:mod:`saetrack.crosscoder.sparse`; equal to the dense step up to the order of summation, and faster when the
        code is a few percent dense, as in training); ``x`` then gets no gradient.
        """
        if sparse:
            pre = sparse_linear(*self._encoder_operands(x), self.b_enc)
            f, decoded = jumprelu_decode(pre, self.threshold, self.W_dec.flatten(1), self.shape.bandwidth)
            mse = squared_error(decoded, self.b_dec, x)
        else:
            pre = self.pre_activation(x)
            f = JumpReLU.apply(pre, self.threshold, self.shape.bandwidth, False)
            mse = (self.decode(f) - x).pow(2).sum(dim=(1, 2)).mean()
        weight = self.decoder_norms().sum(dim=1)
        sparsity = torch.tanh(tanh_scale * f * weight).sum(dim=1).mean()
        total = mse + sparsity_coefficient * sparsity
        pre_act = torch.zeros((), device=x.device)
        if pre_act_coefficient > 0 and dead is not None:
            pre_act = pre_act_loss(pre_act_coefficient, self.threshold, pre, dead, weight)
            total = total + pre_act
        l0 = (f > 0).float().sum(dim=1).mean()
        return CrosscoderLoss(total, mse.detach(), sparsity.detach(), l0.detach(), f.detach())
