"""The pipeline declared as data: stage -> notebook, inputs, outputs, and whether its outputs are current.

:func:`run_stages` (used by ``run_all.py`` and by the scale study for each model size) walks :data:`STAGES` in
order. A stage is current when every output folder's manifest matches the config *and* its notebook last finished
for those outputs (a marker written after the notebook's last cell, so a run killed between computing and drawing
re-executes the notebook, which then only draws). Current stages are skipped (and say so); anything else is
executed through its notebook, which itself resumes from whatever finished artifacts it finds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from saetrack import paths, store
from saetrack.config.run import RunConfig
from saetrack.notebooks import notebook_parameters, run_notebook
from saetrack.pipeline.skeleton import current_manifest
from saetrack.stages import cache as cache_stage
from saetrack.stages import chain as chain_stage
from saetrack.stages import crosscoder as crosscoder_stage
from saetrack.stages import drift as drift_stage
from saetrack.stages import formation as formation_stage
from saetrack.stages import scale as scale_stage
from saetrack.stages.chain import comparison as comparison_stage
from saetrack.stages.crosscoder import method_comparison as method_comparison_stage
from saetrack.stages.crosscoder import statistics as statistics_stage

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


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline, run by one notebook."""

    name: str
    notebook: str
    #: Names of the stages whose artifacts this stage reads.
    inputs: tuple[str, ...]
    #: The stage modules whose outputs this notebook writes; each has ``output_hashes(run) -> {folder: hash}``.
    modules: tuple[ModuleType, ...]
    description: str
    #: Whether the stage runs for a config (a stage that is off is skipped by :func:`run_stages`, saying why).
    enabled: Callable[[RunConfig], bool] = lambda run: True
    #: The config field that turns the stage off, named in the skip message.
    switch: str = ""

    def outputs(self, run: RunConfig) -> tuple[str, ...]:
        """Folders (relative to the run directory) this stage writes, each with a manifest."""
        return tuple(self.output_hashes(run))

    def output_hashes(self, run: RunConfig) -> dict[str, str]:
        """The config hash each of this stage's output folders must carry to count as current."""
        hashes: dict[str, str] = {}
        for module in self.modules:
            hashes.update(module.output_hashes(run))
        return hashes

    def marker(self, run_dir: Path) -> Path:
        """The file written when this stage's notebook finished: ``notebooks/<notebook>.done.json``."""
        return Path(run_dir) / paths.NOTEBOOKS_DIR / f"{Path(self.notebook).stem}.done.json"

    def outputs_current(self, run: RunConfig, run_dir: Path) -> bool:
        """Whether every output folder holds a finished manifest made with this config."""
        return all(
            current_manifest(Path(run_dir) / folder, digest) is not None
            for folder, digest in self.output_hashes(run).items()
        )

    def is_current(self, run: RunConfig, run_dir: Path) -> bool:
        """Outputs current and the notebook finished (figures drawn) for exactly these outputs."""
        marker = self.marker(run_dir)
        if not self.outputs_current(run, run_dir) or not marker.exists():
            return False
        try:
            return store.read_json(marker).get("outputs") == self.output_hashes(run)
        except (OSError, ValueError, store.StaleArtifactError):
            return False

    def mark_done(self, run: RunConfig, run_dir: Path, seconds: float) -> None:
        """Record that the notebook finished for the current outputs (atomically)."""
        store.write_json(self.marker(run_dir), {"outputs": self.output_hashes(run), "seconds": round(seconds, 1)})


#: The stages in execution order.
STAGES: tuple[Stage, ...] = (
    Stage(
        name="cache",
        notebook="01_cache_activations.ipynb",
        inputs=(),
        modules=(cache_stage,),
        description="corpus and tokenizer, the nano model suite (local presets), activation cache",
    ),
    Stage(
        name="chain",
        notebook="02_train_chain.ipynb",
        inputs=("cache",),
        modules=(chain_stage, comparison_stage),
        description="SAE-Track chain, independent baselines, convergence study and feature agreement",
    ),
    Stage(
        name="formation",
        notebook="03_feature_formation.ipynb",
        inputs=("cache", "chain"),
        modules=(formation_stage,),
        description="feature phases, patterns, regions, UMAP and progress measures (Fig. 2, 3, 4, 5, 8)",
    ),
    Stage(
        name="drift",
        notebook="04_feature_drift.ipynb",
        inputs=("chain", "formation"),
        modules=(drift_stage,),
        description="decoder drift, formation times, trajectories and phases (Fig. 6a, 6b, 7; phases on Fig. 5)",
    ),
    Stage(
        name="scale",
        notebook="05_scale_study.ipynb",
        inputs=("drift",),
        modules=(scale_stage,),
        description="the pipeline over the scale study's model sizes; per-size figures (Fig. 9-16) and a summary",
    ),
    Stage(
        name="crosscoder",
        notebook="06_crosscoder.ipynb",
        inputs=("cache", "chain", "drift"),
        modules=(crosscoder_stage, statistics_stage, method_comparison_stage),
        description="cross-snapshot crosscoder (Ge et al. 2025), statistical learning, and both methods side by side",
        enabled=lambda run: run.crosscoder.enabled,
        switch="crosscoder.enabled",
    ),
)


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


def get_stage(name: str) -> Stage:
    """The stage called ``name``; unknown names raise ``KeyError`` listing the known ones."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(f"unknown stage {name!r}; stages: {[s.name for s in STAGES]}")


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
    prints their stage lines, always streams. A failing notebook raises
    :class:`saetrack.notebooks.NotebookFailed` naming the notebook, cell, error and partly executed copy.
    """

    names = [s.name for s in STAGES]
    unknown = sorted(set(only or []).union(skip) - set(names))
    if unknown:
        raise KeyError(f"{unknown} are not stages; stages: {names}")
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
