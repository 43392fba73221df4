"""The crosscoder stage (notebook 06): aligned activations, training, quality and evolution on the smoke run."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from saetrack import paths, store
from saetrack.analysis.emergence_controls import SETTLING_CRITERION
from saetrack.config import RunConfig
from saetrack.crosscoder.io import load_crosscoder
from saetrack.stages.crosscoder import (
    analyse_crosscoder,
    crosscoder_config_hash,
    crosscoder_d_sae,
    load_crosscoder_result,
    output_hashes,
    summary_numbers,
    training_config_hash,
)
from saetrack.stages.crosscoder.controls import load_controls


@pytest.fixture(scope="module")
def crosscoder_run(run: RunConfig, smoke_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the smoke run's corpus, model and cache with the crosscoder stage run once."""
    work = tmp_path_factory.mktemp("crosscoder_run")
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR, paths.CACHE_DIR):
        shutil.copytree(smoke_run_dir / folder, work / folder)
    analyse_crosscoder(run, work, progress=False)
    return work


def test_the_stage_trains_a_crosscoder_over_every_snapshot_and_measures_it(
    run: RunConfig, crosscoder_run: Path
) -> None:
    result = load_crosscoder_result(crosscoder_run, run)
    t, d_sae = len(run.crosscoder_steps), crosscoder_d_sae(run)
    assert result.steps.tolist() == list(run.crosscoder_steps) == list(run.model.checkpoint_steps)
    assert d_sae == run.chain.expansion_factor * run.model.d_model  # equal dictionary size by default
    assert result.norms.shape == (d_sae, t) and result.cosine_to_final.shape == (d_sae, t)
    assert result.adjacent_median.shape == (t - 1,)
    assert np.all((result.emergence >= -1) & (result.emergence < t))
    assert np.all(result.emergence[~result.alive] == -1)
    last = result.cosine_to_final[result.alive, -1]
    np.testing.assert_allclose(last[np.isfinite(last)], 1.0, atol=1e-5)  # the last direction against itself
    assert np.all(np.isnan(result.cosine_to_final[~result.alive]))  # dead features have no direction
    assert np.all(np.isfinite(result.explained_variance)) and result.explained_variance.min() > 0.3
    assert result.manifest["train_tokens"] == run.crosscoder.train_contexts * run.cache.context_length * 2
    saved = load_crosscoder(crosscoder_run / paths.CROSSCODER_DIR / "model")
    assert saved.snapshot_steps == run.crosscoder_steps and saved.input_scale.shape == (t,)
    np.testing.assert_allclose(saved.model.decoder_norms().detach().numpy(), result.norms, rtol=1e-5)
    numbers = summary_numbers(result)
    assert numbers["alive_features"] == int(result.alive.sum())
    assert sum(numbers["emergence_counts"].values()) == numbers["alive_features"]
    assert numbers["turning_point_step"] in run.crosscoder_steps[1:]
    store.write_json(crosscoder_run / "numbers.json", numbers)  # JSON-ready


def test_the_stage_records_settling_emergence_at_every_fraction_and_the_dip(
    run: RunConfig, crosscoder_run: Path
) -> None:
    result = load_crosscoder_result(crosscoder_run, run)
    numbers = summary_numbers(result)
    training = numbers["training"]
    steps_per_epoch = run.crosscoder.train_contexts * run.cache.context_length // run.crosscoder.batch_size
    assert training["steps"] == steps_per_epoch * run.crosscoder.epochs and training["epochs"] == run.crosscoder.epochs
    assert training["criterion"] == SETTLING_CRITERION and isinstance(training["settled"], bool)
    assert training["settled"] == (training["final_relative_change"] < 0.02)
    assert training["relative_change_curve"]["step"][-1] == training["steps"]
    assert list(numbers["emergence_at_first"]) == ["0.3", "0.5", "0.7", "0.9"]
    assert numbers["emergence_at_first"]["0.5"] == pytest.approx(numbers["emerged_at_first_snapshot"])
    assert numbers["emergence_histogram"]["0.5"] == numbers["emergence_counts"]
    shares = [numbers["emergence_at_first"][f] for f in ("0.3", "0.5", "0.7", "0.9")]
    assert shares == sorted(shares, reverse=True)  # a higher bar is reached at the first checkpoint by fewer
    assert numbers["median_norm_dip_window"] == [8, 64] and numbers["median_norm_dip_step"] in (8, 16, 32, 48)
    assert numbers["median_norm_dip"] <= 1


def test_the_controls_are_trained_like_the_crosscoder_and_summarised_as_nulls(
    run: RunConfig, crosscoder_run: Path
) -> None:
    nulls = summary_numbers(load_crosscoder_result(crosscoder_run, run))["nulls"]
    assert set(nulls) == {"permuted", "repeated", "dropped_early", "centred"}
    permuted = nulls["permuted"]
    assert permuted["permutations"] == run.crosscoder.null_permutations
    for fraction in ("0.3", "0.5", "0.7", "0.9"):
        assert 0 <= permuted["emerged_at_first_mean"][fraction] <= permuted["emerged_at_first_q95"][fraction] <= 1
    arrays = load_controls(crosscoder_run / paths.CROSSCODER_DIR, run)
    t = len(run.crosscoder_steps)
    assert arrays["repeated"]["norms"].shape[1] == t == arrays["centred"]["norms"].shape[1]
    assert arrays["dropped_early"]["steps"].tolist() == [16, 32, 48]  # steps 0, 1, 2, 4, 8 dropped
    dropped = nulls["dropped_early"]
    assert dropped["dropped_steps"] == [0, 1, 2, 4, 8] and dropped["first_step"] == 16
    assert dropped["matched_emerged_at_first"] <= dropped["matched"] <= nulls["dropped_early"]["alive_features"]
    assert sum(dropped["emergence_histogram"]["0.5"].values()) == dropped["alive_features"]
    assert nulls["repeated"]["snapshot_step"] == run.crosscoder_steps[-1]
    for name in ("repeated", "dropped_early", "centred"):
        manifest = store.read_manifest(crosscoder_run / paths.CROSSCODER_DIR / "controls" / name)
        assert (
            manifest["settling"]["steps"]
            == summary_numbers(load_crosscoder_result(crosscoder_run, run))["training"]["steps"]
        )  # the same budget as the crosscoder
        assert 0 < nulls[name]["explained_variance_min"] <= 1
    assert nulls["centred"]["median_norm_dip"] is not None


def test_the_controls_can_be_switched_off_and_permuted_labels_need_no_training(
    run: RunConfig, crosscoder_run: Path, tmp_path: Path
) -> None:
    work = tmp_path / "run"
    shutil.copytree(crosscoder_run, work)
    shutil.rmtree(work / paths.CROSSCODER_DIR / "controls")
    off = run.with_overrides({"crosscoder.controls": False})
    assert training_config_hash(off) == training_config_hash(run)  # the crosscoder itself is not retrained
    analyse_crosscoder(off, work, progress=False)
    assert set(summary_numbers(load_crosscoder_result(work, off))["nulls"]) == {"permuted"}
    assert not (work / paths.CROSSCODER_DIR / "controls").exists()


def test_a_current_stage_is_skipped_and_an_analysis_field_does_not_retrain(
    run: RunConfig, crosscoder_run: Path, tmp_path: Path
) -> None:
    first = store.read_manifest(crosscoder_run / paths.CROSSCODER_DIR)
    assert analyse_crosscoder(run, crosscoder_run, progress=False) == first
    work = tmp_path / "run"
    shutil.copytree(crosscoder_run, work)
    model_manifest = store.read_manifest(work / paths.CROSSCODER_DIR / "model")
    other = run.with_overrides({"crosscoder.emergence_fraction": 0.8})
    assert training_config_hash(other) == training_config_hash(run)
    assert crosscoder_config_hash(other) != crosscoder_config_hash(run)
    controls_before = {
        name: store.read_manifest(work / paths.CROSSCODER_DIR / "controls" / name) for name in ("repeated", "centred")
    }
    analyse_crosscoder(other, work, progress=False)
    assert store.read_manifest(work / paths.CROSSCODER_DIR / "model") == model_manifest  # reused, not retrained
    for name, manifest in controls_before.items():  # the controls too
        assert store.read_manifest(work / paths.CROSSCODER_DIR / "controls" / name) == manifest
    strict = load_crosscoder_result(work, other)
    loose = load_crosscoder_result(crosscoder_run, run)
    assert np.all(strict.emergence[strict.alive] >= loose.emergence[loose.alive])  # a higher bar is crossed later


def test_an_interrupted_activation_build_resumes_at_the_first_missing_snapshot(
    run: RunConfig, crosscoder_run: Path, tmp_path: Path
) -> None:
    work = tmp_path / "run"
    shutil.copytree(crosscoder_run, work)
    folder = work / paths.CROSSCODER_DIR
    reference = np.load(folder / "activations" / "train.npy")
    progress = store.read_json(folder / "activations" / "progress.json")
    store.write_json(folder / "activations" / "progress.json", {**progress, "done": progress["done"][:3]})
    data = np.load(folder / "activations" / "train.npy", mmap_mode="r+")
    data[3:] = 0.0  # the snapshots not yet done hold nothing
    data.flush()
    del data
    shutil.rmtree(folder / "model")
    (folder / paths.MANIFEST).unlink()
    analyse_crosscoder(run, work, progress=False)
    np.testing.assert_array_equal(np.load(folder / "activations" / "train.npy"), reference)
    assert load_crosscoder_result(work, run).norms.shape == load_crosscoder_result(crosscoder_run, run).norms.shape


def test_output_hashes_name_the_stage_folder(run: RunConfig) -> None:
    assert output_hashes(run) == {paths.CROSSCODER_DIR: crosscoder_config_hash(run)}
    assert training_config_hash(run.with_overrides({"crosscoder.lr": 2e-3})) != training_config_hash(run)
    assert training_config_hash(run.with_overrides({"chain.lr_link": 1e-4})) == training_config_hash(run)
