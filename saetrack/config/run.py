"""The run: all config sections of one run, checked against each other, (de)serialised and hashed."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from saetrack import paths
from saetrack.config.analysis import DriftConfig, FormationConfig, ScaleConfig
from saetrack.config.base import PRESETS, ConfigError, config_hash, fail
from saetrack.config.chain import ChainConfig
from saetrack.config.crosscoder import CrosscoderConfig
from saetrack.config.data import CacheConfig, CorpusConfig, ModelConfig, SuiteConfig
from saetrack.config.explorer import ExplorerConfig
from saetrack.config.types import check_types

__all__ = [
    "RunConfig",
]


_SECTIONS: dict[str, type] = {
    "corpus": CorpusConfig,
    "suite": SuiteConfig,
    "model": ModelConfig,
    "cache": CacheConfig,
    "chain": ChainConfig,
    "formation": FormationConfig,
    "drift": DriftConfig,
    "scale": ScaleConfig,
    "crosscoder": CrosscoderConfig,
    "explorer": ExplorerConfig,
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
    crosscoder: CrosscoderConfig = field(default_factory=CrosscoderConfig)
    explorer: ExplorerConfig = field(default_factory=ExplorerConfig)

    def __post_init__(self) -> None:
        if self.seed < 0:
            fail("run", "seed", self.seed, "must be >= 0")
        if self.scale.presets and self.preset in PRESETS and self.preset not in self.scale.presets:
            fail("scale", "presets", self.scale.presets, f"must include this run's preset {self.preset!r}")
        if self.model.source == "suite":
            if self.suite is None or self.corpus is None:
                fail("run", "suite", self.suite, "model.source='suite' needs both a suite and a corpus section")
            assert self.suite is not None
            if self.model.checkpoint_steps != self.suite.checkpoint_steps:
                fail(
                    "model",
                    "checkpoint_steps",
                    self.model.checkpoint_steps,
                    f"must equal the suite's schedule {self.suite.checkpoint_steps}",
                )
            if self.model.n_layers != self.suite.n_layers:
                fail("model", "n_layers", self.model.n_layers, f"must equal suite.n_layers={self.suite.n_layers}")
            if self.cache.context_length > self.suite.context_length:
                fail(
                    "cache",
                    "context_length",
                    self.cache.context_length,
                    f"must be <= the model's context length {self.suite.context_length}",
                )
        n_layers = self.model.n_layers
        if n_layers is not None and not 0 <= self.cache.layer < n_layers:
            fail("cache", "layer", self.cache.layer, f"must lie in [0, {n_layers}) for a {n_layers}-layer model")
        if n_layers is not None and any(layer >= n_layers for layer in self.cache.layers):
            fail("cache", "layers", self.cache.layers, f"must lie in [0, {n_layers}) for a {n_layers}-layer model")
        n_ckpt = len(self.model.checkpoint_steps)
        bad = [i for i in self.chain.schedule if i >= n_ckpt]
        if bad:
            fail(
                "chain",
                "schedule",
                self.chain.schedule,
                f"indices must lie in [0, {n_ckpt}) (the model has {n_ckpt} checkpoints); {bad} do not",
            )
        if self.explorer.contexts_per_checkpoint > self.formation.top_k:
            fail(
                "explorer",
                "contexts_per_checkpoint",
                self.explorer.contexts_per_checkpoint,
                f"must be <= formation.top_k = {self.formation.top_k} (the datapoints stored per feature)",
            )
        bad = [i for i in self.crosscoder.snapshots if i >= n_ckpt]
        if bad:
            fail(
                "crosscoder", "snapshots", self.crosscoder.snapshots, f"indices must lie in [0, {n_ckpt}); {bad} do not"
            )

    # -- derived ------------------------------------------------------------------------------
    @property
    def sae_steps(self) -> tuple[int, ...]:
        """Training steps of the checkpoints that get an SAE, in chain order."""
        return tuple(self.model.checkpoint_steps[i] for i in self.chain.schedule)

    @property
    def crosscoder_steps(self) -> tuple[int, ...]:
        """Training steps of the checkpoints the crosscoder reads at once (notebook 06), in training order."""
        indices = self.crosscoder.snapshot_indices(self.model.checkpoint_steps)
        return tuple(self.model.checkpoint_steps[i] for i in indices)

    @property
    def chain_seed(self) -> int:
        """The seed of everything after the model: ``chain.seed``, or the run seed when it is None.

        It draws the windows every token set reads (:class:`~saetrack.data.cache_plan.TokenPlan`), every SAE's
        initialisation and shuffle, and the analyses' random samples; the run seed alone draws the model suite.
        """
        return self.seed if self.chain.seed is None else self.chain.seed

    @property
    def noise_floor_links(self) -> int:
        """Links of the drift noise floor: ``drift.noise_floor_links``, or as many as the chain has after its first
        (T - 1) when it is None; 0: no floor."""
        configured = self.drift.noise_floor_links
        return max(len(self.chain.schedule) - 1, 0) if configured is None else configured

    def layer_runs(self) -> tuple[RunConfig, ...]:
        """The single-layer run of every layer of ``cache.layers`` (``()`` for a single-layer run): this config with
        ``cache.layer = l`` and no ``cache.layers``, its preset named ``<preset>/layer{l}`` (so its figures go to
        ``figures/<preset>/layer{l}/``). Each is exactly the run a user would make for that layer alone, with the
        same config hashes, so its outputs are that run's (:mod:`saetrack.pipeline.layers`)."""
        return tuple(
            self.with_overrides(
                {"preset": f"{self.preset}/{paths.layer_dir_name(layer)}", "cache.layer": layer, "cache.layers": []}
            )
            for layer in self.cache.layers
        )

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
        check_types("run", cls, {name: value for name, value in data.items() if name not in _SECTIONS})
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
    check_types(name, section, coerced)
    return section(**coerced)
