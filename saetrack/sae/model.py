"""The paper's standard sparse autoencoder (Sec. 3.1, Eq. 1-5) as a SAELens training SAE.

SAE-Track's SAE is SAELens' ``standard`` architecture (``StandardTrainingSAE`` in sae_lens 6.54):

* encoder, Eq. 2: ``f(x) = ReLU((x - c * b_dec) @ W_enc + b_enc)`` with ``c = cfg.apply_b_dec_to_input``;
* decoder, Eq. 1: ``x_hat = f(x) @ W_dec + b_dec``;
* loss, Eq. 3: ``mean_x ||x - x_hat||^2 + lambda * L1``.

SAELens stores ``W_enc`` as ``[d_in, d_sae]`` and ``W_dec`` as ``[d_sae, d_in]`` (the transposes of the
paper's ``W^enc in R^{F x D}`` and ``W^dec in R^{D x F}``), so a feature's decoder direction is a *row*
of ``W_dec``.

The two L1 variants of the paper (``ChainConfig.decoder_norm``):

* ``"weighted"`` (Eq. 4): ``L1 = sum_i f_i(x) * ||W_dec[i]||``: SAELens 6's standard sparsity loss
  (same value and gradient; computed as ``f @ ||W_dec||``, see :meth:`SAETrackSAE.calculate_aux_loss`).
* ``"unit"`` (Eq. 5): unit-norm decoder rows and plain ``L1 = sum_i f_i(x)``. SAELens 6 has no
  unit-norm option (earlier versions had ``normalize_sae_decoder``; 6.54 has none), so :class:`SAETrackSAE`
  keeps the constraint through :class:`~saetrack.sae.unit_norm.UnitNormDecoder`, where all of it lives.

The subclass keeps SAELens' ``"standard"`` architecture name and file format, so every saved SAE loads
for inference with ``sae_lens.SAE.load_from_disk`` (as a ``StandardSAE``) and from the Hub with
``SAE.from_pretrained``. Activation normalisation is always off (SAELens would fold a scale into the
saved weights, which breaks comparisons of decoder directions along a chain).

The L1 trap (checked in sae_lens 6.54.12): an SAE saved by SAELens' runner (``save_inference_model``)
has no ``l1_coefficient`` in its ``cfg.json``, so ``TrainingSAE.load_from_disk`` rebuilds it with the
default ``l1_coefficient = 1.0``; and the runner's ``from_pretrained_path`` takes every SAE
hyperparameter from the saved file and ignores the new run's. :func:`with_link_hyperparameters` (behind both
:func:`~saetrack.sae.recurrent.recurrent_init` and :func:`~saetrack.sae.io.load_training_sae`) therefore always
builds the SAE from *this* link's :class:`~saetrack.config.ChainConfig` and verifies the result with
:func:`~saetrack.sae.io.check_hyperparameters`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from sae_lens import SAE, StandardTrainingSAE, StandardTrainingSAEConfig
from sae_lens.saes.sae import TrainStepInput, TrainStepOutput

from saetrack.config import ChainConfig, ConfigError
from saetrack.sae.architectures import (
    LINK_SAE_CLASSES,
    SAETrackBatchTopKSAE,
    SAETrackJumpReLUSAE,
    SAETrackTopKSAE,
    architecture_of,
    architecture_problems,
    link_config,
    link_state,
    set_metadata,
    sparsity_coefficient,
)
from saetrack.sae.step import standard_sae_step
from saetrack.sae.unit_norm import UnitNormDecoder, rows_unit_norm

__all__ = [
    "HyperparameterMismatchError",
    "LinkSAE",
    "SAETrackSAE",
    "SAETrackSAEConfig",
    "build_sae",
    "check_hyperparameters",
    "with_link_hyperparameters",
]

#: Held while an SAE is built from the global RNG (seeded inside ``fork_rng``): SAEs built in parallel threads (the
#: layers of ``cache.layers`` training side by side) would otherwise draw from each other's seeds.
_RNG_LOCK = threading.Lock()


@dataclass
class SAETrackSAEConfig(StandardTrainingSAEConfig):
    """SAELens' standard training config plus the paper's decoder-norm choice (Eq. 4 vs Eq. 5)."""

    #: ``"weighted"``: L1 weighted by decoder row norms (Eq. 4); ``"unit"``: unit-norm decoder, plain L1 (Eq. 5).
    decoder_norm: Literal["unit", "weighted"] = "weighted"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.decoder_norm not in ("unit", "weighted"):
            raise ConfigError(f"decoder_norm = {self.decoder_norm!r} is invalid: one of 'unit', 'weighted'.")
        if self.normalize_activations != "none":
            raise ConfigError(
                f"normalize_activations = {self.normalize_activations!r} is invalid: SAE-Track trains with "
                "activation normalisation off ('none'), since SAELens folds the scale into the saved weights."
            )


class SAETrackSAE(StandardTrainingSAE):
    """SAELens' ``StandardTrainingSAE`` with the optional unit-norm decoder constraint of Eq. 5."""

    cfg: SAETrackSAEConfig  # type: ignore[assignment]
    #: Use the fused training step (:mod:`saetrack.sae.step`) whenever it computes exactly what SAELens' forward
    #: pass would; ``False`` always takes SAELens' autograd path (benchmarks and tests compare the two).
    fused_step: bool = True
    #: Operand precision of the fused step's matrix products (``torch.bfloat16``: bf16 operands, float32 accumulation
    #: and output); ``None``: the SAE's own dtype. :func:`~saetrack.sae.training.train_sae` sets it for its step loop.
    matmul_dtype: torch.dtype | None = None

    def __init__(self, cfg: SAETrackSAEConfig, use_error_term: bool = False) -> None:
        super().__init__(cfg, use_error_term)
        #: Eq. 5's constraint (used only when ``unit_norm_decoder``); a plain object, not a registered submodule.
        self.unit_norm = UnitNormDecoder()

    @property
    def unit_norm_decoder(self) -> bool:
        """Whether decoder rows are kept at unit norm (Eq. 5) rather than weighting the L1 (Eq. 4)."""
        return self.cfg.decoder_norm == "unit"

    def normalize_decoder_(self) -> None:
        """Rescale every decoder row ``W_dec[i]`` to unit L2 norm in place (rows of norm 0 are left at 0)."""
        self.unit_norm.normalize_(self.W_dec)

    @torch.no_grad()
    def fold_decoder_norms_(self) -> None:
        """Move decoder row norms into the encoder (``W_enc[:, i] *= n_i``, ``b_enc[i] *= n_i``, ``W_dec[i] /= n_i``).

        The SAE computes the same reconstruction afterwards; used when a ``"weighted"`` SAE seeds a
        ``"unit"`` link.
        """
        self.fold_W_dec_norm()

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        """SAELens' training step (Eq. 3); with a unit-norm decoder, renormalise rows and project their gradient.

        When nothing needs SAELens' general path (L1, no hooks attached, no autocast, a ``[batch, d_in]``
        input) the losses and gradients come from :func:`saetrack.sae.step.standard_sae_step`: the same
        values in one autograd node with five matrix products instead of six. Otherwise SAELens' own forward
        pass runs, with :meth:`calculate_aux_loss` as the sparsity term.
        """
        if self.unit_norm_decoder:
            self.unit_norm.ensure_normalized(self.W_dec)  # usually a no-op: train_sae rescales after every step
        if not self.fused_step_applies(step_input.sae_in):
            if self.unit_norm_decoder:
                self.unit_norm.attach_gradient_projection(self.W_dec)
            return super().training_forward_pass(step_input)
        coefficient = step_input.coefficients["l1"]
        if self.unit_norm_decoder:
            l1_weights = self.W_dec.new_full((self.cfg.d_sae,), float(coefficient))  # Eq. 5
        else:
            l1_weights = coefficient * self.W_dec.norm(dim=1)  # Eq. 4; autograd carries it to W_dec
        mse_loss, l1_loss, feature_acts, hidden_pre, sae_out = standard_sae_step(
            step_input.sae_in.to(self.dtype),
            self.W_enc,
            self.b_enc,
            self.W_dec,
            self.b_dec,
            l1_weights,
            apply_b_dec=self.cfg.apply_b_dec_to_input,
            # unit rows: the step removes the gradient along each row, unless the hook of the other path does
            project_decoder_grad=self.unit_norm_decoder and not self.unit_norm.has_gradient_projection(self.W_dec),
            matmul_dtype=self.matmul_dtype,
        )
        return TrainStepOutput(
            sae_in=step_input.sae_in,
            sae_out=sae_out,
            feature_acts=feature_acts,
            hidden_pre=hidden_pre,
            loss=mse_loss + l1_loss,
            losses={"mse_loss": mse_loss, "l1_loss": l1_loss},
        )

    def fused_step_applies(self, sae_in: torch.Tensor) -> bool:
        """Whether :func:`standard_sae_step` computes exactly what SAELens' forward pass would for ``sae_in``."""
        hooked = any(
            point._forward_hooks or point._forward_pre_hooks
            for point in (self.hook_sae_input, self.hook_sae_acts_pre, self.hook_sae_acts_post, self.hook_sae_recons)
        )
        return (
            self.fused_step
            and self.cfg.lp_norm == 1.0
            and self.cfg.normalize_activations == "none"
            and not self.hook_z_reshaping_mode
            and not hooked
            and sae_in.ndim == 2
            and not _autocast_enabled(sae_in.device.type)
        )

    def calculate_aux_loss(
        self,
        step_input: TrainStepInput,
        feature_acts: torch.Tensor,
        hidden_pre: torch.Tensor,
        sae_out: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """The sparsity term ``lambda * mean_x L1``: Eq. 4 (norm-weighted) or Eq. 5 (plain, unit-norm decoder).

        ReLU features are non-negative, so ``L1 = sum_i f_i`` (Eq. 5) and ``L1 = f @ ||W_dec||`` (Eq. 4) equal
        SAELens' ``(f * ||W_dec||).norm(p=1)`` in value and gradient, without the elementwise product and the
        ``sign`` of the p-norm backward (about a quarter of a CPU training step at d_in 128, d_sae 1024).
        SAELens' own code is used for any other ``lp_norm``.
        """
        if self.cfg.lp_norm != 1.0:
            return super().calculate_aux_loss(step_input, feature_acts, hidden_pre, sae_out)
        if self.unit_norm_decoder:
            sparsity = feature_acts.sum(dim=-1)
        else:
            sparsity = feature_acts @ self.W_dec.norm(dim=1)
        return {"l1_loss": (step_input.coefficients["l1"] * sparsity).mean()}


# ----------------------------------------------------------------------------------------------
# Building, copying, saving and reloading
# ----------------------------------------------------------------------------------------------


def _sae_config(
    d_in: int,
    chain: ChainConfig,
    *,
    l1_coefficient: float,
    device: str,
    dtype: str,
    metadata: Mapping[str, Any] | None,
) -> SAETrackSAEConfig:
    if d_in <= 0:
        raise ConfigError(f"d_in = {d_in!r} is invalid: must be > 0.")
    if not l1_coefficient > 0:
        raise ConfigError(f"l1_coefficient = {l1_coefficient!r} is invalid: must be > 0.")
    cfg = SAETrackSAEConfig(
        d_in=d_in,
        d_sae=chain.expansion_factor * d_in,
        dtype=dtype,
        device=device,
        apply_b_dec_to_input=chain.apply_b_dec_to_input,
        normalize_activations="none",
        l1_coefficient=float(l1_coefficient),
        # unit-norm SAEs start with unit decoder rows (as the original SAELens); weighted ones with
        # SAELens 6's default 0.1-norm rows.
        decoder_init_norm=1.0 if chain.decoder_norm == "unit" else 0.1,
        decoder_norm=chain.decoder_norm,
    )
    set_metadata(cfg, metadata)
    return cfg


#: A chain link's training SAE, of any ``ChainConfig.architecture`` (:mod:`saetrack.sae.architectures`).
LinkSAE = SAETrackSAE | SAETrackTopKSAE | SAETrackBatchTopKSAE | SAETrackJumpReLUSAE


def _link_sae(
    d_in: int,
    chain: ChainConfig,
    *,
    l1_coefficient: float,
    dtype: str,
    metadata: Mapping[str, Any] | None,
) -> LinkSAE:
    """A new ``chain.architecture`` training SAE (weights drawn from the current CPU RNG) with sparsity coefficient
    ``l1_coefficient`` (L1 of ``"standard"``, L0 penalty of ``"jumprelu"``, recorded only by TopK/BatchTopK)."""
    if chain.architecture == "standard":
        cfg = _sae_config(d_in, chain, l1_coefficient=l1_coefficient, device="cpu", dtype=dtype, metadata=metadata)
        return SAETrackSAE(cfg)
    if not l1_coefficient > 0:
        raise ConfigError(f"l1_coefficient = {l1_coefficient!r} is invalid: must be > 0.")
    if d_in <= 0:
        raise ConfigError(f"d_in = {d_in!r} is invalid: must be > 0.")
    link_cfg = link_config(d_in, chain, coefficient=l1_coefficient, dtype=dtype, metadata=metadata)
    return LINK_SAE_CLASSES[chain.architecture](link_cfg)  # type: ignore[return-value]


def build_sae(
    d_in: int,
    chain: ChainConfig,
    *,
    seed: int,
    device: str = "cpu",
    dtype: str = "float32",
    metadata: Mapping[str, Any] | None = None,
) -> LinkSAE:
    """A randomly initialised SAE for a chain's first link or a baseline (Eq. 1-5, ``d_sae = expansion * d_in``).

    Of ``chain.architecture`` (``"standard"``: :class:`SAETrackSAE`; others: :mod:`saetrack.sae.architectures`) with
    sparsity coefficient ``chain.l1_coefficient``. Initialisation is SAELens' (Kaiming-uniform decoder rows rescaled
    to norm 1 for ``"unit"`` or 0.1 for ``"weighted"``, ``W_enc = W_dec.T``, zero biases, JumpReLU thresholds at
    ``chain.jumprelu_init_threshold``), drawn on the CPU from ``seed`` so the weights do not depend on the device or
    on the global RNG state. ``metadata`` (e.g. ``hook_name``, ``model_name``, ``context_size``) is stored in the
    SAE's ``cfg.json``.
    """
    with _RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sae = _link_sae(d_in, chain, l1_coefficient=chain.l1_coefficient, dtype=dtype, metadata=metadata)
    return sae.to(device)


def _check_previous(previous_sae: SAE[Any], chain: ChainConfig) -> None:
    """Raise :class:`ConfigError` unless ``previous_sae``'s weights fit a ``chain`` link and compute its function."""
    prev_cfg = previous_sae.cfg
    architecture = architecture_of(previous_sae)
    if architecture != chain.architecture:
        raise ConfigError(f"previous SAE architecture = {architecture!r} is invalid: need {chain.architecture!r}.")
    if prev_cfg.d_sae != chain.expansion_factor * prev_cfg.d_in:
        raise ConfigError(
            f"chain.expansion_factor = {chain.expansion_factor} does not fit the previous SAE "
            f"(d_in={prev_cfg.d_in}, d_sae={prev_cfg.d_sae})."
        )
    if bool(prev_cfg.apply_b_dec_to_input) != chain.apply_b_dec_to_input:
        raise ConfigError(
            f"chain.apply_b_dec_to_input = {chain.apply_b_dec_to_input} differs from the previous SAE's "
            f"{prev_cfg.apply_b_dec_to_input}; the copied weights would compute a different function."
        )
    if prev_cfg.normalize_activations != "none":
        raise ConfigError(
            f"previous SAE normalize_activations = {prev_cfg.normalize_activations!r} is invalid: need 'none'."
        )


def with_link_hyperparameters(
    previous_sae: SAE[Any],
    chain: ChainConfig,
    *,
    l1_coefficient: float | None = None,
    device: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> LinkSAE:
    """A new training SAE holding ``previous_sae``'s weights and *this* link's hyperparameters.

    The one place where a trained SAE's weights enter a new training SAE: recurrent initialisation
    (:func:`~saetrack.sae.recurrent.recurrent_init`) and reloading a saved link
    (:func:`~saetrack.sae.io.load_training_sae`) both go through it. ``metadata`` (hook, model revision of *this*
    checkpoint, ...) updates the metadata copied from ``previous_sae``.

    The new SAE takes every hyperparameter from *this* link: ``chain`` (architecture, decoder norm, ``c`` of Eq. 2,
    ``k``, JumpReLU's bandwidth) and the sparsity coefficient ``l1_coefficient`` (default ``chain.l1_coefficient``) —
    never from ``previous_sae``'s config. Every parameter and buffer is copied (JumpReLU's thresholds, BatchTopK's
    running threshold, also from a BatchTopK link saved as JumpReLU). If a ``"weighted"`` SAE seeds a ``"unit"``
    link, decoder norms are folded into the encoder, which keeps the SAE's function (rows already of unit norm to
    1e-5 are copied bit for bit). ``previous_sae`` may be any SAELens SAE of the chain's architecture (training or
    inference).
    """
    l1 = chain.l1_coefficient if l1_coefficient is None else l1_coefficient
    _check_previous(previous_sae, chain)
    prev_cfg = previous_sae.cfg
    target_device = str(previous_sae.device) if device is None else device
    with _RNG_LOCK, torch.random.fork_rng(devices=[]):
        sae = _link_sae(
            prev_cfg.d_in,
            chain,
            l1_coefficient=l1,
            dtype=prev_cfg.dtype,
            metadata={**prev_cfg.metadata.to_dict(), **(metadata or {})},
        )
    sae.load_state_dict(link_state(previous_sae, chain.architecture), strict=True)
    if sae.unit_norm_decoder and not rows_unit_norm(sae.W_dec):
        sae.fold_decoder_norms_()
    sae = sae.to(target_device)
    check_hyperparameters(sae, chain, l1_coefficient=l1)
    return sae


class HyperparameterMismatchError(RuntimeError):
    """A (re)loaded training SAE does not carry the hyperparameters its link asked for."""


def check_hyperparameters(sae: SAE[Any], chain: ChainConfig, *, l1_coefficient: float | None = None) -> None:
    """Raise :class:`HyperparameterMismatchError` unless ``sae`` carries this link's hyperparameters.

    Checks the sparsity coefficient (the SAELens reload trap: L1 of ``"standard"``, JumpReLU's L0 coefficient, the
    coefficient TopK/BatchTopK record), the decoder-norm variant, ``c`` of Eq. 2, that activation normalisation is
    off, and the architecture's own fields (:func:`~saetrack.sae.architectures.architecture_problems`).
    """
    expected_l1 = chain.l1_coefficient if l1_coefficient is None else l1_coefficient
    cfg = sae.cfg
    problems = architecture_problems(sae, chain)
    actual_l1 = sparsity_coefficient(sae)
    if not np.isclose(actual_l1, expected_l1, rtol=1e-12, atol=0.0):
        name = "l0_coefficient" if chain.architecture == "jumprelu" else "l1_coefficient"
        problems.append(f"{name} = {actual_l1!r}, expected {expected_l1!r}")
    if getattr(cfg, "decoder_norm", None) != chain.decoder_norm:
        problems.append(f"decoder_norm = {getattr(cfg, 'decoder_norm', None)!r}, expected {chain.decoder_norm!r}")
    if bool(cfg.apply_b_dec_to_input) != chain.apply_b_dec_to_input:
        problems.append(f"apply_b_dec_to_input = {cfg.apply_b_dec_to_input}, expected {chain.apply_b_dec_to_input}")
    if cfg.normalize_activations != "none":
        problems.append(f"normalize_activations = {cfg.normalize_activations!r}, expected 'none'")
    if problems:
        raise HyperparameterMismatchError(
            "training SAE does not carry its link's hyperparameters: " + "; ".join(problems)
        )


def _autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (``False`` for types without autocast, e.g. ``"meta"``)."""
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)
