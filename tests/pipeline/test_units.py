"""A spread job's units, read from the pipeline's shape: every part of every run, each waiting for what it reads."""

from __future__ import annotations

from pathlib import Path

from saetrack.config import RunConfig
from saetrack.pipeline.shape import PARTS, STAGE_NAMES, get_part
from saetrack.pipeline.units import spread_units


def test_every_part_belongs_to_a_stage_and_reads_earlier_parts() -> None:
    seen: set[str] = set()
    for part in PARTS:
        assert part.stage in STAGE_NAMES
        assert set(part.inputs) <= seen, f"{part.name} reads a part declared after it"
        seen.add(part.name)
    assert get_part("noise_floor").inputs == ("chain",)


def test_a_single_layer_run_has_its_parts_as_units(run: RunConfig, tmp_path: Path) -> None:
    units = {u.name: u for u in spread_units(run, tmp_path, only=["cache", "chain", "formation", "drift"])}
    assert list(units) == ["inputs", "chain", "baselines", "seed_control", "noise_floor", "formation", "drift"]
    assert units["seed_control"].after == ("baselines",)
    assert units["drift"].after == ("formation", "noise_floor")
    assert units["formation"].after == ("chain", "baselines")  # its control: formation on the from-scratch SAEs
    assert all(u.run_dir == tmp_path for u in units.values())


def test_the_baselines_wait_for_the_chain_when_they_read_its_calibrated_penalty(run: RunConfig, tmp_path: Path) -> None:
    calibrated = run.with_overrides({"chain.target_l0": 8})
    units = {u.name: u for u in spread_units(calibrated, tmp_path, only=["cache", "chain"])}
    assert units["baselines"].after == ("inputs", "chain")  # chain/calibration.json holds their lambda
    assert {u.name: u for u in spread_units(run, tmp_path, only=["chain"])}["baselines"].after == ()


def test_layers_share_one_inputs_unit_and_keep_their_own_folders(run: RunConfig, tmp_path: Path) -> None:
    multi = run.with_overrides({"cache.layers": [0, 1]})
    units = {u.name: u for u in spread_units(multi, tmp_path, only=["cache", "chain"])}
    assert list(units) == ["inputs", "layer0/chain", "layer0/baselines", "layer0/seed_control", "layer1/chain",
                           "layer1/baselines", "layer1/seed_control"]  # fmt: skip
    assert units["layer1/chain"].after == ("inputs",)
    assert units["layer1/chain"].run_dir == tmp_path / "layer1"
    assert units["layer1/chain"].run == multi.layer_runs()[1]


def test_unselected_stages_and_parts_that_do_not_apply_are_left_out(run: RunConfig, tmp_path: Path) -> None:
    light = run.with_overrides({"chain.seed_control": 0, "drift.noise_floor_links": 0})
    names = [u.name for u in spread_units(light, tmp_path, only=["chain", "formation", "drift"])]
    assert names == ["chain", "baselines", "formation", "drift"]
    assert {u.name: u.after for u in spread_units(light, tmp_path, only=["drift"])} == {"drift": ()}


def test_the_scale_study_adds_the_other_sizes_and_the_seed_variants(run: RunConfig, tmp_path: Path) -> None:
    units = {u.name: u for u in spread_units(run, tmp_path)}
    others = [p for p in run.scale.presets if p != run.preset]
    for size in others:
        assert units[f"{size}/drift"].after == (f"{size}/formation", f"{size}/noise_floor")
        assert units[f"{size}/inputs"].run.preset == size
    variants = [u for u in units.values() if u.part == "variant"]
    assert variants, "the smoke preset has a seed study"
    for unit in variants:
        assert unit.name.startswith("seeds/") and unit.run_dir == tmp_path / unit.name
        assert all(a in units for a in unit.after)
    keys = {u.key for u in units.values()}
    assert len(keys) == len(units)  # every unit is done for its own config


def test_the_crosscoder_and_its_controls_are_one_unit_reading_the_inputs(run: RunConfig, tmp_path: Path) -> None:
    assert run.crosscoder.enabled
    units = {u.name: u for u in spread_units(run, tmp_path, only=["cache", "crosscoder"])}
    assert list(units) == ["inputs", "crosscoder"]
    assert units["crosscoder"].after == ("inputs",)  # the corpus and the model: not the chain
    off = run.with_overrides({"crosscoder.enabled": False})
    assert [u.name for u in spread_units(off, tmp_path, only=["cache", "crosscoder"])] == ["inputs"]
