"""The cache stage: an interrupted cache resumes to identical files; the residual it caches; its output hashes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from saetrack import paths, store
from saetrack.config import RunConfig
from saetrack.data.cache_plan import cache_config_hash
from saetrack.data.checkpoints import open_source
from saetrack.data.corpus import corpus_config_hash
from saetrack.data.suite import suite_config_hash
from saetrack.stages.cache import cache_activations, output_hashes, residual_at_layer
from tests.sigkill import assert_resumes_after_sigkill


@pytest.fixture(scope="module")
def run(smoke: RunConfig) -> RunConfig:
    return smoke


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


@pytest.mark.slow
def test_sigkill_during_caching_then_resume_gives_identical_hashes(
    sigkill_reference: dict[str, object], tmp_path: Path
) -> None:
    assert_resumes_after_sigkill(tmp_path, "cache", 4, sigkill_reference)


def test_current_cache_is_returned_without_work(run, smoke_run_dir: Path) -> None:
    manifest = store.read_manifest(smoke_run_dir / paths.CACHE_DIR)

    def fail(step: int) -> None:
        raise AssertionError(f"step {step} was cached again")

    assert cache_activations(run, smoke_run_dir, progress=False, after_step=fail) == manifest


def test_residual_at_layer_is_the_hook_value(run, smoke_run_dir: Path) -> None:
    model = open_source(run.model, smoke_run_dir).load_hooked(run.sae_steps[-1])
    tokens = torch.arange(2 * 8).reshape(2, 8) % 50
    _, cache = model.run_with_cache(tokens)
    for layer in (0, 1):
        resid = residual_at_layer(model, tokens, layer)
        torch.testing.assert_close(resid, cache[f"blocks.{layer}.hook_resid_pre"], rtol=0, atol=1e-6)


def test_output_hashes_name_the_three_folders(run) -> None:
    hashes = output_hashes(run)
    assert hashes == {
        paths.CORPUS_DIR: corpus_config_hash(run),
        paths.MODEL_DIR: suite_config_hash(run),
        paths.CACHE_DIR: cache_config_hash(run),
    }
    local = run.with_overrides({"model.source": "local", "model.local_path": "somewhere"})
    assert set(output_hashes(local)) == {paths.CORPUS_DIR, paths.CACHE_DIR}  # no suite is trained
