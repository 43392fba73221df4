"""The pipeline's shape, declared once as data: each stage's notebook, the stages it reads, the modules that write
its outputs, and the config switch that turns it off.

Read by :mod:`saetrack.pipeline.stages` (which runs the stages), by ``saetrack run`` / ``run_all.py`` (the stage names
of ``--only``, the resource plan) and by the output hashes. This module imports no stage: a stage's module is named
here and imported the first time its output hashes are asked for, so the command line's ``--help`` stays instant.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from saetrack import paths, store
from saetrack.config.run import RunConfig
from saetrack.pipeline.skeleton import current_manifest

__all__ = ["PARTS", "STAGES", "STAGE_NAMES", "Part", "Stage", "get_part", "get_stage", "stage_of_output"]


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline, run by one notebook."""

    name: str
    notebook: str
    #: Names of the stages whose artifacts this stage reads.
    inputs: tuple[str, ...]
    #: The stage modules (dotted names, imported when first needed) whose outputs this notebook writes; each has
    #: ``output_hashes(run) -> {folder: hash}``.
    modules: tuple[str, ...]
    description: str
    #: The function (dotted name, imported when a plan is made) that plans this stage's resources:
    #: ``plan(inputs: PlanInputs) -> list[StagePlan]`` (:mod:`saetrack.planning`).
    plan: str
    #: Whether the stage runs for a config (a stage that is off is skipped by :func:`run_stages`, saying why).
    enabled: Callable[[RunConfig], bool] = lambda run: True
    #: The config field that turns the stage off, named in the skip message.
    switch: str = ""
    #: Whether a run of several layers (``cache.layers``, :mod:`saetrack.pipeline.layers`) runs this stage for each
    #: layer; the scale study compares model sizes at their presets' own layers and is not.
    per_layer: bool = True

    def outputs(self, run: RunConfig) -> tuple[str, ...]:
        """Folders (relative to the run directory) this stage writes, each with a manifest."""
        return tuple(self.output_hashes(run))

    def output_hashes(self, run: RunConfig) -> dict[str, str]:
        """The config hash each of this stage's output folders must carry to count as current."""
        hashes: dict[str, str] = {}
        for name in self.modules:
            hashes.update(importlib.import_module(name).output_hashes(run))
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
        plan="saetrack.planning.cache.plan",
        modules=("saetrack.stages.cache",),
        description="corpus and tokenizer, the nano model suite (local presets), activation cache",
    ),
    Stage(
        name="chain",
        notebook="02_train_chain.ipynb",
        inputs=("cache",),
        plan="saetrack.planning.chain.plan",
        modules=("saetrack.stages.chain", "saetrack.stages.chain.comparison"),
        description="SAE-Track chain, independent baselines, convergence study and feature agreement",
    ),
    Stage(
        name="formation",
        notebook="03_feature_formation.ipynb",
        inputs=("cache", "chain"),
        plan="saetrack.planning.formation.plan",
        modules=("saetrack.stages.formation",),
        description="feature phases, patterns, regions, UMAP and progress measures (Fig. 2, 3, 4, 5, 8)",
    ),
    Stage(
        name="drift",
        notebook="04_feature_drift.ipynb",
        inputs=("chain", "formation"),
        plan="saetrack.planning.drift.plan",
        modules=("saetrack.stages.drift", "saetrack.stages.drift.density"),
        description="decoder drift, formation times, trajectories and phases (Fig. 6a, 6b, 7; phases on Fig. 5)",
    ),
    Stage(
        name="scale",
        notebook="05_scale_study.ipynb",
        inputs=("drift",),
        plan="saetrack.planning.scale.plan",
        modules=("saetrack.stages.scale",),
        description="the pipeline over the scale study's model sizes; per-size figures (Fig. 9-16) and a summary",
        per_layer=False,
    ),
    Stage(
        name="crosscoder",
        notebook="06_crosscoder.ipynb",
        inputs=("cache", "chain", "drift"),
        plan="saetrack.planning.crosscoder.plan",
        modules=(
            "saetrack.stages.crosscoder",
            "saetrack.stages.crosscoder.statistics",
            "saetrack.stages.crosscoder.method_comparison",
        ),
        description="cross-snapshot crosscoder (Ge et al. 2025), statistical learning, and both methods side by side",
        enabled=lambda run: run.crosscoder.enabled,
        switch="crosscoder.enabled",
    ),
    Stage(
        name="explorer",
        notebook="07_explorer.ipynb",
        inputs=("cache", "chain", "formation", "drift", "crosscoder"),
        plan="saetrack.planning.explorer.plan",
        modules=("saetrack.stages.explorer",),
        description="the feature-evolution explorer: a static site of every feature across checkpoints",
        enabled=lambda run: run.explorer.enabled,
        switch="explorer.enabled",
    ),
)


#: The stage names in execution order (what ``--only`` accepts).
STAGE_NAMES: tuple[str, ...] = tuple(stage.name for stage in STAGES)


def get_stage(name: str) -> Stage:
    """The stage called ``name``; unknown names raise ``KeyError`` listing the known ones."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(f"unknown stage {name!r}; stages: {[s.name for s in STAGES]}")


def stage_of_output(folder: str, run: RunConfig) -> str:
    """The name of the stage whose notebook writes output folder ``folder`` (relative to the run directory) for
    ``run``, read from the stages' own output hashes; an unknown folder raises ``KeyError`` naming the known ones."""
    known: list[str] = []
    for stage in STAGES:
        outputs = stage.outputs(run)
        if folder in outputs:
            return stage.name
        known += outputs
    raise KeyError(f"no stage writes {folder!r}; output folders: {known}")


@dataclass(frozen=True)
class Part:
    """A piece of one run's computations that needs no other rank (what a spread torchrun job deals out over its
    ranks, :mod:`saetrack.pipeline.spread`): the headless function a stage's notebook calls, resumable like it."""

    name: str
    #: The stage whose notebook calls it (the part is scheduled only when that stage is selected and on).
    stage: str
    #: ``"module:function"``, called as ``function(run, run_dir, device=..., progress=...)``; skips current work.
    function: str
    #: Names of the parts (of the same run) whose outputs it reads.
    inputs: tuple[str, ...]
    #: Whether ``run`` has this part at all (no seed control configured, no noise floor).
    applies: Callable[[RunConfig], bool] = lambda run: True
    #: The parts it reads only for some configs (the baselines read the chain's calibrated λ).
    reads_also: Callable[[RunConfig], tuple[str, ...]] = lambda run: ()


#: The parts of a run, in an order that respects their inputs: notebook 01's inputs; the chain, the baselines and the
#: seed control of notebook 02; the noise floor, formation and drift of notebooks 03-04; the crosscoder and its
#: controls of notebook 06 (trained, not evaluated).
PARTS: tuple[Part, ...] = (
    Part("inputs", "cache", "saetrack.pipeline.headless:prepare_inputs", ()),
    Part("chain", "chain", "saetrack.stages.chain:train_chain", ("inputs",)),
    Part("baselines", "chain", "saetrack.stages.chain:train_baselines", ("inputs",),
         reads_also=lambda run: ("chain",) if run.chain.searches_coefficient else ()),
    Part("seed_control", "chain", "saetrack.stages.chain.seed_control:train_seed_controls", ("baselines",),
         applies=lambda run: bool(run.chain.baseline) and bool(run.chain.seed_control_indices)),
    Part("noise_floor", "drift", "saetrack.stages.drift.noise_floor:train_noise_floor", ("chain",),
         applies=lambda run: run.noise_floor_links > 0),
    Part("formation", "formation", "saetrack.stages.formation:analyse_formation", ("chain", "baselines")),
    Part("drift", "drift", "saetrack.stages.drift:analyse_drift", ("formation", "noise_floor")),
    Part("crosscoder", "crosscoder", "saetrack.stages.crosscoder.training:train_crosscoders", ("inputs",),
         applies=lambda run: run.crosscoder.enabled),
)  # fmt: skip


def get_part(name: str) -> Part:
    """The part called ``name``; unknown names raise ``KeyError`` listing the known ones."""
    for part in PARTS:
        if part.name == name:
            return part
    raise KeyError(f"unknown part {name!r}; parts: {[p.name for p in PARTS]}")
