"""Config section of the feature-evolution explorer (notebook 07): what each feature page shows, read by its stage."""

from __future__ import annotations

from dataclasses import dataclass

from saetrack.config.base import fail, require_positive

__all__ = ["ExplorerConfig"]


@dataclass(frozen=True)
class ExplorerConfig:
    """The explorer stage: static pages of every feature of the chain across its checkpoints (notebook 07)."""

    #: Whether notebook 07 runs for this preset (``run_all.py`` skips the stage, and its plan, when off).
    enabled: bool = True
    #: Top contexts shown per checkpoint on a feature page (the paper's Fig. 2 cell for every checkpoint); at most the
    #: formation stage's ``top_k`` (it stores that many datapoints per feature and checkpoint).
    contexts_per_checkpoint: int = 5
    #: Tokens shown before and after the activating token of a context (shaded by the feature's activation on each).
    context_before: int = 8
    context_after: int = 2
    #: Nearest features by decoder cosine at the final checkpoint, listed on a feature page.
    nearest: int = 8

    def __post_init__(self) -> None:
        require_positive("explorer", {"contexts_per_checkpoint": self.contexts_per_checkpoint, "nearest": self.nearest})
        for name in ("context_before", "context_after"):
            if getattr(self, name) < 0:
                fail("explorer", name, getattr(self, name), "must be >= 0")
