"""The crosscoder beside the chain (notebook 06, issue 14 item 5) on the smoke run, end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from saetrack import paths, store
from saetrack.config import RunConfig
from saetrack.stages.crosscoder import analyse_crosscoder, load_crosscoder_result
from saetrack.stages.crosscoder.method_comparison import (
    compare_methods,
    comparison_config_hash,
    load_method_comparison,
    output_hashes,
)
from saetrack.stages.crosscoder.statistics import analyse_statistics
from saetrack.stages.drift import analyse_drift


@pytest.fixture(scope="module")
def compared(run: RunConfig, formation_run: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the smoke run with drift, crosscoder, statistics and the comparison."""
    source, _ = formation_run
    work = tmp_path_factory.mktemp("compared")
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR, paths.CACHE_DIR, paths.CHAIN_DIR, paths.FORMATION_DIR):
        shutil.copytree(source / folder, work / folder)
    analyse_drift(run, work, progress=False)
    analyse_crosscoder(run, work, progress=False)
    analyse_statistics(run, work, progress=False)
    compare_methods(run, work)
    return work


def test_the_comparison_matches_times_and_sets_boundaries_side_by_side(run: RunConfig, compared: Path) -> None:
    manifest, arrays = load_method_comparison(compared, run)
    steps = list(run.crosscoder_steps)
    # matched cosines at every checkpoint both methods have (all of smoke's), one array segment per step
    assert arrays["match_steps"].tolist() == steps
    offsets = arrays["match_offsets"]
    assert offsets[0] == 0 and offsets[-1] == arrays["match_cosines"].size
    assert np.all(np.abs(arrays["match_cosines"]) <= 1.0 + 1e-9)
    for i, step in enumerate(steps):
        assert manifest["matching"][str(step)]["pairs"] == offsets[i + 1] - offsets[i] > 0
    # the chance level per matched step: the same crosscoder rows against random unit vectors, below the real match
    chance = arrays["random_match_median"]
    assert chance.shape == arrays["match_steps"].shape and np.all((chance > 0) & (chance < 1))
    assert manifest["random_baseline_median"] == pytest.approx(float(np.median(chance)))
    assert [manifest["matching"][str(s)]["random_baseline_median"] for s in steps] == pytest.approx(chance.tolist())
    # matched pairs carry times that exist, and only pairs above the threshold enter the correlation
    assert np.all(arrays["pair_cosine"] >= 0.7)
    pairs = manifest["emergence_vs_formation"]
    assert pairs["n"] == arrays["pair_emergence_step"].size
    assert pairs["permutations"] == run.crosscoder.null_permutations
    tied = arrays["pair_emergence_step"] == steps[0]
    assert pairs["tied_at_first_share"] == (pytest.approx(float(np.mean(tied))) if tied.size else None)
    if pairs["kendall_tau_b"] is not None:  # defined when both sides vary over at least three pairs
        assert pairs["null_q025"] <= pairs["null_q975"] and 0 < pairs["permutation_p"] <= 1
    assert set(arrays["pair_emergence_step"].tolist()) <= set(steps)
    assert set(arrays["pair_formation_step"].tolist()) <= set(steps)
    # the four perspectives on one timeline, boundaries as steps of the run
    timeline = manifest["timeline"]
    assert list(timeline) == ["chain decoder drift", "progress measure", "crosscoder emergence", "statistical learning"]
    for name in ("chain decoder drift", "progress measure", "crosscoder emergence"):
        assert len(timeline[name]["boundaries"]) == 2 and set(timeline[name]["boundaries"]) <= set(steps)
    # costs: the crosscoder's parameters are T decoders and T encoder blocks
    costs = manifest["costs"]
    cc = load_crosscoder_result(compared, run)
    t, d = len(steps), run.model.d_model
    assert costs["parameters"]["crosscoder"] == 2 * cc.norms.shape[0] * t * d
    assert costs["model_forwards_per_token"] == {"chain": 1, "crosscoder": t}
    assert costs["activation_vectors_read"]["crosscoder"] == costs["training_tokens"]["crosscoder"] * t


def test_the_comparison_is_current_until_an_input_changes(run: RunConfig, compared: Path) -> None:
    first = store.read_manifest(compared / paths.CROSSCODER_COMPARISON_DIR)
    assert compare_methods(run, compared) == first
    assert output_hashes(run) == {paths.CROSSCODER_COMPARISON_DIR: comparison_config_hash(run)}
    assert comparison_config_hash(run.with_overrides({"drift.formed_fraction": 0.7})) != comparison_config_hash(run)
    assert comparison_config_hash(run.with_overrides({"crosscoder.emergence_fraction": 0.7})) != comparison_config_hash(
        run
    )
