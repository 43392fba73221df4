"""Presets and one validated dataclass per pipeline stage: the single source of parameters.

Every stage of the pipeline (corpus, nano model suite, activation cache, SAE chain, ...) reads its
parameters from one frozen dataclass defined here. Dataclasses validate themselves in
``__post_init__`` and raise :class:`ConfigError` naming the field, the bad value and what is allowed.
:class:`RunConfig` bundles the sections of one run and checks what spans sections (the hooked layer
exists in the model, the SAE schedule indexes real checkpoints).

Presets (:data:`PRESETS`) are built by :func:`get_preset`; :meth:`RunConfig.with_overrides` changes
individual fields by dotted name (``"chain.l1_coefficient"``) and rejects unknown names.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

__all__ = [
    "PAPER_SAE_SCHEDULE",
    "PRESETS",
    "PYTHIA_CHECKPOINT_STEPS",
    "CacheConfig",
    "ChainConfig",
    "ConfigError",
    "CorpusConfig",
    "DriftConfig",
    "FormationConfig",
    "ModelConfig",
    "RunConfig",
    "ScaleConfig",
    "SuiteConfig",
    "config_hash",
    "get_preset",
    "pythia_like_steps",
]


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field, the value and what is allowed."""


def _fail(owner: str, name: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{owner}.{name} = {value!r} is invalid: {allowed}.")


def _positive(owner: str, values: Mapping[str, float | int]) -> None:
    for name, value in values.items():
        if not value > 0:
            _fail(owner, name, value, "must be > 0")


# ----------------------------------------------------------------------------------------------
# Checkpoint schedules
# ----------------------------------------------------------------------------------------------

#: Pythia's 154 published checkpoints (paper Eq. 25): ``[0, 1, 2, 4, ..., 512] + range(1000, 143001, 1000)``.
PYTHIA_CHECKPOINT_STEPS: tuple[int, ...] = (0, *(2**i for i in range(10)), *range(1000, 143_001, 1000))


def _paper_sae_schedule() -> tuple[int, ...]:
    """Checkpoint indices of the paper's SAE chain (Eq. 26) plus the final checkpoint.

    Eq. 26 reads ``list(range(12)) + list(range(13, 33, 2)) + list(range(33, 153, 20))``, which stops
    at index 133; the text ("e.g. 113, 133, 153") and every figure end at the final index 153, so it is
    appended here. Indices refer to :data:`PYTHIA_CHECKPOINT_STEPS`.
    """
    indices = [*range(12), *range(13, 33, 2), *range(33, 153, 20)]
    return (*indices, len(PYTHIA_CHECKPOINT_STEPS) - 1)


PAPER_SAE_SCHEDULE: tuple[int, ...] = _paper_sae_schedule()


def pythia_like_steps(total_steps: int, n_even: int) -> tuple[int, ...]:
    """A Pythia-shaped checkpoint schedule: step 0, powers of two below the spacing, then evenly spaced.

    Pythia saves ``[0, 1, 2, 4, ..., 512]`` then every 1000 of 143000 steps; here the even spacing is
    ``total_steps // n_even`` and the log-spaced part is every power of two below it.
    """
    if total_steps < n_even or n_even < 1:
        raise ConfigError(
            f"pythia_like_steps(total_steps={total_steps}, n_even={n_even}) is invalid: "
            "need 1 <= n_even <= total_steps."
        )
    spacing = total_steps // n_even
    log_part = [0] + [2**i for i in range(32) if 2**i < spacing]
    even_part = list(range(spacing, spacing * n_even + 1, spacing))
    return tuple(sorted(set(log_part + even_part)))


# ----------------------------------------------------------------------------------------------
# Stage dataclasses
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusConfig:
    """Where the text comes from and how it is tokenized (nano suite only; Hub presets use their own)."""

    #: ``"stdlib"`` (the running interpreter's standard-library sources and docs, offline),
    #: a path to a local ``.txt`` file or folder of text files, or ``"hf:<dataset name>"`` (online only).
    source: str = "stdlib"
    #: Fraction of documents held out (chosen by a hash of the document name, so it is deterministic).
    heldout_fraction: float = 0.05
    #: Byte-level BPE vocabulary size.
    vocab_size: int = 4096
    #: Cap on the corpus size in characters (``None``: everything). Used by the smoke preset.
    max_chars: int | None = None
    #: Text column and split for ``hf:`` datasets.
    hf_text_column: str = "text"
    hf_split: str = "train"

    def __post_init__(self) -> None:
        if not 0 < self.heldout_fraction < 0.5:
            _fail("corpus", "heldout_fraction", self.heldout_fraction, "must lie in (0, 0.5)")
        if self.vocab_size < 259:
            _fail("corpus", "vocab_size", self.vocab_size, "must be >= 259 (256 bytes + specials)")
        if self.max_chars is not None:
            _positive("corpus", {"max_chars": self.max_chars})
        if not self.source:
            _fail("corpus", "source", self.source, "'stdlib', a local path, or 'hf:<dataset>'")


@dataclass(frozen=True)
class SuiteConfig:
    """The nano-Pythia model suite trained here: a GPT-NeoX model and its checkpoint schedule."""

    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    #: MLP width; Pythia uses 4 * d_model.
    d_mlp: int = 512
    #: Fraction of each head's dimensions that are rotary (Pythia: 0.25).
    rotary_pct: float = 0.25
    context_length: int = 128
    #: Sequences per optimizer step (tokens per step = batch_size * context_length).
    batch_size: int = 32
    total_steps: int = 2000
    #: Number of evenly spaced checkpoints after the log-spaced ones (see :func:`pythia_like_steps`).
    n_even_checkpoints: int = 20
    lr: float = 1e-3
    #: Linear warm-up steps, then cosine decay to ``min_lr_ratio * lr`` (Pythia: 1% warm-up, 10% floor).
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    #: Held-out sequences used to evaluate the loss at every checkpoint.
    eval_sequences: int = 256

    def __post_init__(self) -> None:
        _positive(
            "suite",
            {
                "n_layers": self.n_layers,
                "d_model": self.d_model,
                "n_heads": self.n_heads,
                "d_mlp": self.d_mlp,
                "context_length": self.context_length,
                "batch_size": self.batch_size,
                "total_steps": self.total_steps,
                "n_even_checkpoints": self.n_even_checkpoints,
                "lr": self.lr,
                "eval_sequences": self.eval_sequences,
            },
        )
        if self.d_model % self.n_heads:
            _fail("suite", "n_heads", self.n_heads, f"must divide d_model={self.d_model}")
        if not 0 < self.rotary_pct <= 1:
            _fail("suite", "rotary_pct", self.rotary_pct, "must lie in (0, 1]")
        if not 0 <= self.min_lr_ratio <= 1:
            _fail("suite", "min_lr_ratio", self.min_lr_ratio, "must lie in [0, 1]")
        if not 0 <= self.warmup_steps < self.total_steps:
            _fail("suite", "warmup_steps", self.warmup_steps, f"must lie in [0, total_steps={self.total_steps})")
        if self.n_even_checkpoints > self.total_steps:
            _fail("suite", "n_even_checkpoints", self.n_even_checkpoints, f"must be <= total_steps={self.total_steps}")

    @property
    def checkpoint_steps(self) -> tuple[int, ...]:
        """Training steps at which a checkpoint is saved (Pythia-like, see :func:`pythia_like_steps`)."""
        return pythia_like_steps(self.total_steps, self.n_even_checkpoints)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.context_length


@dataclass(frozen=True)
class ModelConfig:
    """Which model's checkpoints are studied and where they come from."""

    #: ``"suite"``: the nano suite trained by this project into the run directory;
    #: ``"local"``: a folder of ``step{N}/`` Hugging Face checkpoints at ``local_path``;
    #: ``"hub"``: a Hub repo ``repo_id`` with one revision per step (``revision_template``).
    source: Literal["suite", "local", "hub"] = "suite"
    repo_id: str | None = None
    local_path: str | None = None
    revision_template: str = "step{step}"
    #: All checkpoint steps of the suite, ascending. For ``"suite"`` this must equal the suite's schedule.
    checkpoint_steps: tuple[int, ...] = ()
    #: Number of transformer blocks (validates the hooked layer); ``None`` when unknown before loading.
    n_layers: int | None = None
    #: Residual-stream width, when known in advance.
    d_model: int | None = None

    def __post_init__(self) -> None:
        if self.source not in ("suite", "local", "hub"):
            _fail("model", "source", self.source, "one of 'suite', 'local', 'hub'")
        if self.source == "hub" and not self.repo_id:
            _fail("model", "repo_id", self.repo_id, "a Hub repo id is required when source='hub'")
        if self.source == "local" and not self.local_path:
            _fail("model", "local_path", self.local_path, "a folder is required when source='local'")
        steps = self.checkpoint_steps
        if not steps:
            _fail("model", "checkpoint_steps", steps, "at least one checkpoint step")
        if any(s < 0 for s in steps) or list(steps) != sorted(set(steps)):
            _fail("model", "checkpoint_steps", steps, "non-negative, strictly ascending steps")
        if "{step}" not in self.revision_template:
            _fail("model", "revision_template", self.revision_template, "must contain '{step}'")
        if self.n_layers is not None:
            _positive("model", {"n_layers": self.n_layers})


@dataclass(frozen=True)
class CacheConfig:
    """Activation cache (notebook 01): which hook, which contexts, how many tokens per link."""

    #: The SAE reads ``blocks.{layer}.hook_resid_pre`` (the residual stream entering block ``layer``).
    layer: int = 2
    #: Tokens per context for both the analysis set and the training tokens.
    context_length: int = 128
    #: Contexts of the fixed analysis set: the same datapoints at every checkpoint.
    analysis_contexts: int = 512
    #: Held-out tokens per link used for the link's quality metrics.
    heldout_tokens: int = 16_384
    #: Contexts per forward pass while caching.
    batch_contexts: int = 32
    #: Storage dtype of cached activations.
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"

    def __post_init__(self) -> None:
        if self.layer < 0:
            _fail("cache", "layer", self.layer, "must be >= 0")
        _positive(
            "cache",
            {
                "context_length": self.context_length,
                "analysis_contexts": self.analysis_contexts,
                "heldout_tokens": self.heldout_tokens,
                "batch_contexts": self.batch_contexts,
            },
        )
        if self.dtype not in ("float32", "float16", "bfloat16"):
            _fail("cache", "dtype", self.dtype, "one of 'float32', 'float16', 'bfloat16'")

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.layer}.hook_resid_pre"


@dataclass(frozen=True)
class ChainConfig:
    """SAE-Track chain (notebook 02): SAE hyperparameters, token budgets and the checkpoint schedule."""

    #: Checkpoint indices (into ``model.checkpoint_steps``) that get an SAE, in training order.
    schedule: tuple[int, ...] = ()
    #: Checkpoint indices (a subset of ``schedule``) that also get an SAE trained from scratch.
    baseline: tuple[int, ...] = ()
    #: Dictionary size = expansion_factor * d_model.
    expansion_factor: int = 8
    #: L1 coefficient lambda of Eq. 3 (with ``l1_scale="activation_norm"``: the paper's scale-free lambda).
    l1_coefficient: float = 8e-5
    #: ``"activation_norm"`` (default, the paper's objective): the paper's trainer divided each token's squared
    #: error by the norm of the centred activation, so reconstruction and L1 both scale linearly with the
    #: activation norm and one lambda fits every checkpoint. With SAELens' plain MSE that is the same as a
    #: per-link coefficient ``l1_coefficient * d_model * E||x - mean(x)||`` over the link's own activations
    #: (up to per-token weighting), which each link records and saves. ``"none"``: the coefficient as given.
    l1_scale: Literal["activation_norm", "none"] = "activation_norm"
    #: ``"unit"``: unit-norm decoder with plain L1 (Eq. 5); ``"weighted"``: L1 weighted by decoder norms (Eq. 4).
    decoder_norm: Literal["unit", "weighted"] = "unit"
    #: Subtract the decoder bias from the encoder input (c = 1 in Eq. 2).
    apply_b_dec_to_input: bool = True
    lr_first: float = 4e-4
    lr_link: float = 4e-5
    warmup_steps_first: int = 100
    warmup_steps_link: int = 3
    #: Training tokens of the first (randomly initialised) SAE and of every later link.
    first_tokens: int = 2_000_000
    link_tokens: int = 100_000
    #: Tokens per SAE training batch.
    batch_size: int = 4096
    #: ``"fresh"``: each link starts a new Adam state (default, as the paper's code: each link is a new run);
    #: ``"carry"``: the Adam moments of the previous link are carried over.
    optimizer_policy: Literal["fresh", "carry"] = "fresh"
    #: Tokens of the from-scratch baseline SAEs (``None``: ``first_tokens``).
    baseline_tokens: int | None = None

    def __post_init__(self) -> None:
        _positive(
            "chain",
            {
                "expansion_factor": self.expansion_factor,
                "l1_coefficient": self.l1_coefficient,
                "lr_first": self.lr_first,
                "lr_link": self.lr_link,
                "first_tokens": self.first_tokens,
                "link_tokens": self.link_tokens,
                "batch_size": self.batch_size,
            },
        )
        if self.baseline_tokens is not None:
            _positive("chain", {"baseline_tokens": self.baseline_tokens})
        if not self.schedule:
            _fail("chain", "schedule", self.schedule, "at least one checkpoint index")
        if any(i < 0 for i in self.schedule) or list(self.schedule) != sorted(set(self.schedule)):
            _fail("chain", "schedule", self.schedule, "non-negative, strictly ascending checkpoint indices")
        missing = [i for i in self.baseline if i not in self.schedule]
        if missing:
            _fail("chain", "baseline", self.baseline, f"indices must be in chain.schedule; {missing} are not")
        if self.l1_scale not in ("activation_norm", "none"):
            _fail("chain", "l1_scale", self.l1_scale, "one of 'activation_norm', 'none'")
        if self.decoder_norm not in ("unit", "weighted"):
            _fail("chain", "decoder_norm", self.decoder_norm, "one of 'unit' (Eq. 5), 'weighted' (Eq. 4)")
        if self.optimizer_policy not in ("fresh", "carry"):
            _fail("chain", "optimizer_policy", self.optimizer_policy, "one of 'fresh', 'carry'")
        for name in ("warmup_steps_first", "warmup_steps_link"):
            if getattr(self, name) < 0:
                _fail("chain", name, getattr(self, name), "must be >= 0")

    @property
    def baseline_token_budget(self) -> int:
        return self.baseline_tokens if self.baseline_tokens is not None else self.first_tokens

    def tokens_for(self, position: int) -> int:
        """Training tokens of the link at ``position`` in the schedule (first link or later link)."""
        return self.first_tokens if position == 0 else self.link_tokens


@dataclass(frozen=True)
class FormationConfig:
    """Feature phases, patterns and formation (notebook 03; paper Sec. 4-5, App. A.1, C.2)."""

    #: Top-activating datapoints per feature (the paper's 25): D_i of Eq. 12 and the contexts of Fig. 2.
    top_k: int = 25
    #: A feature is token-level (Def. 4.1) when at least this share of its active top-k datapoints is one token.
    token_share: float = 0.5
    #: Fewer active top-k datapoints than this: the feature is "inactive" at that checkpoint.
    min_active: int = 5
    #: Ultra-low features (App. A.1): best density over checkpoints below this fraction of analysis tokens.
    min_density: float = 1e-4
    #: Random datapoints of the progress-measure baselines (the paper's code: 150 and 100).
    n_random_activation: int = 150
    n_random_feature: int = 100
    #: Features shown in the UMAP figure (Fig. 4): the most formed token- and concept-level features.
    umap_token_features: int = 4
    umap_concept_features: int = 3
    umap_seed: int = 42
    #: Fig. 2: examples per pattern and contexts per table cell.
    examples_per_pattern: int = 2
    contexts_per_cell: int = 6

    def __post_init__(self) -> None:
        _positive(
            "formation",
            {
                "top_k": self.top_k,
                "min_active": self.min_active,
                "n_random_activation": self.n_random_activation,
                "n_random_feature": self.n_random_feature,
                "examples_per_pattern": self.examples_per_pattern,
                "contexts_per_cell": self.contexts_per_cell,
            },
        )
        if self.top_k < 2:
            _fail("formation", "top_k", self.top_k, "must be >= 2 (similarities need pairs)")
        if not 0 < self.token_share <= 1:
            _fail("formation", "token_share", self.token_share, "must lie in (0, 1]")
        if self.min_active > self.top_k:
            _fail("formation", "min_active", self.min_active, f"must be <= top_k={self.top_k}")
        if not 0 <= self.min_density < 1:
            _fail("formation", "min_density", self.min_density, "must lie in [0, 1)")
        for name in ("umap_token_features", "umap_concept_features", "umap_seed"):
            if getattr(self, name) < 0:
                _fail("formation", name, getattr(self, name), "must be >= 0")


@dataclass(frozen=True)
class DriftConfig:
    """Decoder drift, formation times, trajectories and training phases (notebook 04; paper Sec. 6)."""

    #: A feature counts as formed at checkpoint t when its label (and, for token-level features, its token) equals
    #: the final one and its activation-space progress measure is at least this fraction of its final value.
    formed_fraction: float = 0.5
    #: Fig. 6b: features sampled reproducibly from all live features.
    n_sampled_features: int = 8
    #: Fig. 7: trajectories per evolution pattern (maintaining, shifting, grouping).
    trajectories_per_pattern: int = 2
    #: Fig. 6a: checkpoints shown as histograms (spread over the chain like the paper's panels).
    n_histograms: int = 6
    #: Change-point rule: each of the three phases spans at least this many checkpoints.
    min_phase_checkpoints: int = 2

    def __post_init__(self) -> None:
        if not 0 < self.formed_fraction <= 1:
            _fail("drift", "formed_fraction", self.formed_fraction, "must lie in (0, 1]")
        _positive(
            "drift",
            {
                "n_sampled_features": self.n_sampled_features,
                "trajectories_per_pattern": self.trajectories_per_pattern,
                "n_histograms": self.n_histograms,
                "min_phase_checkpoints": self.min_phase_checkpoints,
            },
        )


@dataclass(frozen=True)
class ScaleConfig:
    """The scale study (notebook 05; paper App. C.3): the presets of the model sizes compared, this run's included.

    Each size runs the whole pipeline (notebooks 01-04) in its own run directory; notebook 05 draws the per-size
    figures (Fig. 9-16) and the cross-scale summary. Sizes are ordered small to large.
    """

    presets: tuple[str, ...] = ()
    #: Sizes other than this run's whose pipelines run at once, each in its own process on one torch thread (small
    #: models use a second thread poorly, so two one-thread pipelines fill two cores better than one after the
    #: other). 1: one after the other in this process (GPU presets: one GPU).
    parallel_sizes: int = 2

    def __post_init__(self) -> None:
        if self.parallel_sizes < 1:
            _fail("scale", "parallel_sizes", self.parallel_sizes, "must be >= 1")
        if len(set(self.presets)) != len(self.presets):
            _fail("scale", "presets", self.presets, "no preset may appear twice")
        unknown = [p for p in self.presets if p not in PRESETS]
        if unknown:
            _fail("scale", "presets", self.presets, f"known presets only; {unknown} are not ({sorted(PRESETS)})")


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------

_SECTIONS: dict[str, type] = {
    "corpus": CorpusConfig,
    "suite": SuiteConfig,
    "model": ModelConfig,
    "cache": CacheConfig,
    "chain": ChainConfig,
    "formation": FormationConfig,
    "drift": DriftConfig,
    "scale": ScaleConfig,
}


@dataclass(frozen=True)
class RunConfig:
    """All parameters of one run; checks that sections agree with each other."""

    preset: str
    seed: int = 0
    model: ModelConfig = field(default_factory=lambda: ModelConfig(checkpoint_steps=(0,)))
    cache: CacheConfig = field(default_factory=CacheConfig)
    chain: ChainConfig = field(default_factory=lambda: ChainConfig(schedule=(0,)))
    corpus: CorpusConfig | None = None
    suite: SuiteConfig | None = None
    formation: FormationConfig = field(default_factory=FormationConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)

    def __post_init__(self) -> None:
        if self.seed < 0:
            _fail("run", "seed", self.seed, "must be >= 0")
        if self.scale.presets and self.preset in PRESETS and self.preset not in self.scale.presets:
            _fail("scale", "presets", self.scale.presets, f"must include this run's preset {self.preset!r}")
        if self.model.source == "suite":
            if self.suite is None or self.corpus is None:
                _fail("run", "suite", self.suite, "model.source='suite' needs both a suite and a corpus section")
            assert self.suite is not None
            if self.model.checkpoint_steps != self.suite.checkpoint_steps:
                _fail(
                    "model",
                    "checkpoint_steps",
                    self.model.checkpoint_steps,
                    f"must equal the suite's schedule {self.suite.checkpoint_steps}",
                )
            if self.model.n_layers != self.suite.n_layers:
                _fail("model", "n_layers", self.model.n_layers, f"must equal suite.n_layers={self.suite.n_layers}")
            if self.cache.context_length > self.suite.context_length:
                _fail(
                    "cache",
                    "context_length",
                    self.cache.context_length,
                    f"must be <= the model's context length {self.suite.context_length}",
                )
        n_layers = self.model.n_layers
        if n_layers is not None and not 0 <= self.cache.layer < n_layers:
            _fail("cache", "layer", self.cache.layer, f"must lie in [0, {n_layers}) for a {n_layers}-layer model")
        n_ckpt = len(self.model.checkpoint_steps)
        bad = [i for i in self.chain.schedule if i >= n_ckpt]
        if bad:
            _fail(
                "chain",
                "schedule",
                self.chain.schedule,
                f"indices must lie in [0, {n_ckpt}) (the model has {n_ckpt} checkpoints); {bad} do not",
            )

    # -- derived ------------------------------------------------------------------------------
    @property
    def sae_steps(self) -> tuple[int, ...]:
        """Training steps of the checkpoints that get an SAE, in chain order."""
        return tuple(self.model.checkpoint_steps[i] for i in self.chain.schedule)

    @property
    def baseline_steps(self) -> tuple[int, ...]:
        """Training steps of the checkpoints that get a from-scratch baseline SAE."""
        return tuple(self.model.checkpoint_steps[i] for i in self.chain.baseline)

    # -- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Build and validate a config from :meth:`to_dict` output; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"run has no field(s) {sorted(unknown)}; allowed: {sorted(known)}.")
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            section = _SECTIONS.get(name)
            kwargs[name] = _section_from_dict(name, section, value) if section and value is not None else value
        return cls(**kwargs)

    def with_overrides(self, overrides: Mapping[str, Any]) -> RunConfig:
        """A copy with fields replaced by dotted name (``{"chain.l1_coefficient": 1e-4, "seed": 1}``)."""
        data = self.to_dict()
        for key, value in overrides.items():
            parts = key.split(".")
            target = data
            for depth, part in enumerate(parts):
                if not isinstance(target, dict) or part not in target:
                    where = ".".join(parts[:depth]) or "run"
                    allowed = sorted(target) if isinstance(target, dict) else []
                    raise ConfigError(f"unknown config field {key!r}: {where} has no {part!r}; allowed: {allowed}.")
                if depth == len(parts) - 1:
                    target[part] = list(value) if isinstance(value, tuple) else value
                else:
                    target = target[part]
        return RunConfig.from_dict(data)

    def section_hash(self, *names: str) -> str:
        """Hash of the named sections (plus the seed), used to tell whether a stage's output is current."""
        payload = {"seed": self.seed, **{n: self.to_dict()[n] for n in names}}
        return config_hash(payload)


def _section_from_dict(name: str, section: type, value: Mapping[str, Any]) -> Any:
    known = {f.name: f for f in fields(section)}
    unknown = set(value) - set(known)
    if unknown:
        raise ConfigError(f"{name} has no field(s) {sorted(unknown)}; allowed: {sorted(known)}.")
    coerced = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
    return section(**coerced)


def config_hash(payload: Any) -> str:
    """SHA-256 (first 16 hex digits) of the canonical JSON of ``payload``."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------------


def _baseline_indices(schedule: tuple[int, ...], k: int) -> tuple[int, ...]:
    """``k`` checkpoint indices spread evenly over the chain's later links (first excluded, last included).

    The chain's first link is itself trained from scratch, so a baseline there would duplicate it.
    """
    later = schedule[1:]
    if k <= 0:
        return ()
    if k >= len(later):
        return later
    if k == 1:
        return later[-1:]
    return tuple(later[round(i * (len(later) - 1) / (k - 1))] for i in range(k))


def _suite_run(
    preset: str,
    suite: SuiteConfig,
    cache: CacheConfig,
    chain: dict[str, Any],
    corpus: CorpusConfig,
    n_baseline: int = 5,
    scale: tuple[str, ...] = (),
) -> RunConfig:
    steps = suite.checkpoint_steps
    schedule = tuple(range(len(steps)))
    baseline = _baseline_indices(schedule, n_baseline)
    return RunConfig(
        preset=preset,
        corpus=corpus,
        suite=suite,
        model=ModelConfig(source="suite", checkpoint_steps=steps, n_layers=suite.n_layers, d_model=suite.d_model),
        cache=cache,
        chain=ChainConfig(schedule=schedule, baseline=baseline, **chain),
        scale=ScaleConfig(presets=scale or (preset,)),
    )


def _smoke(preset: str = "smoke", d_model: int = 32, n_heads: int = 2, n_baseline: int = 2) -> RunConfig:
    suite = SuiteConfig(
        n_layers=2,
        d_model=d_model,
        n_heads=n_heads,
        d_mlp=4 * d_model,
        context_length=32,
        batch_size=16,
        total_steps=48,
        n_even_checkpoints=3,
        lr=3e-3,
        warmup_steps=4,
        eval_sequences=32,
    )
    return _suite_run(
        preset,
        suite,
        CacheConfig(layer=1, context_length=32, analysis_contexts=64, heldout_tokens=1024, batch_contexts=16),
        dict(
            expansion_factor=4,
            l1_coefficient=1e-3,
            lr_first=1e-3,
            lr_link=3e-4,
            warmup_steps_first=5,
            first_tokens=32_768,
            link_tokens=4096,
            batch_size=512,
        ),
        CorpusConfig(vocab_size=512, max_chars=400_000),
        n_baseline=n_baseline,
        scale=("smoke-s", "smoke-m", "smoke"),
    )


def _nano(preset: str, n_layers: int, d_model: int, layer: int, expansion: int = 8, n_baseline: int = 5) -> RunConfig:
    # 16 x 128 tokens per step for 2000 steps (4.1M tokens): the 4-layer d128 suite trains in about 8 minutes on
    # 2 CPU cores (measured 0.16 s/step); batch 32 took 12 minutes, over the 10-minute budget.
    suite = SuiteConfig(
        n_layers=n_layers, d_model=d_model, n_heads=max(2, d_model // 32), d_mlp=4 * d_model, batch_size=16
    )
    return _suite_run(
        preset,
        suite,
        CacheConfig(layer=layer),
        # Later links get 1/20 of the first SAE's tokens, as in the paper. The paper's 10x smaller link lr does not
        # carry over to CPU size: its links take ~3.7k Adam steps, ours 195 (50k tokens at batch 256). Measured on
        # the nano chain (step 32 -> 64), lr 1e-4 left the link at explained variance 0.74 / L0 149, lr 1e-3 reached
        # 0.95 / L0 39 - so links keep the first SAE's lr here. The paper presets keep 4e-4 / 4e-5.
        dict(
            expansion_factor=expansion,
            # scale-free lambda (see ChainConfig.l1_scale): ~0.1 effective at initialisation (activation norm
            # ~0.9) and ~1 at the end of training (norm ~8.6) for d_model 128 - L0 of a few tens in a sweep
            l1_coefficient=1e-3,
            lr_first=1e-3,
            lr_link=1e-3,
            first_tokens=1_000_000,
            link_tokens=50_000,
            batch_size=256,
            warmup_steps_first=100,
        ),
        CorpusConfig(),
        n_baseline=n_baseline,
        scale=NANO_SCALE if preset in NANO_SCALE else (preset,),
    )


#: The default scale study of the nano presets: three sizes, small to large (100k, 232k, 793k non-embedding
#: parameters, an 8x range like the paper's 160m-1.4b), cheap enough for ``python run_all.py`` on 2 CPU cores.
NANO_SCALE: tuple[str, ...] = ("nano-s", "nano-m", "nano")


def _scale_size(preset: str, n_layers: int, d_model: int) -> RunConfig:
    """A smaller size of nano's scale study: the same corpus, suite schedule and chain, hook at layer 1.

    To fit ``python run_all.py`` on 2 CPU cores these sizes train no from-scratch baselines (the convergence study is
    nano's), give the first SAE 500k tokens instead of 1M, evaluate the suite on 128 held-out sequences and analyse
    256 contexts (32k tokens) instead of 512.
    """
    return _nano(preset, n_layers=n_layers, d_model=d_model, layer=1, n_baseline=0).with_overrides(
        {"chain.first_tokens": 500_000, "suite.eval_sequences": 128, "cache.analysis_contexts": 256}
    )


_PYTHIA_SIZES: dict[str, tuple[int, int]] = {
    # name: (n_layers, d_model)
    "160m": (12, 768),
    "410m": (24, 1024),
    "1.4b": (24, 2048),
}


def _pythia(size: str, layer: int) -> RunConfig:
    """The paper's setting (App. C.1 and FACTS): Pythia-deduped checkpoints from the Hub, SAE at layer ``layer``."""
    n_layers, d_model = _PYTHIA_SIZES[size]
    return RunConfig(
        preset=f"pythia-{size}-l{layer}",
        # the paper's analysis text; tokenized with the model's own tokenizer (no tokenizer is trained)
        corpus=CorpusConfig(source="hf:NeelNanda/pile-10k"),
        model=ModelConfig(
            source="hub",
            repo_id=f"EleutherAI/pythia-{size}-deduped",
            checkpoint_steps=PYTHIA_CHECKPOINT_STEPS,
            n_layers=n_layers,
            d_model=d_model,
        ),
        cache=CacheConfig(layer=layer, context_length=128, analysis_contexts=32_768, heldout_tokens=262_144),
        chain=ChainConfig(
            schedule=PAPER_SAE_SCHEDULE,
            baseline=_baseline_indices(PAPER_SAE_SCHEDULE, 5),
            expansion_factor=64,
            l1_coefficient=8e-5,
            decoder_norm="unit",
            apply_b_dec_to_input=True,
            lr_first=4e-4,
            lr_link=4e-5,
            warmup_steps_first=5000,
            warmup_steps_link=3,
            first_tokens=300_000_000,
            link_tokens=15_000_000,
            batch_size=4096,
        ),
        scale=ScaleConfig(presets=("pythia-160m-l4", "pythia-410m-l4", "pythia-1.4b-l3"), parallel_sizes=1),
    )


#: Preset name -> builder. ``nano`` is the embedded default; ``nano-s``/``nano-m``/``nano`` are its scale-study
#: sizes; the ``pythia-*`` presets are the paper's settings (GPU and Hub access needed).
PRESETS: dict[str, Callable[[], RunConfig]] = {
    "smoke": _smoke,
    # the smoke preset's scale study: the same pipeline at d_model 16 and 24 (seconds each)
    "smoke-s": lambda: _smoke("smoke-s", d_model=16, n_heads=2, n_baseline=0),
    "smoke-m": lambda: _smoke("smoke-m", d_model=24, n_heads=3, n_baseline=0),
    # the scale study's smaller sizes (see _scale_size)
    "nano-s": lambda: _scale_size("nano-s", n_layers=2, d_model=64),
    "nano-m": lambda: _scale_size("nano-m", n_layers=3, d_model=80),
    "nano": lambda: _nano("nano", n_layers=4, d_model=128, layer=2),
    # a larger size for a longer scale study on a bigger machine (--set scale.presets=...)
    "nano-l": lambda: _nano("nano-l", n_layers=6, d_model=192, layer=2),
    "pythia-160m-l4": lambda: _pythia("160m", 4),
    "pythia-410m-l4": lambda: _pythia("410m", 4),
    "pythia-1.4b-l3": lambda: _pythia("1.4b", 3),
}

DEFAULT_PRESET = "nano"


def get_preset(name: str, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """The validated :class:`RunConfig` of preset ``name``, with optional dotted-name overrides."""
    if name not in PRESETS:
        raise ConfigError(f"preset = {name!r} is invalid: allowed presets are {sorted(PRESETS)}.")
    config = PRESETS[name]()
    return config.with_overrides(overrides) if overrides else config
