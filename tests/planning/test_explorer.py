"""The explorer stage's plan: one line owned by the stage, its site's disk bound, forwards only when streamed."""

from __future__ import annotations

from saetrack.config import get_preset
from saetrack.planning.common import PlanInputs, StagePlan, plan_inputs
from saetrack.planning.explorer import PLOTLY_BYTES, explorer_disk_bytes, plan
from tests.planning.conftest import RATES, by_line


def _line(preset: str, **overrides: object) -> tuple[StagePlan, PlanInputs]:
    """The explorer line of ``preset`` (with ``overrides``) and its plan inputs."""
    run = get_preset(preset)
    if overrides:
        run = run.with_overrides(overrides)
    inputs = plan_inputs(run, RATES)
    lines = plan(inputs)
    assert len(lines) == 1
    return lines[0], inputs


def test_the_smoke_line_reads_the_cache_and_bounds_the_site() -> None:
    line, inputs = _line("smoke")
    assert line.stage == line.owner == "explorer"
    assert line.forward_tokens == 0 and line.sae_tokens == 0  # cached: no model forward
    assert line.disk == explorer_disk_bytes(inputs) > PLOTLY_BYTES
    assert line.host > 0 and line.device > 0 and line.seconds > 0
    assert f"{inputs.d_sae:,} feature pages" in line.notes[0]
    # the same line in the whole plan, and none when the stage is off
    assert by_line("smoke")["explorer"] == line
    assert "explorer" not in by_line("smoke", **{"explorer.enabled": False})


def test_disk_grows_with_the_contexts_shown() -> None:
    few, _ = _line("smoke", **{"explorer.contexts_per_checkpoint": 2})
    default, _ = _line("smoke")
    many, _ = _line("smoke", **{"explorer.contexts_per_checkpoint": 20})
    wide, _ = _line("smoke", **{"explorer.context_before": 30})
    assert few.disk < default.disk < many.disk
    assert default.disk < wide.disk
    assert few.host < default.host < many.host
    # the per-context part is linear in the contexts shown
    assert many.disk - default.disk == 5 * (default.disk - few.disk)  # 15 more contexts against 3 more


def test_a_streamed_preset_reads_each_analysis_set_once() -> None:
    line, inputs = _line("pythia-410m-l4")
    assert inputs.run.cache.streamed
    assert line.forward_tokens == inputs.context_tokens("analysis") * inputs.n_checkpoints > 0
    assert line.owner == "explorer"
    assert line.seconds > line.forward_tokens * inputs.forward_seconds  # plus the dot products and the pages
    cached_device = _line("smoke")[0].device
    assert line.device > cached_device  # the model on the device as well
    assert line.disk == explorer_disk_bytes(inputs)
