"""The activation cache: values equal the model's residual stream, plan and resume are exact, stale caches refused."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from saetrack import paths, store
from saetrack.config import RunConfig, get_preset
from saetrack.data.activations import ActivationCache
from saetrack.data.cache_plan import CacheTooLargeError, cache_config_hash, check_disk_space, plan_tokens
from saetrack.data.checkpoints import open_source
from saetrack.data.corpus import prepare_corpus
from saetrack.stages.cache import cache_activations


@pytest.fixture(scope="module")
def run(smoke: RunConfig) -> RunConfig:
    return smoke


def test_plan_gives_every_link_its_own_tokens(run) -> None:
    plan = plan_tokens(run)
    spans = [plan.train[s] for s in run.sae_steps]
    for (start_a, n_a), (start_b, _) in itertools.pairwise(spans):
        assert start_a + n_a == start_b  # consecutive, non-overlapping slices
    first = spans[0][1] * run.cache.context_length
    assert first >= run.chain.first_tokens
    for step in run.baseline_steps:
        assert plan.train[step][1] * run.cache.context_length >= run.chain.baseline_token_budget
    assert plan.analysis[0] + plan.analysis[1] <= plan.heldout[0]  # analysis and held-out sets disjoint


def test_cache_equals_hf_hidden_states(run, smoke_run_dir: Path) -> None:
    cache = ActivationCache(smoke_run_dir, run)
    source = open_source(run.model, smoke_run_dir)
    step = run.sae_steps[-1]
    hf = source.load_hf(step)
    tokens = torch.as_tensor(cache.analysis_tokens[:4].astype(np.int64))
    with torch.no_grad():
        hidden = hf(tokens, output_hidden_states=True).hidden_states[run.cache.layer]
    cached = torch.as_tensor(np.asarray(cache.analysis(step)[: 4 * cache.context_length]))
    torch.testing.assert_close(cached, hidden.reshape(-1, hidden.shape[-1]).float(), atol=1e-4, rtol=1e-4)


def test_analysis_set_is_the_same_datapoints_at_every_step(run, smoke_run_dir: Path) -> None:
    cache = ActivationCache(smoke_run_dir, run)
    n = cache.analysis_tokens.size
    for step in cache.steps:
        assert cache.analysis(step).shape == (n, cache.d_model)
    assert not np.allclose(cache.analysis(cache.steps[0]), cache.analysis(cache.steps[-1]))
    assert cache.train(cache.steps[0]).shape[0] >= run.chain.first_tokens
    assert len({cache.weights_hash(s) for s in cache.steps}) == len(cache.steps)


def test_cache_for_another_layer_is_refused(run, smoke_run_dir: Path) -> None:
    other = run.with_overrides({"cache.layer": 0})
    assert cache_config_hash(other) != cache_config_hash(run)
    with pytest.raises(store.StaleArtifactError, match="not for this config"):
        ActivationCache(smoke_run_dir, other)


def test_corrupt_file_is_detected(run, smoke_run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(smoke_run_dir / paths.CACHE_DIR, copy / paths.CACHE_DIR)
    target = copy / paths.CACHE_DIR / paths.step_dir_name(run.sae_steps[1]) / "heldout.npy"
    target.write_bytes(target.read_bytes()[:100])
    cache = ActivationCache(copy, run)
    with pytest.raises(store.StaleArtifactError):
        cache.heldout(run.sae_steps[1])
    with pytest.raises(store.StaleArtifactError, match="missing or corrupt"):
        cache.verify()


@pytest.mark.slow
def test_interrupted_cache_resumes_to_identical_files(run, smoke_run_dir: Path, tmp_path: Path) -> None:
    work = tmp_path / "run"
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR):
        shutil.copytree(smoke_run_dir / folder, work / folder)

    class Killed(Exception):
        pass

    def kill_after_third(step: int) -> None:
        if step == run.sae_steps[2]:
            raise Killed

    with pytest.raises(Killed):
        cache_activations(run, work, progress=False, after_step=kill_after_third)
    assert store.read_manifest(work / paths.CACHE_DIR) is None  # the stage is not marked finished
    manifest = cache_activations(run, work, progress=False)
    reference = store.read_manifest(smoke_run_dir / paths.CACHE_DIR)

    def content(m: dict) -> dict:
        return {step: (info["weights_sha256"], info["shapes"]) for step, info in m["per_step"].items()}

    assert content(manifest) == content(reference)
    for step in run.sae_steps:
        ours = store.read_manifest(work / paths.CACHE_DIR / paths.step_dir_name(step))
        theirs = store.read_manifest(smoke_run_dir / paths.CACHE_DIR / paths.step_dir_name(step))
        assert ours["files"] == theirs["files"]


def test_uncacheable_budget_is_refused_with_the_size(tmp_path: Path) -> None:
    paper = get_preset("pythia-160m-l4")
    with pytest.raises(CacheTooLargeError, match=r"needs [\d,.]+ GB .*300,000,000 first-SAE tokens"):
        check_disk_space(paper, tmp_path, 768)
    assert check_disk_space(get_preset("smoke"), tmp_path, 32) < 50e6


def test_local_checkpoints_are_tokenized_with_their_own_tokenizer(run, smoke_run_dir: Path, tmp_path: Path) -> None:
    local = run.with_overrides({"model.source": "local", "model.local_path": str(smoke_run_dir / paths.MODEL_DIR)})
    manifest = prepare_corpus(local, tmp_path)
    assert manifest["tokenizer_source"] == "local"
    for name in ("train_tokens.npy", "heldout_tokens.npy"):  # the suite's own tokenizer gives the same streams
        np.testing.assert_array_equal(
            np.load(tmp_path / paths.CORPUS_DIR / name), np.load(smoke_run_dir / paths.CORPUS_DIR / name)
        )
