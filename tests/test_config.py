"""Presets and config validation: bad values name the field, the value and what is allowed."""

from __future__ import annotations

import pytest

from saetrack.config import (
    PAPER_SAE_SCHEDULE,
    PRESETS,
    PYTHIA_CHECKPOINT_STEPS,
    ChainConfig,
    ConfigError,
    RunConfig,
    get_preset,
    pythia_like_steps,
)


def test_pythia_checkpoint_list_matches_eq25() -> None:
    assert len(PYTHIA_CHECKPOINT_STEPS) == 154
    assert PYTHIA_CHECKPOINT_STEPS[:11] == (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
    assert PYTHIA_CHECKPOINT_STEPS[11:] == tuple(range(1000, 143_001, 1000))


def test_paper_sae_schedule_is_eq26_plus_final() -> None:
    eq26 = [*range(12), *range(13, 33, 2), *range(33, 153, 20)]
    assert list(PAPER_SAE_SCHEDULE[:-1]) == eq26
    assert PAPER_SAE_SCHEDULE[-1] == 153


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_validates_and_round_trips(name: str) -> None:
    run = get_preset(name)
    assert RunConfig.from_dict(run.to_dict()) == run
    assert set(run.baseline_steps) <= set(run.sae_steps)
    assert run.sae_steps[0] not in run.baseline_steps  # the first link is itself from scratch


@pytest.mark.parametrize(
    ("name", "layer", "size", "expansion_dsae"),
    [("pythia-160m-l4", 4, "160m", 49152), ("pythia-410m-l4", 4, "410m", 65536), ("pythia-1.4b-l3", 3, "1.4b", 131072)],
)
def test_paper_presets_carry_the_papers_hyperparameters(name: str, layer: int, size: str, expansion_dsae: int) -> None:
    run = get_preset(name)
    chain = run.chain
    assert run.model.repo_id == f"EleutherAI/pythia-{size}-deduped"
    assert run.cache.hook_name == f"blocks.{layer}.hook_resid_pre"
    assert run.model.checkpoint_steps == PYTHIA_CHECKPOINT_STEPS
    assert chain.schedule == PAPER_SAE_SCHEDULE
    assert chain.expansion_factor * run.model.d_model == expansion_dsae
    assert (chain.l1_coefficient, chain.lr_first, chain.lr_link) == (8e-5, 4e-4, 4e-5)
    assert (chain.first_tokens, chain.link_tokens, chain.batch_size) == (300_000_000, 15_000_000, 4096)
    assert run.cache.context_length == 128
    assert chain.decoder_norm == "unit"


def test_pythia_like_schedule_is_log_then_even() -> None:
    assert pythia_like_steps(2000, 20) == (0, 1, 2, 4, 8, 16, 32, 64, *range(100, 2001, 100))


def test_unknown_preset_names_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match=r"preset = 'nope'.*allowed presets"):
        get_preset("nope")


def test_layer_outside_model_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"cache\.layer = 9 .*\[0, 4\)"):
        get_preset("nano", {"cache.layer": 9})


def test_checkpoint_not_in_suite_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"chain\.schedule .*indices must lie in \[0, 28\)"):
        get_preset("nano", {"chain.schedule": (0, 5, 40), "chain.baseline": ()})


@pytest.mark.parametrize(
    "field", ["chain.link_tokens", "chain.l1_coefficient", "suite.d_model", "cache.heldout_tokens"]
)
def test_non_positive_sizes_are_rejected(field: str) -> None:
    with pytest.raises(ConfigError, match=rf"{field} = 0 is invalid: must be > 0"):
        get_preset("nano", {field: 0})


def test_unknown_override_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"unknown config field 'chain\.l2_coefficient'"):
        get_preset("smoke", {"chain.l2_coefficient": 1.0})


def test_baseline_must_be_in_schedule() -> None:
    with pytest.raises(ConfigError, match=r"chain\.baseline"):
        ChainConfig(schedule=(0, 1, 2), baseline=(5,))


def test_overrides_change_the_stage_hash() -> None:
    base = get_preset("smoke")
    changed = base.with_overrides({"chain.l1_coefficient": 2e-3})
    assert base.section_hash("chain") != changed.section_hash("chain")
    assert base.section_hash("cache") == changed.section_hash("cache")
