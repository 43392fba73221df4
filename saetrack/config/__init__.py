"""Configuration: one validated dataclass per pipeline section, the run that bundles them, and the presets.

* :mod:`~saetrack.config.base` — :class:`ConfigError`, the config hash, the preset registry;
* :mod:`~saetrack.config.schedules` — Pythia's checkpoints and the paper's SAE schedule (Eq. 25-26);
* :mod:`~saetrack.config.data` — corpus, nano suite, model checkpoints, activation cache;
* :mod:`~saetrack.config.chain` — the SAE-Track chain;
* :mod:`~saetrack.config.analysis` — formation, drift, scale study;
* :mod:`~saetrack.config.crosscoder` — the cross-snapshot crosscoder (notebook 06);
* :mod:`~saetrack.config.explorer` — the feature-evolution explorer (notebook 07);
* :mod:`~saetrack.config.run` — :class:`RunConfig`, the whole run;
* :mod:`~saetrack.config.presets` — the named presets and :func:`get_preset`.

Dataclasses validate themselves in ``__post_init__`` and raise :class:`ConfigError` naming the field, the bad
value and what is allowed. Everything public is re-exported here: ``from saetrack.config import RunConfig``.
"""

from saetrack.config.analysis import DriftConfig, FormationConfig, ScaleConfig
from saetrack.config.base import PRESETS, ConfigError, config_hash
from saetrack.config.chain import ChainConfig
from saetrack.config.crosscoder import CrosscoderConfig
from saetrack.config.data import CacheConfig, CorpusConfig, ModelConfig, SuiteConfig
from saetrack.config.explorer import ExplorerConfig
from saetrack.config.presets import DEFAULT_PRESET, NANO_SCALE, get_preset
from saetrack.config.run import RunConfig
from saetrack.config.schedules import PAPER_SAE_SCHEDULE, PYTHIA_CHECKPOINT_STEPS, pythia_like_steps

__all__ = [
    "DEFAULT_PRESET",
    "NANO_SCALE",
    "PAPER_SAE_SCHEDULE",
    "PRESETS",
    "PYTHIA_CHECKPOINT_STEPS",
    "CacheConfig",
    "ChainConfig",
    "ConfigError",
    "CorpusConfig",
    "CrosscoderConfig",
    "DriftConfig",
    "ExplorerConfig",
    "FormationConfig",
    "ModelConfig",
    "RunConfig",
    "ScaleConfig",
    "SuiteConfig",
    "config_hash",
    "get_preset",
    "pythia_like_steps",
]
