"""Link architectures beside the paper's L1 SAE: SAELens' TopK, BatchTopK and JumpReLU training SAEs as chain links.

``ChainConfig.architecture`` picks the SAE of every link. ``"standard"`` is the paper's ReLU SAE with the L1 penalty
(Eq. 1-5, :class:`~saetrack.sae.model.SAETrackSAE`); the others are SAELens' own training SAEs (sae_lens 6.54.12),
subclassed only to keep what SAE-Track needs of every link:

* ``"topk"`` (:class:`SAETrackTopKSAE`, SAELens' ``TopKTrainingSAE``): the ``k`` largest pre-activations of each token
  pass through a ReLU, the rest are zero; SAELens' auxiliary loss lets dead features reconstruct the residual.
* ``"batchtopk"`` (:class:`SAETrackBatchTopKSAE`, ``BatchTopKTrainingSAE``): in training the ``k * batch`` largest
  activations of a batch; a running threshold (``topk_threshold``, an average of the smallest kept activation) is
  the inference rule, as SAELens saves it: a JumpReLU SAE with that threshold for every feature.
* ``"jumprelu"`` (:class:`SAETrackJumpReLUSAE`, ``JumpReLUTrainingSAE``): ``f_i = h_i [h_i > theta_i]`` with a learned
  threshold per feature, trained with SAELens' ``"step"`` L0 penalty (straight-through estimator of bandwidth
  ``chain.jumprelu_bandwidth``).

The link's sparsity coefficient (the ``l1_coefficient`` of :func:`~saetrack.sae.model.build_sae`,
:func:`~saetrack.sae.recurrent.recurrent_init`, :func:`~saetrack.sae.io.load_training_sae`) is the L0-penalty
coefficient of JumpReLU; TopK and BatchTopK record it in their config but train without it (``k`` sets their L0).

``ChainConfig.decoder_norm`` keeps its meaning where it has one: ``"unit"`` keeps decoder rows at unit norm with the
same :class:`~saetrack.sae.unit_norm.UnitNormDecoder` as the standard SAE (rows rescaled, their gradient projected),
so TopK selects on the plain pre-activations; ``"weighted"`` leaves the decoder free, TopK and BatchTopK then select
on pre-activations times decoder norms (SAELens' ``rescale_acts_by_decoder_norm``), the analogue of Eq. 4's weighting.

Recurrent initialisation copies every parameter and buffer (JumpReLU's thresholds, BatchTopK's running threshold);
a BatchTopK link saved as SAELens' JumpReLU seeds the next BatchTopK link with that threshold. A JumpReLU threshold
is kept at or above zero after every optimizer step (SAELens clamps it before each forward pass; clamping after the
step gives every forward pass the same threshold, and a trained link whose threshold is never negative, where
SAELens' training and inference encodings agree).

Training step. The fused step (:mod:`saetrack.sae.step`) is specific to the ReLU + L1 SAE; these architectures run
SAELens' own autograd step inside :func:`~saetrack.sae.training.train_sae`'s loop (same trainer, Adam, schedules, loss
bookkeeping and unit-norm constraint). ``benchmarks/bench_link_architectures.py`` (d_in 128, d_sae 1024, batch 256,
k 32, CPU, steps/s side by side in one run, best of interleaved rounds) measured: standard fused 257, standard on
SAELens' autograd 231, TopK 165, BatchTopK 115, JumpReLU 152. Where the time goes (torch profiler): BatchTopK's
selection over the whole flattened batch (``torch.topk`` of ``B * d_sae`` values) is about a quarter of its step, and
TopK's per-token selection and scatter a similar share — work a fused backward would not remove; JumpReLU's extra
time is the straight-through estimator's elementwise passes, which a fused step could merge (perhaps 1.5x), at the
price of a second hand-written backward to keep checked against SAELens. A link trains ``link_tokens`` (100k on
nano: ~400 steps, a few seconds) and every architecture runs within about 2x of the fused standard step, so SAELens'
step is used as is: its behaviour stays exactly SAELens' and follows its fixes.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from sae_lens import (
    BatchTopKTrainingSAE,
    BatchTopKTrainingSAEConfig,
    JumpReLUTrainingSAE,
    JumpReLUTrainingSAEConfig,
    TopKTrainingSAE,
    TopKTrainingSAEConfig,
)
from sae_lens.saes.sae import SAE, TrainingSAEConfig, TrainStepInput, TrainStepOutput

from saetrack.config import ChainConfig, ConfigError
from saetrack.sae.unit_norm import UnitNormDecoder

__all__ = [
    "LINK_SAE_CLASSES",
    "RUN_METADATA_KEYS",
    "SAETrackBatchTopKConfig",
    "SAETrackBatchTopKSAE",
    "SAETrackJumpReLUConfig",
    "SAETrackJumpReLUSAE",
    "SAETrackTopKConfig",
    "SAETrackTopKSAE",
    "architecture_of",
    "architecture_problems",
    "coefficient_key",
    "fold_decoder_norms",
    "link_config",
    "link_state",
    "set_metadata",
    "sparsity_coefficient",
]


#: Metadata keys describing a finished training run; not carried into the next link.
RUN_METADATA_KEYS = ("l0", "num_dead_features")


def check_link_cfg(cfg: Any) -> None:
    """Raise :class:`ConfigError` unless ``cfg`` has a valid ``decoder_norm`` and activation normalisation off."""
    if cfg.decoder_norm not in ("unit", "weighted"):
        raise ConfigError(f"decoder_norm = {cfg.decoder_norm!r} is invalid: one of 'unit', 'weighted'.")
    if cfg.normalize_activations != "none":
        raise ConfigError(
            f"normalize_activations = {cfg.normalize_activations!r} is invalid: SAE-Track trains with "
            "activation normalisation off ('none'), since SAELens folds the scale into the saved weights."
        )


@dataclass
class SAETrackTopKConfig(TopKTrainingSAEConfig):
    """SAELens' TopK training config plus the decoder-norm choice and the (unused) coefficient the link was given."""

    decoder_norm: Literal["unit", "weighted"] = "weighted"
    #: The sparsity coefficient the link was given: recorded, not trained with (``k`` sets the L0).
    l1_coefficient: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_link_cfg(self)


@dataclass
class SAETrackBatchTopKConfig(BatchTopKTrainingSAEConfig):
    """SAELens' BatchTopK training config plus the decoder-norm choice and the (unused) coefficient."""

    decoder_norm: Literal["unit", "weighted"] = "weighted"
    #: The sparsity coefficient the link was given: recorded, not trained with (``k`` sets the L0).
    l1_coefficient: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_link_cfg(self)


@dataclass
class SAETrackJumpReLUConfig(JumpReLUTrainingSAEConfig):
    """SAELens' JumpReLU training config plus the decoder-norm choice."""

    decoder_norm: Literal["unit", "weighted"] = "weighted"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_link_cfg(self)


class _LinkTraining:
    """What every SAE-Track link adds to a SAELens training SAE: the unit-norm decoder of ``decoder_norm="unit"``."""

    cfg: Any
    W_dec: torch.nn.Parameter
    #: Matrix-product precision of the fused standard step; these architectures run SAELens' autograd step (float32).
    matmul_dtype: torch.dtype | None = None

    def __init__(self, cfg: Any, use_error_term: bool = False) -> None:
        super().__init__(cfg, use_error_term)  # type: ignore[call-arg]
        self.unit_norm = UnitNormDecoder()

    @property
    def unit_norm_decoder(self) -> bool:
        """Whether decoder rows are kept at unit norm (``decoder_norm="unit"``)."""
        return bool(self.cfg.decoder_norm == "unit")

    def normalize_decoder_(self) -> None:
        """Rescale every decoder row to unit L2 norm in place."""
        self.unit_norm.normalize_(self.W_dec)

    def fold_decoder_norms_(self) -> None:
        """Move decoder row norms into the encoder (and a JumpReLU threshold), keeping the SAE's function."""
        fold_decoder_norms(self)  # type: ignore[arg-type]

    def after_optimizer_step_(self) -> None:
        """Called after every optimizer step by :func:`~saetrack.sae.training.sae_trainer` (nothing by default)."""

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        """SAELens' training step of the architecture; with a unit-norm decoder, rows rescaled, gradient projected."""
        if self.unit_norm_decoder:
            self.unit_norm.ensure_normalized(self.W_dec)
            self.unit_norm.attach_gradient_projection(self.W_dec)
        return super().training_forward_pass(step_input)  # type: ignore[misc, no-any-return]


class SAETrackTopKSAE(_LinkTraining, TopKTrainingSAE):  # type: ignore[misc]
    """SAELens' ``TopKTrainingSAE`` as a chain link (module docstring)."""

    cfg: SAETrackTopKConfig  # type: ignore[assignment]


class SAETrackBatchTopKSAE(_LinkTraining, BatchTopKTrainingSAE):  # type: ignore[misc]
    """SAELens' ``BatchTopKTrainingSAE`` as a chain link: encodes with its threshold in eval mode, saves as JumpReLU.

    In ``train()`` mode :meth:`encode` is SAELens' batch-level top-k; in ``eval()`` mode it is the inference rule
    SAELens saves (a JumpReLU with ``topk_threshold`` for every feature), which does not depend on the batch.
    """

    cfg: SAETrackBatchTopKConfig  # type: ignore[assignment]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Training: SAELens' BatchTopK. Evaluation: ``ReLU(h) [h > topk_threshold]`` (``h`` rescaled by the decoder
        norms when ``rescale_acts_by_decoder_norm``), the JumpReLU SAELens saves the SAE as."""
        if self.training:
            return super().encode(x)
        hidden = self.process_sae_in(x) @ self.W_enc + self.b_enc
        hidden = self.hook_sae_acts_pre(hidden)
        if self.cfg.rescale_acts_by_decoder_norm:
            hidden = hidden * self.W_dec.norm(dim=-1)
        threshold = self.topk_threshold.to(hidden.dtype)
        return self.hook_sae_acts_post(hidden.relu() * (hidden > threshold).to(hidden.dtype))

    def save_model(self, path: Any) -> Any:
        """Save in SAELens' inference format: a JumpReLU SAE whose threshold is ``topk_threshold`` (SAELens' own
        conversion, with decoder norms folded when ``rescale_acts_by_decoder_norm``); loads with
        ``sae_lens.SAE.load_from_disk``."""
        return self.save_inference_model(path)


class SAETrackJumpReLUSAE(_LinkTraining, JumpReLUTrainingSAE):  # type: ignore[misc]
    """SAELens' ``JumpReLUTrainingSAE`` as a chain link, its threshold kept >= 0 after every optimizer step."""

    cfg: SAETrackJumpReLUConfig  # type: ignore[assignment]

    @torch.no_grad()
    def after_optimizer_step_(self) -> None:
        """Clamp the thresholds at 0 (SAELens' projection, done after the step instead of before the next forward)."""
        self.threshold.data.clamp_(min=0.0)


#: The training SAE class of each non-standard architecture.
LINK_SAE_CLASSES: dict[str, type[SAE[Any]]] = {
    "topk": SAETrackTopKSAE,
    "batchtopk": SAETrackBatchTopKSAE,
    "jumprelu": SAETrackJumpReLUSAE,
}


def set_metadata(cfg: TrainingSAEConfig, metadata: Mapping[str, Any] | None) -> None:
    """Copy ``metadata`` (hook, model, revision, ...) into ``cfg.metadata``, leaving out :data:`RUN_METADATA_KEYS`."""
    for key, value in (metadata or {}).items():
        if key not in RUN_METADATA_KEYS:
            cfg.metadata[key] = copy.deepcopy(value)
    cfg.add_training_info_to_metadata()


def link_config(
    d_in: int,
    chain: ChainConfig,
    *,
    coefficient: float,
    dtype: str,
    metadata: Mapping[str, Any] | None,
) -> TrainingSAEConfig:
    """The SAELens training config of a ``chain.architecture`` link (not ``"standard"``) of width ``d_in``.

    ``d_sae = expansion * d_in``, ``c`` of Eq. 2 and ``decoder_norm`` from ``chain`` (unit: decoder rows start at
    norm 1; weighted: SAELens' 0.1 and, for TopK/BatchTopK, selection on norm-rescaled pre-activations), ``k`` of
    TopK/BatchTopK (:attr:`ChainConfig.topk_k`), JumpReLU's threshold init, bandwidth and L0 coefficient
    ``coefficient``; built on the CPU.
    """
    d_sae = chain.expansion_factor * d_in
    unit = chain.decoder_norm == "unit"
    common: dict[str, Any] = {
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": dtype,
        "device": "cpu",
        "apply_b_dec_to_input": chain.apply_b_dec_to_input,
        "normalize_activations": "none",
        "decoder_init_norm": 1.0 if unit else 0.1,
        "decoder_norm": chain.decoder_norm,
    }
    cfg: TrainingSAEConfig
    if chain.architecture in ("topk", "batchtopk"):
        k = chain.topk_k
        if k is None or not 1 <= k <= d_sae:
            raise ConfigError(f"k = {k!r} is invalid: must lie in [1, d_sae = {d_sae}].")
        config_class = SAETrackTopKConfig if chain.architecture == "topk" else SAETrackBatchTopKConfig
        cfg = config_class(**common, k=k, rescale_acts_by_decoder_norm=not unit, l1_coefficient=float(coefficient))
    elif chain.architecture == "jumprelu":
        cfg = SAETrackJumpReLUConfig(
            **common,
            l0_coefficient=float(coefficient),
            jumprelu_init_threshold=chain.jumprelu_init_threshold,
            jumprelu_bandwidth=chain.jumprelu_bandwidth,
        )
    else:
        raise ConfigError(f"architecture = {chain.architecture!r} has no link config here ('standard': model.py).")
    set_metadata(cfg, metadata)
    return cfg


def architecture_of(sae: SAE[Any]) -> str:
    """The training architecture of ``sae``: its config's, except ``"batchtopk"`` for a BatchTopK SAE that SAELens
    saved (and reloaded) as a JumpReLU SAE (``metadata.training_architecture``)."""
    architecture = sae.cfg.architecture()
    if architecture == "jumprelu" and sae.cfg.metadata.get("training_architecture") == "batchtopk":
        return "batchtopk"
    return str(architecture)


def link_state(previous: SAE[Any], architecture: str) -> dict[str, torch.Tensor]:
    """``previous``'s parameters and buffers (detached CPU copies) as a state dict for a new ``architecture`` SAE.

    A BatchTopK SAE saved as JumpReLU gets its running threshold back from the (equal) per-feature thresholds.
    """
    state = {k: v.detach().to("cpu").clone() for k, v in previous.state_dict().items()}
    if architecture == "batchtopk" and "threshold" in state:
        threshold = state.pop("threshold")
        if threshold.numel() and not bool((threshold == threshold[0]).all()):
            raise ConfigError("previous SAE is not a saved BatchTopK SAE: its JumpReLU thresholds differ by feature.")
        state["topk_threshold"] = threshold[0].to(torch.float64).clone()
    return state


@torch.no_grad()
def fold_decoder_norms(sae: SAE[Any]) -> None:
    """Rescale decoder rows to unit norm, moving each norm into the encoder (``W_enc``, ``b_enc``) and a JumpReLU
    threshold, so the SAE computes the same reconstruction (TopK and BatchTopK select on rescaled pre-activations
    before the fold, on the plain ones after: the same selection)."""
    norms = sae.W_dec.norm(dim=-1).clamp(min=1e-8)
    sae.W_dec.data.div_(norms[:, None])
    sae.W_enc.data.mul_(norms[None, :])
    sae.b_enc.data.mul_(norms)
    if isinstance(getattr(sae, "threshold", None), torch.Tensor):
        sae.threshold.data.mul_(norms.to(sae.threshold.dtype))


def sparsity_coefficient(sae: SAE[Any]) -> float:
    """The sparsity coefficient in ``sae``'s config: JumpReLU's ``l0_coefficient``, else ``l1_coefficient`` (the L1
    coefficient of the standard SAE; the recorded, unused coefficient of TopK and BatchTopK)."""
    name = "l0_coefficient" if sae.cfg.architecture() == "jumprelu" else "l1_coefficient"
    return float(getattr(sae.cfg, name, float("nan")))


def coefficient_key(sae: SAE[Any]) -> str | None:
    """The key of ``sae``'s sparsity coefficient in SAELens' trainer schedules (``"l1"``, ``"l0"``; ``None``: TopK)."""
    keys = list(sae.get_coefficients()) if hasattr(sae, "get_coefficients") else []
    return keys[0] if keys else None


def architecture_problems(sae: SAE[Any], chain: ChainConfig) -> list[str]:
    """What in ``sae``'s config differs from a ``chain.architecture`` link (empty: all agree): the architecture, ``k``
    and TopK's rescaling, JumpReLU's bandwidth and threshold init (the coefficient: :func:`sparsity_coefficient`)."""
    cfg = sae.cfg
    actual = architecture_of(sae)
    if actual != chain.architecture:
        return [f"architecture = {actual!r}, expected {chain.architecture!r}"]
    problems = []
    if chain.architecture in ("topk", "batchtopk"):
        if getattr(cfg, "k", None) != chain.topk_k:
            problems.append(f"k = {getattr(cfg, 'k', None)!r}, expected {chain.topk_k!r}")
        rescale = chain.decoder_norm == "weighted"
        if getattr(cfg, "rescale_acts_by_decoder_norm", None) != rescale:
            problems.append(f"rescale_acts_by_decoder_norm = {cfg.rescale_acts_by_decoder_norm}, expected {rescale}")
    if chain.architecture == "jumprelu":
        expected = {
            "jumprelu_bandwidth": chain.jumprelu_bandwidth,
            "jumprelu_init_threshold": chain.jumprelu_init_threshold,
        }
        for name, value in expected.items():
            if getattr(cfg, name, None) != value:
                problems.append(f"{name} = {getattr(cfg, name, None)!r}, expected {value!r}")
    return problems
