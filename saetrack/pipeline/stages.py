"""Running the pipeline: each stage of :data:`saetrack.pipeline.shape.STAGES` executed through its notebook, or skipped.

:func:`run_stages` (used by ``saetrack run`` / ``run_all.py`` and by the scale study for each model size) walks
:data:`STAGES` in order. A stage is current when every output folder's manifest matches the config *and* its notebook
last finished for those outputs (a marker written after the notebook's last cell, so a run killed between computing
and drawing re-executes the notebook, which then only draws). Current stages are skipped (and say so); anything else
is executed through its notebook, which itself resumes from whatever finished artifacts it finds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from saetrack import store
from saetrack.config.run import RunConfig
from saetrack.notebooks import notebook_parameters, run_notebook
from saetrack.pipeline.layers import run_layers
from saetrack.pipeline.shape import STAGES, Stage, get_stage

__all__ = [
    "STAGES",
    "Stage",
    "get_stage",
    "last_executions",
    "run_stages",
    "stage_hashes",
]


def stage_hashes(run: RunConfig) -> dict[str, str]:
    """Output folder (relative to the run directory) -> the config hash its manifest must carry, for every stage."""
    hashes: dict[str, str] = {}
    for stage in STAGES:
        hashes.update(stage.output_hashes(run))
    return hashes


def last_executions(run: RunConfig, run_dir: Path) -> list[tuple[str, float, bool]]:
    """``(stage, seconds, current)`` for every stage whose notebook last finished in ``run_dir``: the wall time of its
    last execution (from its marker) and whether that execution was for ``run``'s config - what ``--plan`` prints
    beside the projection."""
    out = []
    for stage in STAGES:
        marker = stage.marker(run_dir)
        try:
            record = store.read_json(marker) if marker.exists() else None
        except (OSError, ValueError, store.StaleArtifactError):
            record = None
        if record and isinstance(record.get("seconds"), (int, float)):
            out.append((stage.name, float(record["seconds"]), record.get("outputs") == stage.output_hashes(run)))
    return out


def run_stages(
    run: RunConfig,
    run_dir: Path,
    *,
    only: Sequence[str] | None = None,
    skip: Sequence[str] = (),
    force: bool = False,
    rerun: bool = False,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    outputs_only: bool = False,
    echo: bool = True,
) -> float:
    """Run (or skip, when current) the pipeline's stages for ``run`` in order; return the seconds taken.

    ``only`` restricts to some stages, ``skip`` leaves some out; ``force`` rebuilds current outputs, ``rerun``
    re-executes the notebooks of current stages without rebuilding (regenerates figures); ``outputs_only`` counts a
    stage as current when its outputs are, whether or not its notebook finished (figures drawn). Each stage logs one
    line when it starts and one with its time when it ends; in between, with ``echo``, its notebook's printed output
    and progress bars stream to ``sys.stdout`` as they come, each line prefixed with ``  <preset>:<stage> | ``
    (:class:`saetrack.notebooks.OutputEcho`); the scale stage's notebook, which runs the other sizes' pipelines and
    prints their stage lines, always streams. A run of several layers (``cache.layers``) runs each layer's stages
    (:func:`~saetrack.pipeline.layers.run_layers`). A failing notebook raises
    :class:`saetrack.notebooks.NotebookFailed` naming the notebook, cell, error and partly executed copy.
    """

    names = [s.name for s in STAGES]
    unknown = sorted(set(only or []).union(skip) - set(names))
    if unknown:
        raise KeyError(f"{unknown} are not stages; stages: {names}")
    if run.cache.layers:  # one single-layer run per layer, inputs and forwards shared (saetrack.pipeline.layers)
        return run_layers(run, run_dir, run_one=run_stages, only=only, skip=skip, force=force, rerun=rerun,
                          device=device, log=log, outputs_only=outputs_only, echo=echo)  # fmt: skip
    started = time.perf_counter()
    for stage in STAGES:
        if (only and stage.name not in only) or stage.name in skip:
            continue
        if not stage.enabled(run):
            log(f"[{run.preset}:{stage.name}] off for this preset ({stage.switch} = False), skipped")
            continue
        current = stage.outputs_current(run, run_dir) if outputs_only else stage.is_current(run, run_dir)
        if not (force or rerun) and current:
            log(f"[{run.preset}:{stage.name}] up to date, nothing to do (outputs match the config)")
            continue
        log(f"[{run.preset}:{stage.name}] running {stage.notebook}: {stage.description} ...")
        result = run_notebook(
            stage.notebook,
            notebook_parameters(run, run_dir, force, device),
            run_dir,
            echo=sys.stdout if echo or stage.name == "scale" else None,
            label=f"{run.preset}:{stage.name}",
        )
        stage.mark_done(run, run_dir, result.seconds)
        log(f"[{run.preset}:{stage.name}] done in {result.seconds:.1f} s -> {result.output}")
    return time.perf_counter() - started
