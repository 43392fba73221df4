"""RunConfig: sections checked against each other, dotted overrides, (de)serialisation and per-stage hashes."""

from __future__ import annotations

import pytest

from saetrack.config import ConfigError, ModelConfig, RunConfig, ScaleConfig, get_preset


def test_layer_outside_model_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"cache\.layer = 9 .*\[0, 4\)"):
        get_preset("nano", {"cache.layer": 9})


def test_checkpoint_not_in_suite_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"chain\.schedule .*indices must lie in \[0, 28\)"):
        get_preset("nano", {"chain.schedule": (0, 5, 40), "chain.baseline": ()})


def test_unknown_override_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"unknown config field 'chain\.l2_coefficient'"):
        get_preset("smoke", {"chain.l2_coefficient": 1.0})


def test_overrides_change_the_stage_hash() -> None:
    base = get_preset("smoke")
    changed = base.with_overrides({"chain.l1_coefficient": 2e-3})
    assert base.section_hash("chain") != changed.section_hash("chain")
    assert base.section_hash("cache") == changed.section_hash("cache")


def test_sae_and_baseline_steps_follow_the_schedule_indices() -> None:
    run = get_preset("smoke", {"chain.schedule": (0, 3, 5, 7), "chain.baseline": (5,)})
    assert run.model.checkpoint_steps == (0, 1, 2, 4, 8, 16, 32, 48)
    assert run.sae_steps == (0, 4, 16, 48)
    assert run.baseline_steps == (16,)
    assert isinstance(run.chain.schedule, tuple)  # list overrides come back as tuples


def test_to_dict_is_json_ready_and_from_dict_checks_fields() -> None:
    run = get_preset("smoke")
    data = run.to_dict()
    assert data["chain"]["schedule"] == list(run.chain.schedule) and data["preset"] == "smoke"
    with pytest.raises(ConfigError, match=r"run has no field\(s\) \['colour'\]"):
        RunConfig.from_dict({**data, "colour": "red"})
    with pytest.raises(ConfigError, match=r"chain has no field\(s\) \['l2'\]"):
        RunConfig.from_dict({**data, "chain": {**data["chain"], "l2": 1.0}})


def test_section_hash_covers_the_seed_and_only_the_named_sections() -> None:
    run = get_preset("smoke")
    assert run.section_hash("corpus", "suite") == run.section_hash("corpus", "suite")
    assert run.with_overrides({"seed": 1}).section_hash("cache") != run.section_hash("cache")
    assert run.with_overrides({"formation.top_k": 10}).section_hash("corpus", "suite", "cache", "chain") == (
        run.section_hash("corpus", "suite", "cache", "chain")
    )
    assert len(run.section_hash("chain")) == 16


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"seed": -1}, r"run\.seed = -1"),
        ({"cache.context_length": 64}, r"cache\.context_length = 64 .*<= the model's context length 32"),
        ({"model.checkpoint_steps": (0, 1)}, r"model\.checkpoint_steps .*must equal the suite's schedule"),
        ({"model.n_layers": 3}, r"model\.n_layers = 3 .*suite\.n_layers=2"),
        ({"suite": None}, r"model\.source='suite' needs both a suite and a corpus"),
    ],
)
def test_sections_must_agree(overrides: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        get_preset("smoke", overrides)


def test_scale_study_must_include_the_runs_own_preset() -> None:
    with pytest.raises(ConfigError, match=r"scale\.presets .*must include this run's preset 'smoke'"):
        get_preset("smoke", {"scale.presets": ("smoke-s", "smoke-m")})
    # a run that is no preset (built by hand) may study preset sizes only
    model = ModelConfig(source="hub", repo_id="org/model", checkpoint_steps=(0, 1))
    assert RunConfig(preset="mine", model=model, scale=ScaleConfig(presets=("smoke",))).scale.presets == ("smoke",)
