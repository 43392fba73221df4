"""saetrack: SAE-Track — chains of sparse autoencoders over a language model's training checkpoints.

A thin helper package behind the numbered notebooks: configuration (:mod:`saetrack.config`), the offline
corpus and nano model suite, checkpoint loading, the activation cache, the SAE chain, and the analyses and
figures of *Tracking the Feature Dynamics in LLM Training: A Mechanistic Study* (arXiv 2412.17626).

The run API, :func:`saetrack.open_run` and :class:`saetrack.Run` (:mod:`saetrack.api`), is imported on first
access, so ``import saetrack`` stays light (no torch).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = ["Run", "__version__", "open_run"]

#: Names served lazily from :mod:`saetrack.api` (it imports torch and the stages).
_LAZY_API = ("Run", "open_run")


def __getattr__(name: str) -> Any:
    """``saetrack.open_run`` / ``saetrack.Run``, imported from :mod:`saetrack.api` on first access."""
    if name in _LAZY_API:
        value = getattr(importlib.import_module("saetrack.api"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'saetrack' has no attribute {name!r}")
