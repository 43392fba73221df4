"""The plan of notebook 05's stage: the scale study's other model sizes and the seed study's runs, each a whole
pipeline (notebooks 01-04) planned like the main run, one line each.

Each seed-study run carries :data:`~saetrack.stages.scale.seeds.LIGHT_OVERRIDES`; a chain-seed variant shares its
model suite, so its suite training is not counted again. The jobs run two at a time on separate threads, which
share the same machine: the projection is the work's total, not divided.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from saetrack.config.presets import get_preset
from saetrack.config.run import RunConfig
from saetrack.planning.cache import suite_training
from saetrack.planning.common import PlanInputs, StagePlan, plan_inputs
from saetrack.stages.scale.seeds import seed_variants

__all__ = ["PIPELINE_OWNERS", "plan"]

#: The stages whose lines a scale or seed-study job plans (notebooks 01-04).
PIPELINE_OWNERS = ("cache", "chain", "formation", "drift")


def _pipeline_line(
    name: str, run: RunConfig, own_suite: bool, inputs: PlanInputs, plan_of: Callable[[PlanInputs], list[StagePlan]]
) -> StagePlan:
    """One line for the whole pipeline (notebooks 01-04) of ``run``."""
    job = plan_inputs(run.with_overrides({"scale.presets": (), "scale.seed_preset": ""}), inputs.rates)
    stages = [s for s in plan_of(job) if s.owner in PIPELINE_OWNERS]
    total = StagePlan(name, owner="scale")
    if not own_suite:  # the suite is adopted from the variant that trained it
        total.seconds -= suite_training(job)[1]
    total.forward_tokens = sum(s.forward_tokens for s in stages)
    total.sae_tokens = sum(s.sae_tokens for s in stages)
    total.disk = sum(s.disk for s in stages)
    total.host = max(s.host for s in stages)
    total.device = max(s.device for s in stages)
    total.seconds += sum(s.seconds for s in stages)
    total.notes.append(f"notebooks 01-04 of {run.preset}: d_sae {job.d_sae:,}, {job.n_checkpoints} links")
    return total


def plan(inputs: PlanInputs, plan_of: Callable[[PlanInputs], list[StagePlan]]) -> list[StagePlan]:
    """One line per other size of the scale study (``scale <preset>``) and per seed-study run (``seeds <name>``);
    ``plan_of`` plans a whole run (:func:`saetrack.planning.plan_run`'s per-stage lines)."""
    run = inputs.run
    sizes = [p for p in run.scale.presets if p != run.preset]
    lines = [_pipeline_line(f"scale {p}", get_preset(p), True, inputs, plan_of) for p in sizes]
    if run.scale.seed_preset:
        folders = {p: Path(p) for p in (*run.scale.presets, run.preset)}
        for variant in seed_variants(run, Path("."), folders):
            if not variant.shared:
                own = variant.model == variant.name
                lines.append(_pipeline_line(f"seeds {variant.name}", variant.run, own, inputs, plan_of))
    return lines
