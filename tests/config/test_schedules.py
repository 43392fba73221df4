"""Checkpoint schedules: Pythia's 154 checkpoints (Eq. 25), the paper's SAE schedule (Eq. 26), Pythia-like ones."""

from __future__ import annotations

import pytest

from saetrack.config import ConfigError
from saetrack.config.schedules import PAPER_SAE_SCHEDULE, PYTHIA_CHECKPOINT_STEPS, pythia_like_steps


def test_pythia_checkpoint_list_matches_eq25() -> None:
    assert len(PYTHIA_CHECKPOINT_STEPS) == 154
    assert PYTHIA_CHECKPOINT_STEPS[:11] == (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
    assert PYTHIA_CHECKPOINT_STEPS[11:] == tuple(range(1000, 143_001, 1000))


def test_paper_sae_schedule_is_eq26_plus_final() -> None:
    eq26 = [*range(12), *range(13, 33, 2), *range(33, 153, 20)]
    assert list(PAPER_SAE_SCHEDULE[:-1]) == eq26
    assert PAPER_SAE_SCHEDULE[-1] == 153


def test_paper_sae_schedule_indexes_the_papers_steps() -> None:
    assert len(PAPER_SAE_SCHEDULE) == 29  # 12 + 10 + 6 SAEs of Eq. 26, then the final checkpoint
    steps = [PYTHIA_CHECKPOINT_STEPS[i] for i in PAPER_SAE_SCHEDULE]
    assert steps[:12] == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000]
    assert steps[12:14] == [3000, 5000]  # indices 13, 15: every other 1000 steps
    assert steps[21:23] == [21_000, 23_000]  # index 31 (last of range(13, 33, 2)), then 33
    assert steps[-2:] == [123_000, 143_000]  # index 133, then the final checkpoint 153


def test_pythia_like_schedule_is_log_then_even() -> None:
    assert pythia_like_steps(2000, 20) == (0, 1, 2, 4, 8, 16, 32, 64, *range(100, 2001, 100))


def test_pythia_like_schedule_small_and_invalid() -> None:
    assert pythia_like_steps(48, 3) == (0, 1, 2, 4, 8, 16, 32, 48)  # the smoke suite's: spacing 16
    assert pythia_like_steps(5, 5) == (0, 1, 2, 3, 4, 5)  # spacing 1: no log part beyond step 0
    for total, n_even in ((10, 11), (10, 0)):
        with pytest.raises(ConfigError, match=rf"total_steps={total}, n_even={n_even}"):
            pythia_like_steps(total, n_even)
