"""The pipeline declared as data: stage -> notebook, inputs, outputs, and whether its outputs are current.

``run_all.py`` walks :data:`STAGES` in order; a stage whose outputs' manifests all match the config is
skipped (and says so), anything else is executed through its notebook, which itself resumes from
whatever finished artifacts it finds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from saetrack import paths, store
from saetrack.config import RunConfig

__all__ = ["STAGES", "Stage", "get_stage", "stage_hashes"]


def stage_hashes(run: RunConfig) -> dict[str, str]:
    """Output folder (relative to the run directory) -> the config hash its manifest must carry."""
    from saetrack.activations import cache_config_hash
    from saetrack.chain import baseline_config_hash, chain_config_hash
    from saetrack.comparison import comparison_config_hash
    from saetrack.corpus import corpus_config_hash
    from saetrack.drift_run import drift_config_hash
    from saetrack.formation_run import formation_config_hash

    hashes: dict[str, str] = {paths.CORPUS_DIR: corpus_config_hash(run)}
    if run.model.source == "suite":
        hashes[paths.MODEL_DIR] = run.section_hash("corpus", "suite")
    hashes[paths.CACHE_DIR] = cache_config_hash(run)
    hashes[paths.CHAIN_DIR] = chain_config_hash(run)
    hashes[paths.BASELINE_DIR] = baseline_config_hash(run)
    hashes[paths.COMPARISON_DIR] = comparison_config_hash(run)
    hashes[paths.FORMATION_DIR] = formation_config_hash(run)
    hashes[paths.DRIFT_DIR] = drift_config_hash(run)
    return hashes


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline, run by one notebook."""

    name: str
    notebook: str
    #: Names of the stages whose artifacts this stage reads.
    inputs: tuple[str, ...]
    #: Folders (relative to the run directory) this stage writes, each with a manifest.
    outputs: Callable[[RunConfig], tuple[str, ...]]
    description: str

    def output_hashes(self, run: RunConfig) -> dict[str, str]:
        """The config hash each of this stage's output folders must carry to count as current."""
        hashes = stage_hashes(run)
        return {folder: hashes[folder] for folder in self.outputs(run)}

    def is_current(self, run: RunConfig, run_dir: Path) -> bool:
        """Whether every output folder holds a finished manifest made with this config."""
        return all(
            store.manifest_is_current(Path(run_dir) / folder, digest)
            for folder, digest in self.output_hashes(run).items()
        )


def _cache_outputs(run: RunConfig) -> tuple[str, ...]:
    if run.model.source == "suite":
        return (paths.CORPUS_DIR, paths.MODEL_DIR, paths.CACHE_DIR)
    return (paths.CORPUS_DIR, paths.CACHE_DIR)


#: The stages in execution order.
STAGES: tuple[Stage, ...] = (
    Stage(
        name="cache",
        notebook="01_cache_activations.ipynb",
        inputs=(),
        outputs=_cache_outputs,
        description="corpus and tokenizer, the nano model suite (local presets), activation cache",
    ),
    Stage(
        name="chain",
        notebook="02_train_chain.ipynb",
        inputs=("cache",),
        outputs=lambda run: (paths.CHAIN_DIR, paths.BASELINE_DIR, paths.COMPARISON_DIR),
        description="SAE-Track chain, independent baselines, convergence study and feature agreement",
    ),
    Stage(
        name="formation",
        notebook="03_feature_formation.ipynb",
        inputs=("cache", "chain"),
        outputs=lambda run: (paths.FORMATION_DIR,),
        description="feature phases, patterns, regions, UMAP and progress measures (Fig. 2, 3, 4, 5, 8)",
    ),
    Stage(
        name="drift",
        notebook="04_feature_drift.ipynb",
        inputs=("chain", "formation"),
        outputs=lambda run: (paths.DRIFT_DIR,),
        description="decoder drift, formation times, trajectories and phases (Fig. 6a, 6b, 7; phases on Fig. 5)",
    ),
)


def get_stage(name: str) -> Stage:
    """The stage called ``name``; unknown names raise ``KeyError`` listing the known ones."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(f"unknown stage {name!r}; stages: {[s.name for s in STAGES]}")
