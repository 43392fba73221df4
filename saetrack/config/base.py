"""Validation helpers and the config hash shared by every config section."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "PRESETS",
    "ConfigError",
    "config_hash",
    "fail",
    "require_positive",
]


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field, the value and what is allowed."""


def fail(owner: str, name: str, value: Any, allowed: str) -> None:
    """Raise :class:`ConfigError` naming ``owner.name``, the bad ``value`` and what is ``allowed``."""
    raise ConfigError(f"{owner}.{name} = {value!r} is invalid: {allowed}.")


def require_positive(owner: str, values: Mapping[str, float | int]) -> None:
    """Raise :class:`ConfigError` for the first of ``values`` (field name -> value) that is not > 0."""
    for name, value in values.items():
        if not value > 0:
            fail(owner, name, value, "must be > 0")


def config_hash(payload: Any) -> str:
    """SHA-256 (first 16 hex digits) of the canonical JSON of ``payload``."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


#: Preset name -> builder of its :class:`~saetrack.config.run.RunConfig`. Filled by
#: :mod:`saetrack.config.presets` (imported with the package); sections that must name known presets (the scale
#: study) read it here, so the sections need not import the presets that are built from them.
PRESETS: dict[str, Callable[[], Any]] = {}
