"""Reading the activation cache: values equal the model's residual stream, stale or corrupt caches are refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from saetrack import paths, store
from saetrack.config import RunConfig
from saetrack.data.activations import ActivationCache, open_activations
from saetrack.data.cache_plan import cache_config_hash, plan_tokens
from saetrack.data.checkpoints import open_source


@pytest.fixture(scope="module")
def run(smoke: RunConfig) -> RunConfig:
    return smoke


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


def test_tokens_and_shapes_follow_the_plan(run, smoke_run_dir: Path) -> None:
    cache = open_activations(run, smoke_run_dir)
    assert isinstance(cache, ActivationCache) and cache.steps == run.sae_steps
    assert (cache.layer, cache.hook_name, cache.d_model) == (1, "blocks.1.hook_resid_pre", 32)
    plan = plan_tokens(run)
    assert cache.analysis_tokens.shape == (plan.analysis[1], 32)
    assert cache.heldout_tokens.shape == (plan.heldout[1], 32)
    assert cache.heldout(run.sae_steps[0]).shape == (plan.heldout[1] * 32, 32)
    for step in (run.sae_steps[0], run.sae_steps[2]):
        assert cache.train_tokens(step).shape == (plan.train[step][1], 32)
        assert cache.train(step).shape == (plan.train[step][1] * 32, 32)
    assert not cache.train(run.sae_steps[0]).flags.writeable  # read-only memory maps
    with pytest.raises(KeyError, match=r"step 3 is not cached"):
        cache.analysis(3)


def test_missing_cache_says_which_notebook_builds_it(run, tmp_path: Path) -> None:
    with pytest.raises(store.StaleArtifactError, match=r"no finished activation cache.*notebook 01"):
        ActivationCache(tmp_path, run)
