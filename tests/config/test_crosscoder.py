"""The crosscoder config section: Ge et al.'s 32-snapshot rule on Pythia's schedule, validation, run-level checks."""

from __future__ import annotations

from itertools import pairwise

import pytest

from saetrack.config import ConfigError, CrosscoderConfig, get_preset
from saetrack.config.crosscoder import PAPER_EARLY_STEPS, default_snapshots
from saetrack.config.schedules import PYTHIA_CHECKPOINT_STEPS


def test_default_snapshots_on_pythia_are_the_papers_20_early_and_12_late() -> None:
    steps = PYTHIA_CHECKPOINT_STEPS
    assert len(steps) == 154
    picked = default_snapshots(steps, 32)
    assert len(picked) == 32 and list(picked) == sorted(set(picked))
    early = [i for i in picked if steps[i] < PAPER_EARLY_STEPS]
    assert early == list(range(20))  # every checkpoint before step 10000: 0, 1, 2, 4, ..., 512, 1000, ..., 9000
    late = [steps[i] for i in picked[20:]]
    # indices 20 + round(j * 133 / 11), j = 0..11, of the 134 checkpoints from step 10000 to 143000
    assert late == [10_000, 22_000, 34_000, 46_000, 58_000, 70_000, 83_000, 95_000, 107_000, 119_000, 131_000, 143_000]
    gaps = {b - a for a, b in pairwise(picked[20:])}
    assert gaps <= {12, 13}  # evenly spaced
    assert picked[-1] == len(steps) - 1


def test_default_snapshots_takes_all_checkpoints_when_they_fit() -> None:
    assert default_snapshots((0, 1, 2, 4, 8), 32) == (0, 1, 2, 3, 4)
    assert default_snapshots((0, 1, 2, 4, 8), 5) == (0, 1, 2, 3, 4)


def test_default_snapshots_keeps_the_last_when_early_ones_overflow() -> None:
    steps = tuple(range(0, 1000, 100))  # ten checkpoints, all before step 10000
    assert default_snapshots(steps, 4) == (0, 1, 2, 9)


def test_snapshot_indices_prefers_the_named_snapshots() -> None:
    steps = PYTHIA_CHECKPOINT_STEPS
    assert CrosscoderConfig(snapshots=(3, 7, 100)).snapshot_indices(steps) == (3, 7, 100)
    assert CrosscoderConfig(max_snapshots=32).snapshot_indices(steps) == default_snapshots(steps, 32)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("snapshots", (3, 1), "strictly ascending"),
        ("snapshots", (1, 1, 2), "strictly ascending"),
        ("snapshots", (4,), "at least two"),
        ("snapshots", (-1, 2), "must be >= 0"),
        ("emergence_fraction", 0.0, r"\(0, 1\]"),
        ("emergence_fraction", 1.5, r"\(0, 1\]"),
        ("decay_fraction", -0.1, r"\(0, 1\]"),
        ("sparsity_warmup", 1.0, r"\[0, 1\)"),
        ("pre_act_coefficient", -0.1, ">= 0"),
        ("max_snapshots", 1, ">= 2"),
        ("expansion_factor", 0, "> 0"),
        ("lr", 0.0, "> 0"),
        ("null_permutations", 0, "> 0"),
        ("dropped_early_max_step", -1, ">= 0"),
        ("dip_steps", (64, 8), "first <= last"),
        ("dip_steps", (8,), "two steps"),
    ],
)
def test_invalid_values_raise_config_error(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"crosscoder\.{field} = .* is invalid: .*{message}"):
        CrosscoderConfig(**{field: value})  # type: ignore[arg-type]


def test_run_config_rejects_snapshots_outside_the_model() -> None:
    with pytest.raises(ConfigError, match=r"crosscoder\.snapshots = \(0, 8\) .*\[0, 8\); \[8\] do not"):
        get_preset("smoke", {"crosscoder.snapshots": (0, 8)})
    run = get_preset("smoke", {"crosscoder.snapshots": (0, 3, 7)})
    assert run.model.checkpoint_steps == (0, 1, 2, 4, 8, 16, 32, 48)
    assert run.crosscoder_steps == (0, 4, 48)
    assert get_preset("smoke").crosscoder_steps == run.model.checkpoint_steps  # 8 checkpoints < 32: all of them
