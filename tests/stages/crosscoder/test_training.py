"""The crosscoder stage's training part (``saetrack/stages/crosscoder/training.py``): what a torchrun job or a spread
unit runs headless, and what notebook 06's stage then reuses."""

from __future__ import annotations

import shutil
from pathlib import Path

from saetrack import paths
from saetrack.config import RunConfig
from saetrack.stages.crosscoder import analyse_crosscoder, load_crosscoder_result, training_config_hash
from saetrack.stages.crosscoder.training import train_crosscoders


def test_the_headless_training_is_what_the_notebooks_stage_then_reuses(
    run: RunConfig, smoke_run_dir: Path, tmp_path: Path
) -> None:
    """``train_crosscoders`` (a torchrun job's or a spread unit's part) writes the model and the controls; the stage
    then only evaluates: nothing is trained again, and it reads the same weights."""
    small = run.with_overrides({"crosscoder.train_contexts": 64, "crosscoder.epochs": 1})
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR, paths.CACHE_DIR):
        shutil.copytree(smoke_run_dir / folder, tmp_path / folder)
    trained = train_crosscoders(small, tmp_path, progress=False)
    assert set(trained["controls"]) == {"repeated", "dropped_early", "centred"}
    stage = tmp_path / paths.CROSSCODER_DIR
    written = {p: p.stat().st_mtime_ns for p in [*stage.glob("model/*"), *stage.glob("controls/*/*")]}
    assert trained["model"]["config_hash"] == training_config_hash(small) and len(written) > 4
    analyse_crosscoder(small, tmp_path, progress=False)
    assert {p: p.stat().st_mtime_ns for p in written} == written  # reused, not retrained
    assert load_crosscoder_result(tmp_path, small).manifest["train_steps"] == trained["model"]["train_steps"]
