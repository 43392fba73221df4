"""Checkpoint schedules.

Pythia's published checkpoints (Eq. 25), the paper's SAE schedule (Eq. 26) and Pythia-like schedules for the nano
suite.
"""

from __future__ import annotations

from saetrack.config.base import ConfigError

__all__ = [
    "PAPER_SAE_SCHEDULE",
    "PYTHIA_CHECKPOINT_STEPS",
    "pythia_like_steps",
]


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
