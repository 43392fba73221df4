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
  restores what the original SAELens (and the paper's fork of it) did: the gradient component parallel
  to each decoder row is removed during the backward pass, and the rows are renormalised to unit norm
  before every training forward pass (and, in :func:`saetrack.sae_training.train_sae`, after every
  optimizer step, so the saved weights are exactly unit-norm).

The subclass keeps SAELens' ``"standard"`` architecture name and file format, so every saved SAE loads
for inference with ``sae_lens.SAE.load_from_disk`` (as a ``StandardSAE``) and from the Hub with
``SAE.from_pretrained``. Activation normalisation is always off (SAELens would fold a scale into the
saved weights, which breaks comparisons of decoder directions along a chain).

The L1 trap (checked in sae_lens 6.54.12): an SAE saved by SAELens' runner (``save_inference_model``)
has no ``l1_coefficient`` in its ``cfg.json``, so ``TrainingSAE.load_from_disk`` rebuilds it with the
default ``l1_coefficient = 1.0``; and the runner's ``from_pretrained_path`` takes every SAE
hyperparameter from the saved file and ignores the new run's. :func:`load_training_sae` and
:func:`init_from` therefore always build the SAE from *this* link's :class:`~saetrack.config.ChainConfig`
and verify the result with :func:`check_hyperparameters`.
"""

from __future__ import annotations

import copy
import json
import os
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from sae_lens import SAE, StandardTrainingSAE, StandardTrainingSAEConfig, TrainingSAE
from sae_lens.saes.sae import TrainStepInput, TrainStepOutput
from safetensors.torch import load_file, save_file

from saetrack.config import ChainConfig, ConfigError
from saetrack.sae_step import standard_sae_step
from saetrack.store import StaleArtifactError, atomic_dir, file_sha256

__all__ = [
    "SAE_CFG_FILE",
    "SAE_SPARSITY_FILE",
    "SAE_WEIGHTS_FILE",
    "HyperparameterMismatchError",
    "SAETrackSAE",
    "SAETrackSAEConfig",
    "SAEWeights",
    "build_sae",
    "check_hyperparameters",
    "decode",
    "decoder_directions",
    "feature_activations",
    "init_from",
    "load_training_sae",
    "save_sae",
]

#: File names of SAELens' on-disk format.
SAE_CFG_FILE = "cfg.json"
SAE_WEIGHTS_FILE = "sae_weights.safetensors"
SAE_SPARSITY_FILE = "sparsity.safetensors"

#: Metadata keys describing a finished training run; not carried into the next link.
_RUN_METADATA_KEYS = ("l0", "num_dead_features")


class HyperparameterMismatchError(RuntimeError):
    """A (re)loaded training SAE does not carry the hyperparameters its link asked for."""


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

    def __init__(self, cfg: SAETrackSAEConfig, use_error_term: bool = False) -> None:
        super().__init__(cfg, use_error_term)
        # A weak reference to the W_dec parameter that carries the gradient-projection hook; stored through
        # __dict__ so nn.Module does not register it. load_state_dict(assign=True) replaces the parameter.
        self.__dict__["_projected_w_dec"] = None

    @property
    def unit_norm_decoder(self) -> bool:
        """Whether decoder rows are kept at unit norm (Eq. 5) rather than weighting the L1 (Eq. 4)."""
        return self.cfg.decoder_norm == "unit"

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale every decoder row ``W_dec[i]`` to unit L2 norm in place (rows of norm 0 are left at 0)."""
        norms = self.W_dec.norm(dim=1, keepdim=True).clamp(min=1e-12)
        self.W_dec.div_(norms)
        self.__dict__["_normalized_version"] = (weakref.ref(self.W_dec), self.W_dec._version)

    def _decoder_is_normalized(self) -> bool:
        """Whether ``W_dec`` is unchanged (same tensor, no in-place write) since :meth:`normalize_decoder_`."""
        last = self.__dict__.get("_normalized_version")
        return last is not None and last[0]() is self.W_dec and last[1] == self.W_dec._version

    @torch.no_grad()
    def fold_decoder_norms_(self) -> None:
        """Move decoder row norms into the encoder (``W_enc[:, i] *= n_i``, ``b_enc[i] *= n_i``, ``W_dec[i] /= n_i``).

        The SAE computes the same reconstruction afterwards; used when a ``"weighted"`` SAE seeds a
        ``"unit"`` link.
        """
        self.fold_W_dec_norm()

    def _has_gradient_projection_hook(self) -> bool:
        ref = self.__dict__["_projected_w_dec"]
        return ref is not None and ref() is self.W_dec

    def _ensure_gradient_projection(self) -> None:
        """Attach (once per W_dec parameter) the hook removing the gradient parallel to each decoder row."""
        if self._has_gradient_projection_hook():
            return
        w_dec = self.W_dec

        def project(grad: torch.Tensor) -> torch.Tensor:
            direction = w_dec.detach()
            direction = direction / direction.norm(dim=1, keepdim=True).clamp(min=1e-12)
            parallel = (grad * direction).sum(dim=1, keepdim=True)
            return grad - parallel * direction

        w_dec.register_hook(project)
        self.__dict__["_projected_w_dec"] = weakref.ref(w_dec)

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        """SAELens' training step (Eq. 3); with a unit-norm decoder, renormalise rows and project their gradient.

        When nothing needs SAELens' general path (L1, no hooks attached, no autocast, a ``[batch, d_in]``
        input) the losses and gradients come from :func:`saetrack.sae_step.standard_sae_step`: the same
        values in one autograd node with five matrix products instead of six. Otherwise SAELens' own forward
        pass runs, with :meth:`calculate_aux_loss` as the sparsity term.
        """
        if self.unit_norm_decoder and not self._decoder_is_normalized():
            self.normalize_decoder_()  # train_sae renormalises after every optimizer step, so usually skipped
        if not self._fused_step_applies(step_input.sae_in):
            if self.unit_norm_decoder:
                self._ensure_gradient_projection()
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
            project_decoder_grad=self.unit_norm_decoder and not self._has_gradient_projection_hook(),
        )
        return TrainStepOutput(
            sae_in=step_input.sae_in,
            sae_out=sae_out,
            feature_acts=feature_acts,
            hidden_pre=hidden_pre,
            loss=mse_loss + l1_loss,
            losses={"mse_loss": mse_loss, "l1_loss": l1_loss},
        )

    def _fused_step_applies(self, sae_in: torch.Tensor) -> bool:
        """Whether :func:`standard_sae_step` computes exactly what SAELens' forward pass would for ``sae_in``."""
        hooked = any(
            point._forward_hooks or point._forward_pre_hooks
            for point in (self.hook_sae_input, self.hook_sae_acts_pre, self.hook_sae_acts_post, self.hook_sae_recons)
        )
        return (
            self.cfg.lp_norm == 1.0
            and self.cfg.normalize_activations == "none"
            and not self.hook_z_reshaping_mode
            and not hooked
            and sae_in.ndim == 2
            and not torch.is_autocast_enabled(sae_in.device.type)
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
    for key, value in (metadata or {}).items():
        if key not in _RUN_METADATA_KEYS:
            cfg.metadata[key] = copy.deepcopy(value)
    cfg.add_training_info_to_metadata()
    return cfg


def build_sae(
    d_in: int,
    chain: ChainConfig,
    *,
    seed: int,
    device: str = "cpu",
    dtype: str = "float32",
    metadata: Mapping[str, Any] | None = None,
) -> SAETrackSAE:
    """A randomly initialised SAE for a chain's first link or a baseline (Eq. 1-5, ``d_sae = expansion * d_in``).

    Initialisation is SAELens' (Kaiming-uniform decoder rows rescaled to norm 1 for ``"unit"`` or 0.1 for
    ``"weighted"``, ``W_enc = W_dec.T``, zero biases), drawn on the CPU from ``seed`` so the weights do not
    depend on the device or on the global RNG state. ``metadata`` (e.g. ``hook_name``, ``model_name``,
    ``context_size``) is stored in the SAE's ``cfg.json``.
    """
    cfg = _sae_config(d_in, chain, l1_coefficient=chain.l1_coefficient, device="cpu", dtype=dtype, metadata=metadata)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sae = SAETrackSAE(cfg)
    return sae.to(device)


def init_from(
    previous_sae: SAE[Any],
    chain: ChainConfig,
    *,
    l1_coefficient: float | None = None,
    device: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> SAETrackSAE:
    """Recurrent initialisation (Sec. 3.2.2): a new training SAE holding ``previous_sae``'s weights.

    ``metadata`` (hook, model revision of *this* checkpoint, ...) updates the metadata copied from
    ``previous_sae``, so a link's ``cfg.json`` names its own checkpoint.

    The new SAE takes every hyperparameter from *this* link: ``chain`` (decoder norm, ``c`` of Eq. 2) and
    ``l1_coefficient`` (default ``chain.l1_coefficient``) — never from ``previous_sae``'s config. If a
    ``"weighted"`` SAE seeds a ``"unit"`` link, decoder norms are folded into the encoder, which keeps the
    SAE's function (rows already of unit norm to 1e-5 are copied bit for bit). ``previous_sae`` may be any
    SAELens standard SAE (training or inference).
    """
    l1 = chain.l1_coefficient if l1_coefficient is None else l1_coefficient
    prev_cfg = previous_sae.cfg
    if prev_cfg.architecture() != "standard":
        raise ConfigError(f"previous SAE architecture = {prev_cfg.architecture()!r} is invalid: need 'standard'.")
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
    target_device = str(previous_sae.device) if device is None else device
    cfg = _sae_config(
        prev_cfg.d_in,
        chain,
        l1_coefficient=l1,
        device="cpu",
        dtype=prev_cfg.dtype,
        metadata={**prev_cfg.metadata.to_dict(), **(metadata or {})},
    )
    with torch.random.fork_rng(devices=[]):
        sae = SAETrackSAE(cfg)
    state = {k: v.detach().to("cpu").clone() for k, v in previous_sae.state_dict().items()}
    sae.load_state_dict(state, strict=True)
    if sae.unit_norm_decoder and not _rows_unit_norm(sae.W_dec):
        sae.fold_decoder_norms_()
    sae = sae.to(target_device)
    check_hyperparameters(sae, chain, l1_coefficient=l1)
    return sae


@torch.no_grad()
def _rows_unit_norm(w_dec: torch.Tensor, tol: float = 1e-5) -> bool:
    return bool(((w_dec.norm(dim=1) - 1).abs() <= tol).all())


def check_hyperparameters(sae: SAE[Any], chain: ChainConfig, *, l1_coefficient: float | None = None) -> None:
    """Raise :class:`HyperparameterMismatchError` unless ``sae`` carries this link's hyperparameters.

    Checks the L1 coefficient (the SAELens reload trap), the decoder-norm variant, ``c`` of Eq. 2 and that
    activation normalisation is off.
    """
    expected_l1 = chain.l1_coefficient if l1_coefficient is None else l1_coefficient
    cfg = sae.cfg
    problems = []
    actual_l1 = getattr(cfg, "l1_coefficient", None)
    if actual_l1 is None or not np.isclose(actual_l1, expected_l1, rtol=1e-12, atol=0.0):
        problems.append(f"l1_coefficient = {actual_l1!r}, expected {expected_l1!r}")
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


def save_sae(
    sae: SAE[Any],
    folder: str | os.PathLike[str],
    *,
    feature_sparsity: torch.Tensor | np.ndarray | None = None,
) -> dict[str, str]:
    """Save ``sae`` in SAELens format (``cfg.json``, ``sae_weights.safetensors``) atomically; return file hashes.

    The folder is written under a temporary name and renamed into place (replacing an existing one).
    A training SAE is saved with its full training config (including ``l1_coefficient`` and
    ``decoder_norm``); ``sae_lens.SAE.load_from_disk`` reads it for inference. ``feature_sparsity``
    (per-feature firing frequency) is written as SAELens' ``sparsity.safetensors`` (log10 of the frequency).
    Returns ``{file name: sha256}``.
    """
    with atomic_dir(folder) as tmp:
        sae.save_model(tmp)
        if feature_sparsity is not None:
            freq = torch.as_tensor(np.asarray(feature_sparsity), dtype=torch.float32).cpu()
            if freq.shape != (sae.cfg.d_sae,):
                raise ValueError(f"feature_sparsity has shape {tuple(freq.shape)}, expected ({sae.cfg.d_sae},).")
            save_file({"sparsity": torch.log10(freq + 1e-10)}, str(tmp / SAE_SPARSITY_FILE))
    final = Path(folder)
    return {p.name: file_sha256(p) for p in sorted(final.iterdir()) if p.is_file()}


def load_training_sae(
    folder: str | os.PathLike[str],
    chain: ChainConfig,
    *,
    l1_coefficient: float | None = None,
    device: str = "cpu",
) -> SAETrackSAE:
    """Reload a saved SAE for further training, with *this* link's hyperparameters re-applied.

    SAELens' ``TrainingSAE.load_from_disk`` restores the saved weights, but an SAE saved for inference
    comes back with ``l1_coefficient = 1.0``; the weights are therefore copied into a fresh
    :class:`SAETrackSAE` built from ``chain`` and ``l1_coefficient`` (default ``chain.l1_coefficient``),
    and :func:`check_hyperparameters` verifies the result.
    """
    path = Path(folder)
    for name in (SAE_CFG_FILE, SAE_WEIGHTS_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path} holds no SAELens SAE: {name} is missing.")
    loaded = TrainingSAE.load_from_disk(path, device="cpu")
    sae = init_from(loaded, chain, l1_coefficient=l1_coefficient, device=device)
    check_hyperparameters(sae, chain, l1_coefficient=l1_coefficient)
    return sae


# ----------------------------------------------------------------------------------------------
# Feature activations and decoder directions for analysis
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SAEWeights:
    """The four tensors of a standard SAE in SAELens' layout, plus ``c`` of Eq. 2 (for analysis code)."""

    W_enc: torch.Tensor  # [d_in, d_sae]
    b_enc: torch.Tensor  # [d_sae]
    W_dec: torch.Tensor  # [d_sae, d_in]
    b_dec: torch.Tensor  # [d_in]
    apply_b_dec_to_input: bool = True

    @classmethod
    def from_sae(cls, sae: SAE[Any]) -> SAEWeights:
        """The (detached) weights of a SAELens standard SAE."""
        return cls(
            W_enc=sae.W_enc.detach(),
            b_enc=sae.b_enc.detach(),
            W_dec=sae.W_dec.detach(),
            b_dec=sae.b_dec.detach(),
            apply_b_dec_to_input=bool(sae.cfg.apply_b_dec_to_input),
        )

    @classmethod
    def load(cls, folder: str | os.PathLike[str], device: str = "cpu") -> SAEWeights:
        """Read the weights of a SAELens-format folder without building an SAE module."""
        path = Path(folder)
        cfg = json.loads((path / SAE_CFG_FILE).read_text())
        if cfg.get("normalize_activations", "none") != "none":
            raise StaleArtifactError(
                f"{path}: normalize_activations = {cfg.get('normalize_activations')!r}; the raw weights of an "
                "SAE trained with activation normalisation do not act on raw activations (SAE-Track needs 'none')."
            )
        tensors = load_file(str(path / SAE_WEIGHTS_FILE), device=device)
        return cls(
            W_enc=tensors["W_enc"],
            b_enc=tensors["b_enc"],
            W_dec=tensors["W_dec"],
            b_dec=tensors["b_dec"],
            apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        )


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

    ``x`` (``[..., d_in]``, any float dtype, array or tensor) is cast to the weights' dtype and device.
    """
    w = _as_weights(sae_or_weights)
    xt = torch.as_tensor(np.asarray(x) if isinstance(x, np.ndarray) else x)
    xt = xt.to(device=w.W_enc.device, dtype=w.W_enc.dtype)
    if xt.shape[-1] != w.W_enc.shape[0]:
        raise ValueError(f"x has last dimension {xt.shape[-1]}, the SAE expects d_in = {w.W_enc.shape[0]}.")
    if w.apply_b_dec_to_input:
        xt = xt - w.b_dec
    return torch.relu(xt @ w.W_enc + w.b_enc)


@torch.no_grad()
def decoder_directions(sae_or_weights: SAELike) -> torch.Tensor:
    """Unit-normalised decoder directions ``W_dec[i] / ||W_dec[i]||``, shape ``[d_sae, d_in]``.

    Row ``i`` is column ``i`` of the paper's ``W^dec`` (Eq. 1), scaled to unit length.
    """
    w_dec = _as_weights(sae_or_weights).W_dec
    return w_dec / w_dec.norm(dim=1, keepdim=True).clamp(min=1e-12)


def decode(sae_or_weights: SAELike, feature_acts: torch.Tensor) -> torch.Tensor:
    """Reconstruction ``x_hat = f @ W_dec + b_dec`` (Eq. 1) from feature activations ``[..., d_sae]``."""
    w = _as_weights(sae_or_weights)
    return feature_acts.to(w.W_dec.dtype) @ w.W_dec + w.b_dec
