"""The plan covers every stage of the pipeline's one description, and the paper presets fit one machine."""

from __future__ import annotations

import dataclasses

import pytest

from saetrack.config import get_preset
from saetrack.pipeline import shape
from saetrack.planning import GB, plan_run, planned_for
from saetrack.planning.common import ResourceError
from tests.planning.conftest import RATES


@pytest.mark.parametrize("preset", ["smoke", "nano", "pythia-410m-l4", "pythia-1.4b-l3", "pythia-160m-l6"])
def test_every_enabled_stage_has_plan_lines_named_for_it(preset: str) -> None:
    run = get_preset(preset)
    owners = {s.owner for s in plan_run(run, RATES)}
    enabled = {s.name for s in shape.STAGES if s.enabled(run)}
    if not [p for p in run.scale.presets if p != run.preset] and not run.scale.seed_preset:
        enabled.discard("scale")  # no other size and no seed study: nothing to plan
    assert owners == enabled


def test_a_new_stage_is_planned_from_its_own_declaration(monkeypatch) -> None:
    probe = dataclasses.replace(shape.get_stage("drift"), name="probe-stage")
    stages = (*shape.STAGES, probe)
    monkeypatch.setattr(shape, "STAGES", stages)
    monkeypatch.setattr("saetrack.planning.STAGES", stages)
    lines = plan_run(get_preset("nano"), RATES)
    assert [s.owner for s in lines].count("probe-stage") == 1  # its plan function ran, under its name
    with pytest.raises(TypeError):  # a stage cannot be declared without a plan
        shape.Stage(name="x", notebook="x.ipynb", inputs=(), modules=(), description="x")  # type: ignore[call-arg]


@pytest.mark.parametrize(("preset", "host_gb", "device_gb"), [("pythia-410m-l4", 64, 80), ("pythia-1.4b-l3", 64, 80)])
def test_the_paper_presets_fit_64_gb_of_host_memory_and_one_80_gb_gpu(preset: str, host_gb: int, device_gb: int):
    lines = [s for s in plan_run(get_preset(preset), RATES) if s.owner != "scale"]
    assert max(s.host for s in lines) <= host_gb * GB
    assert max(s.device for s in lines) <= device_gb * GB
    names = {s.stage for s in lines}
    assert {"chain", "baselines", "probes", "seed SAEs", "matching", "formation", "drift"} <= names


def test_only_the_stages_that_will_run_are_checked() -> None:
    paper = get_preset("pythia-160m-l4")
    lines = plan_run(paper, RATES)
    assert [s.stage for s in planned_for(lines, ["formation", "drift"])] == ["formation", "drift"]
    assert [s.stage for s in planned_for(lines, ["cache"])] == ["corpus", "cache"]
    assert planned_for(lines, None) == lines
    nano = get_preset("nano")
    got = [s.stage for s in planned_for(plan_run(nano, RATES), ["crosscoder"])]
    assert got == ["crosscoder", "statistics", "methods"]


def test_a_preset_without_model_shapes_cannot_be_planned() -> None:
    run = get_preset("pythia-410m-l4").with_overrides({"model.d_model": 0})
    with pytest.raises(ResourceError, match=r"does not state model\.d_model"):
        plan_run(run, RATES)
