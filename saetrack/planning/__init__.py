"""The resource plan of a run: before any work, what each stage will process and need.

For every stage of :data:`saetrack.pipeline.shape.STAGES` (each names its plan function, so a stage cannot be left
out): the tokens it runs through the model (forward passes), the SAE training tokens, the disk, host memory and
device memory it needs at its peak, and a projected time, one line per piece of its work. Everything is computed
from the config alone (no model, dataset or tokenizer is loaded) and from two rates measured on this machine when
the plan is made (:func:`saetrack.rates.measure_rates`). A projection is ``FLOPs / measured rate``: the FLOPs of a
model forward up to the hooked layer (``2 x parameters`` per token: attention and MLP of the blocks before the hook)
and of an SAE training step (``12 x d_in x d_sae`` per token, the forward and backward matmuls). It ignores data
loading and elementwise work, so on a quiet machine it is a lower bound; ``benchmarks/bench_streaming.py`` measures
whole runs. The stage modules say what each line counts.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

from saetrack.config.run import RunConfig
from saetrack.pipeline.shape import STAGES
from saetrack.planning.common import GB, PlanInputs, ResourceError, StagePlan, plan_inputs
from saetrack.planning.layers import plan_layers
from saetrack.rates import Rates

__all__ = ["GB", "PlanInputs", "ResourceError", "StagePlan", "plan_run", "planned_for", "stage_lines"]


def _plan_function(dotted: str) -> Callable[..., list[StagePlan]]:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def stage_lines(inputs: PlanInputs) -> list[StagePlan]:
    """Every enabled stage's plan lines, in pipeline order, each line's ``owner`` set to its stage."""
    lines: list[StagePlan] = []
    for stage in STAGES:
        if not stage.enabled(inputs.run):
            continue
        function = _plan_function(stage.plan)
        needs_whole = "plan_of" in inspect.signature(function).parameters
        produced = function(inputs, plan_of=stage_lines) if needs_whole else function(inputs)
        for line in produced:
            line.owner = stage.name
        lines += produced
    return lines


def plan_run(run: RunConfig, rates: Rates, ranks: int = 1) -> list[StagePlan]:
    """The resource plan of every stage of ``run`` (module doc), from the config and the measured ``rates``; with
    ``ranks`` > 1, of a ``torchrun`` job of that many ranks (the chain stage's data-parallel lines divided, memory per
    rank). A run of several layers (``cache.layers``) is planned layer by layer (:func:`~saetrack.planning.layers.
    plan_layers`)."""
    if run.cache.layers:
        return plan_layers(run, rates, ranks, stage_lines)
    return stage_lines(plan_inputs(run, rates, ranks))


def planned_for(stages: list[StagePlan], only: list[str] | None) -> list[StagePlan]:
    """The plan lines of the stages that will run (``only``: ``saetrack run --only``; all when ``None``): every line
    names its stage (``owner``)."""
    return [s for s in stages if not only or s.owner in only]
