"""The drift stage (notebook 04): decoder drift, formation times and phases of the smoke chain, end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from saetrack import paths, store
from saetrack.config import RunConfig
from saetrack.sae.io import save_sae
from saetrack.sae.model import build_sae
from saetrack.stages.drift import (
    analyse_drift,
    decoder_stack,
    drift_config_hash,
    load_drift,
    output_hashes,
    summary_numbers,
)
from saetrack.stages.formation import formation_config_hash, load_formation


def test_drift_stage_end_to_end_at_smoke_size(run: RunConfig, formation_run: tuple[Path, dict]) -> None:
    # the drift stage on the chain and formation stage of the formation tests
    work, _ = formation_run
    n_steps = len(run.sae_steps)
    d_sae = run.chain.expansion_factor * run.model.d_model
    n_live = len(load_formation(work, run).live_features)
    drift_manifest = analyse_drift(run, work, progress=False)
    drift = load_drift(work, run)
    assert drift.cosine.shape == (n_steps, d_sae)
    np.testing.assert_allclose(drift.cosine[-1], 1.0, atol=1e-6)  # the final link against itself
    assert drift.formation_time.shape == (n_live,) and drift.formation_time.max() < n_steps
    numbers = summary_numbers(drift)
    assert set(numbers["median_cosine_to_final"]) == {"first", "middle", "final_but_one"}
    for key in ("phases_from_drift", "phases_from_progress"):
        phases = numbers[key]
        assert 0 < phases["emergent_index"] < phases["convergent_index"] < n_steps
    assert 0 <= numbers["phase_agreement"]["same_phase_fraction"] <= 1
    assert drift.trajectory_coords.shape == (len(drift.trajectory_features), n_steps, 2)
    assert analyse_drift(run, work, progress=False) == drift_manifest  # current: nothing recomputed
    with pytest.raises(store.StaleArtifactError, match="another config"):
        load_drift(work, run.with_overrides({"drift.formed_fraction": 0.9}))
    feature = int(drift.live_features[0])
    assert drift.formation_time_of(feature) == drift.formation_time[0]
    np.testing.assert_allclose(drift.median_cosine, np.median(drift.cosine[:, drift.live_features], axis=1), rtol=1e-6)


def test_decoder_stack_is_in_step_order(run: RunConfig, tmp_path: Path) -> None:
    folders = {}
    for step, seed in ((20, 1), (3, 2)):
        sae = build_sae(4, run.chain, seed=seed)
        save_sae(sae, tmp_path / f"step{step}")
        folders[step] = tmp_path / f"step{step}"
    stack = decoder_stack(folders, progress=False)
    assert stack.shape == (2, 4 * run.chain.expansion_factor, 4)
    np.testing.assert_array_equal(stack[0], build_sae(4, run.chain, seed=2).W_dec.detach().numpy())  # step 3 first
    np.testing.assert_array_equal(stack[1], build_sae(4, run.chain, seed=1).W_dec.detach().numpy())


def test_drift_hash_covers_formation_and_the_drift_section(run: RunConfig) -> None:
    assert output_hashes(run) == {paths.DRIFT_DIR: drift_config_hash(run)}
    assert drift_config_hash(run.with_overrides({"drift.formed_fraction": 0.9})) != drift_config_hash(run)
    other = run.with_overrides({"formation.top_k": 10})
    assert formation_config_hash(other) != formation_config_hash(run)
    assert drift_config_hash(other) != drift_config_hash(run)
