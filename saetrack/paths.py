"""Paths anchored at the repository root, and the fixed file names of every artifact.

Nothing in the project builds a path from the working directory: notebooks executed by papermill
from any folder, tests and ``run_all.py`` all resolve run and figure folders here.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "BASELINE_DIR",
    "CACHE_DIR",
    "CHAIN_DIR",
    "COMPARISON_DIR",
    "CORPUS_DIR",
    "CROSSCODER_COMPARISON_DIR",
    "CROSSCODER_DIR",
    "CROSSCODER_MODEL_DIR",
    "DENSITY_DIR",
    "DRIFT_DIR",
    "EXPLORER_DIR",
    "FIGURES_ENV",
    "FORMATION_DIR",
    "MANIFEST",
    "MODEL_DIR",
    "NOISE_FLOOR_DIR",
    "NOTEBOOKS_DIR",
    "REPO_ROOT",
    "RESULTS_JSON",
    "RUNS_ENV",
    "SCALE_DIR",
    "STATISTICS_DIR",
    "TOKENIZER_DIR",
    "figures_dir",
    "layer_dir_name",
    "run_dir",
    "runs_root",
    "step_dir_name",
]


#: The repository root (the folder holding ``saetrack/``).
REPO_ROOT = Path(__file__).resolve().parents[1]

#: Environment variable that moves every run directory (e.g. to a bigger disk, or a temp dir in tests).
RUNS_ENV = "SAETRACK_RUNS"
#: Environment variable that moves the figures folder.
FIGURES_ENV = "SAETRACK_FIGURES"

# File and folder names of the on-disk layout (DESIGN.md "Pipeline and artifacts").
MANIFEST = "manifest.json"
CORPUS_DIR = "corpus"
TOKENIZER_DIR = "tokenizer"
MODEL_DIR = "model"
CACHE_DIR = "cache"
CHAIN_DIR = "chain"
BASELINE_DIR = "baseline"
COMPARISON_DIR = "comparison"
FORMATION_DIR = "formation"
DRIFT_DIR = "drift"
#: The checkpoint-density study of notebook 04 (chains over every s-th checkpoint beside the run's own chain).
DENSITY_DIR = "density"
#: The drift noise floor's cosines (:func:`saetrack.stages.drift.noise_floor.kept_noise_floor`).
NOISE_FLOOR_DIR = "noise_floor"
SCALE_DIR = "scale"
STATISTICS_DIR = "statistics"
CROSSCODER_DIR = "crosscoder"
#: The trained crosscoder inside ``CROSSCODER_DIR`` (the format of ``saetrack.crosscoder.io``).
CROSSCODER_MODEL_DIR = "model"
CROSSCODER_COMPARISON_DIR = "crosscoder_vs_chain"
#: The feature-evolution explorer (notebook 07): a static site, also copied to ``figures/<preset>/explorer/``.
EXPLORER_DIR = "explorer"
NOTEBOOKS_DIR = "notebooks"
RESULTS_JSON = "results.json"


def runs_root() -> Path:
    """Folder holding one run directory per preset (``$SAETRACK_RUNS`` or ``<repo>/runs``)."""
    return Path(os.environ.get(RUNS_ENV, REPO_ROOT / "runs")).resolve()


def run_dir(preset: str) -> Path:
    """The run directory of ``preset``."""
    return runs_root() / preset


def figures_dir(preset: str) -> Path:
    """Folder of ``preset``'s figures (``$SAETRACK_FIGURES/<preset>`` or ``<repo>/figures/<preset>``)."""
    return Path(os.environ.get(FIGURES_ENV, REPO_ROOT / "figures")).resolve() / preset


def layer_dir_name(layer: int) -> str:
    """Folder name, inside a run directory (and its figures folder), of layer ``layer``'s own run when the run studies
    several layers (``cache.layers``): ``layer{layer}``."""
    return f"layer{layer}"


def step_dir_name(step: int) -> str:
    """Folder name of a checkpoint or an SAE link at training step ``step`` (Pythia's revision names)."""
    return f"step{step}"
