"""The drift stage (notebook 04): decoder drift, formation times and phases of the smoke chain, end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from saetrack import paths, plots, store
from saetrack.analysis import drift as dr
from saetrack.config import RunConfig
from saetrack.sae.io import save_sae
from saetrack.sae.model import build_sae
from saetrack.stages.cache import cache_activations
from saetrack.stages.chain import load_chain, train_chain
from saetrack.stages.drift import (
    DRIFT_QUANTILES,
    analyse_drift,
    decoder_stack,
    drift_config_hash,
    load_drift,
    output_hashes,
    summary_numbers,
)
from saetrack.stages.drift.trajectories import trajectory_arrays
from saetrack.stages.formation import analyse_formation, formation_config_hash, load_formation


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
    # the per-link pass gives what the former [T, F, d] stack gave, bit for bit on the CPU
    stack = decoder_stack(load_chain(work, run), progress=False)
    old_cosine = dr.cosine_to_final(stack)
    np.testing.assert_array_equal(drift.cosine, old_cosine.astype(np.float32))
    live = drift.live_features
    np.testing.assert_array_equal(drift.quantiles, np.nanquantile(old_cosine[:, live], DRIFT_QUANTILES, axis=1).T)
    times = [drift.formation_time_of(int(f)) for f in drift.trajectory_features]
    old_trajectories = trajectory_arrays(stack[:, drift.trajectory_features], times, run.chain_seed)
    for name, value in old_trajectories.items():
        np.testing.assert_array_equal(getattr(drift, name), value)
    assert drift.formation_time.shape == (n_live,) and drift.formation_time.max() < n_steps
    # the tolerant rule only forgives dips: a feature formed strictly is formed at least as early by it
    strict, tolerant = drift.formation_time, drift.formation_time_tolerant
    assert np.all((tolerant == -1) == (strict == -1)) and np.all(tolerant[strict >= 0] <= strict[strict >= 0])
    numbers = summary_numbers(drift)
    assert set(numbers["median_cosine_to_final"]) == {"first", "middle", "final_but_one"}
    assert numbers["steps"] == drift.steps.tolist() and len(numbers["median_cosine_curve"]) == n_steps
    for key in ("phases_from_drift", "phases_from_progress"):
        assert set(numbers[key]) == {"index", "log_step", "step"}
        for axis, phases in numbers[key].items():
            assert phases["axis"] == axis and phases["fitted"] and phases["note"] == ""
            assert 0 < phases["emergent_index"] < phases["convergent_index"] < n_steps
            # smoke: 8 checkpoints, each segment >= 2 of them: at most 4 segments
            assert set(phases["segments"]) == {"1", "2", "3", "4"} and phases["max_segments"] == run.drift.max_segments
            bics = {s: f["bic"] for s, f in phases["segments"].items()}
            assert min(bics.values()) == bics[str(phases["preferred_segments"])]
            assert phases["preferred_at_cap"] == (phases["preferred_segments"] == 4)
            assert phases["segments"]["3"]["knots_index"] == [phases["emergent_index"], phases["convergent_index"]]
    assert drift.drift_phases.boundaries == (numbers["phases_from_drift"]["index"]["emergent_index"],
                                             numbers["phases_from_drift"]["index"]["convergent_index"])  # fmt: skip
    assert drift.drift_preferred_fit.shape == (n_steps,) and np.isfinite(drift.drift_preferred_fit).all()
    assert 0 <= numbers["phase_agreement"]["same_phase_fraction"] <= 1
    formation = numbers["formation"]
    assert set(formation) == {"interrupted", "strict", "tolerant", "rule"}
    assert formation["strict"]["live"] + formation["interrupted"] == n_live
    assert formation["tolerant"]["formed"] == formation["strict"]["formed"]
    assert formation["tolerant"]["formed_at_first_checkpoint"] >= formation["strict"]["formed_at_first_checkpoint"]
    # Fig. 7 beside its null: random walks with each trajectory's step sizes
    n_traj = len(drift.trajectory_features)
    assert drift.null_variance.shape == (n_traj, 200, 2) and drift.null_straightness.shape == (n_traj, 200)
    assert np.all(drift.trajectory_variance.sum(axis=1) <= 1 + 1e-9)
    assert numbers["trajectories"]["trajectories"] == n_traj
    # the noise floor: T - 1 links retrained on the final checkpoint, cosines to the final SAE per live feature
    noise = numbers["noise_floor"]
    assert noise["links"] == n_steps - 1 and noise["tokens_per_link"] == run.chain.link_tokens
    assert drift.noise_cosine.shape == (n_steps - 1, d_sae) and drift.noise_quantiles.shape == (n_steps - 1, 5)
    assert 0 < noise["median_after_all_links"] <= noise["median_after_1_link"] <= 1
    assert len(noise["per_checkpoint"]) == n_steps - 1 and drift.beyond_noise.shape == (n_steps,)
    beyond = [c["step"] for c in noise["per_checkpoint"] if c["beyond_noise"]]
    assert noise["last_checkpoint_beyond_noise"] == (max(beyond) if beyond else None)
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


def test_a_three_checkpoint_chain_gets_everything_but_the_phases(
    run: RunConfig, smoke_run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a user's 3-checkpoint suite: too few checkpoints for three phases (each >= 2), the rest still computed
    short = run.with_overrides({"chain.schedule": (0, 3, 7), "chain.baseline": (), "drift.noise_floor_links": 1})
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR):
        shutil.copytree(smoke_run_dir / folder, tmp_path / folder)
    cache_activations(short, tmp_path, progress=False)
    train_chain(short, tmp_path, progress=False)
    analyse_formation(short, tmp_path, progress=False)
    capsys.readouterr()
    analyse_drift(short, tmp_path, progress=False)
    printed = capsys.readouterr().out
    assert "phases from decoder drift: three phases could not be fitted" in printed
    drift = load_drift(tmp_path, short)
    assert drift.drift_phases is None and drift.progress_phases is None and drift.agreement is None
    d_sae = short.chain.expansion_factor * short.model.d_model
    assert drift.cosine.shape == (3, d_sae) and drift.trajectory_coords.shape[1:] == (3, 2)
    assert drift.noise_cosine.shape == (1, d_sae)
    numbers = summary_numbers(drift)
    for key in ("phases_from_drift", "phases_from_progress"):
        for phases in numbers[key].values():
            assert not phases["fitted"] and phases["emergent_step"] is None
            assert "3 checkpoints" in phases["note"] and "fitted 1 segment(s) instead" in phases["note"]
            assert set(phases["segments"]) == {"1"} and phases["preferred_segments"] == 1
    assert set(drift.phase_notes) == {"drift", "progress"}
    assert numbers["noise_floor"]["links"] == 1 and [c["step"] for c in numbers["noise_floor"]["per_checkpoint"]] == [4]
    live = drift.live_features
    figures = [
        plots.drift_distribution_figure(drift.steps, drift.cosine[:, live], drift.quantiles, drift.histogram_positions,
                                        None, None, noise_quantiles=drift.noise_quantiles),
        plots.drift_features_figure(drift.steps, drift.cosine[:, live[:2]], live[:2], [None, None], None,
                                    noise_quantiles=drift.noise_quantiles),
    ]  # fmt: skip
    assert all(fig.axes for fig in figures)
    plt.close("all")
