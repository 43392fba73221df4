"""Presets: every preset validates, the paper presets carry the paper's hyperparameters, unknown names are refused."""

from __future__ import annotations

import pytest

from saetrack.config import (
    DEFAULT_PRESET,
    NANO_SCALE,
    PAPER_SAE_SCHEDULE,
    PRESETS,
    PYTHIA_CHECKPOINT_STEPS,
    ConfigError,
    RunConfig,
    get_preset,
)
from saetrack.config.presets import _baseline_indices


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_validates_and_round_trips(name: str) -> None:
    run = get_preset(name)
    assert RunConfig.from_dict(run.to_dict()) == run
    assert set(run.baseline_steps) <= set(run.sae_steps)
    assert run.sae_steps[0] not in run.baseline_steps  # the first link is itself from scratch


@pytest.mark.parametrize(
    ("name", "layer", "size", "expansion_dsae"),
    [
        ("pythia-160m-l4", 4, "160m", 49152),
        ("pythia-410m-l4", 4, "410m", 65536),
        ("pythia-1.4b-l3", 3, "1.4b", 131072),
        ("pythia-160m-l6", 6, "160m", 49152),
    ],
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


def test_the_crosscoder_papers_preset_reads_its_32_checkpoints() -> None:
    """pythia-160m-l6: Ge et al. (2025)'s Pythia-160m-deduped layer-6 setting; the chain is the l4 preset's."""
    run = get_preset("pythia-160m-l6")
    early = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000]
    late = [10_000, 22_000, 34_000, 46_000, 58_000, 70_000, 83_000, 95_000, 107_000, 119_000, 131_000, 143_000]
    assert run.crosscoder_steps == tuple(early + late)
    assert run.crosscoder.snapshots == () and run.crosscoder.expansion_factor is None
    cc = run.crosscoder
    assert (cc.train_contexts * run.cache.context_length, cc.epochs, cc.batch_size) == (300_000_000, 1, 4096)
    assert run.scale.presets == ("pythia-160m-l6",)
    l4 = get_preset("pythia-160m-l4").to_dict()
    l6 = run.to_dict()
    assert l6["chain"] == l4["chain"] and l6["model"] == l4["model"]
    assert {k: v for k, v in l6["cache"].items() if k != "layer"} == {
        k: v for k, v in l4["cache"].items() if k != "layer"
    }


def test_unknown_preset_names_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match=r"preset = 'nope'.*allowed presets"):
        get_preset("nope")


def test_baseline_indices_spread_over_the_later_links() -> None:
    schedule = tuple(range(8))  # later links: 1..7
    assert _baseline_indices(schedule, 0) == ()
    assert _baseline_indices(schedule, 1) == (7,)  # one baseline: the final checkpoint
    assert _baseline_indices(schedule, 3) == (1, 4, 7)
    assert _baseline_indices(schedule, 7) == _baseline_indices(schedule, 50) == tuple(range(1, 8))
    assert _baseline_indices((0,), 5) == ()


def test_smoke_and_nano_presets() -> None:
    smoke = get_preset("smoke")
    assert smoke.preset == "smoke" and smoke.model.source == "suite"
    assert smoke.sae_steps == (0, 1, 2, 4, 8, 16, 32, 48)  # every checkpoint of the 48-step smoke suite
    assert smoke.baseline_steps == (1, 48)  # two baselines: the second and the final checkpoint
    assert smoke.scale.presets == ("smoke-s", "smoke-m", "smoke")
    assert get_preset("smoke-s").chain.baseline == ()
    assert DEFAULT_PRESET in PRESETS
    for name in NANO_SCALE:
        assert get_preset(name).scale.presets == NANO_SCALE
    assert [get_preset(n).model.d_model for n in NANO_SCALE] == sorted(get_preset(n).model.d_model for n in NANO_SCALE)


def test_get_preset_applies_overrides() -> None:
    run = get_preset("smoke", {"chain.l1_coefficient": 2e-3, "seed": 4})
    assert run.chain.l1_coefficient == 2e-3 and run.seed == 4
    assert get_preset("smoke").chain.l1_coefficient == 1e-3  # the preset itself is unchanged
