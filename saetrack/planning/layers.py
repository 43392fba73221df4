"""The plan of a run of several layers (``cache.layers``): every layer's own run planned as a single-layer run, its
lines named ``L<layer> <line>``, with what the layers share counted once.

Shared (:mod:`saetrack.pipeline.layers`): the corpus and the model suite (the first layer's lines carry them), and,
cached, the activation cache's forward - one forward per checkpoint and batch to the deepest layer feeds every
layer (:func:`~saetrack.stages.cache.layers.cache_layers`), so its tokens and time are the deepest layer's line and
the other layers' cache lines hold only their disk. Streamed, the chains and baselines of all layers train side by
side from one forward per batch (:mod:`saetrack.stages.chain.lockstep`): their forward tokens and time are the
deepest layer's lines, and each of those lines' device memory is every layer's at once (they train together). The
comparison's SAEs and the analyses run per layer with their own forwards; so do the links of a ``torchrun`` job
(:mod:`saetrack.pipeline.ranked`), layer after layer. The scale study is not run per layer.
"""

from __future__ import annotations

from collections.abc import Callable

from saetrack.config.run import RunConfig
from saetrack.pipeline.shape import get_stage
from saetrack.planning.cache import suite_training
from saetrack.planning.common import PlanInputs, StagePlan, plan_inputs
from saetrack.rates import Rates
from saetrack.stages.chain.lockstep import side_by_side

__all__ = ["plan_layers"]


def _shared_cache(line: StagePlan, inputs: PlanInputs, first: bool, deepest: int) -> None:
    """Make layer ``inputs.run.cache.layer``'s cache line count only its own share (module doc)."""
    run = inputs.run
    suite_seconds = suite_training(inputs)[1]
    forward_seconds = line.seconds - suite_seconds
    line.seconds = suite_seconds if first else 0.0
    if not first:
        line.notes = [n for n in line.notes if not n.startswith(("trains the model suite", "downloads"))]
        if run.model.source == "hub":
            line.disk -= inputs.n_checkpoints * 2 * inputs.params  # the checkpoints are downloaded once
    if run.cache.streamed:
        return
    if run.cache.layer == deepest:
        line.seconds += forward_seconds
        line.notes.append("one forward per batch to this, the deepest layer, caches every layer")
    else:
        line.forward_tokens = 0
        line.notes.append(f"activations captured in layer {deepest}'s forward (no forward of its own)")


def _shared_links(line: StagePlan, inputs: PlanInputs, deepest: int, n_layers: int) -> None:
    """Make a streamed layer's chain or baselines line count its share of the lock-step training (module doc)."""
    line.device *= n_layers
    if inputs.run.cache.layer == deepest:
        line.notes.append(f"lock-step: one forward per batch to this, the deepest layer, feeds all {n_layers} layers; "
                          "device memory: every layer's SAE training and model at once")  # fmt: skip
        return
    line.seconds -= line.forward_tokens * inputs.forward_seconds
    line.forward_tokens = 0
    line.notes.append(f"rows captured in layer {deepest}'s forward (lock-step)")


def plan_layers(
    run: RunConfig, rates: Rates, ranks: int, plan_of: Callable[[PlanInputs], list[StagePlan]]
) -> list[StagePlan]:
    """The lines of every layer of ``run.cache.layers`` (module doc), ``plan_of`` planning one single-layer run
    (:func:`saetrack.planning.stage_lines`) over ``ranks`` ranks."""
    layer_runs = run.layer_runs()
    deepest = layer_runs[-1].cache.layer
    lockstep = side_by_side(run, ranks)
    lines: list[StagePlan] = []
    for index, layer_run in enumerate(layer_runs):
        inputs = plan_inputs(layer_run, rates, ranks)
        layer = layer_run.cache.layer
        for line in plan_of(inputs):
            if not get_stage(line.owner).per_layer or (line.stage == "corpus" and index):
                continue
            if line.stage == "cache":
                _shared_cache(line, inputs, index == 0, deepest)
            if line.stage in ("chain", "baselines") and lockstep:
                _shared_links(line, inputs, deepest, len(layer_runs))
            line.stage = f"L{layer} {line.stage}"
            lines.append(line)
    return lines
