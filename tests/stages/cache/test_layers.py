"""Several layers from one forward (``cache.layers``): each layer's cache is, file for file, its own single-layer
run's, so each layer trains the same chain; an interrupted multi-layer cache resumes to the same files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from saetrack import paths, store
from saetrack.config import RunConfig
from saetrack.data import forward
from saetrack.pipeline.layers import prepare_layers
from saetrack.stages.cache import cache_activations
from saetrack.stages.cache.layers import cache_layers
from saetrack.stages.chain import load_chain, train_chain


def _part_files(run_dir: Path, run: RunConfig) -> dict[int, dict[str, str]]:
    """Step -> the file hashes of the cache part of that checkpoint."""
    return {
        step: store.read_manifest(run_dir / paths.CACHE_DIR / paths.step_dir_name(step))["files"]
        for step in run.sae_steps
    }


@pytest.fixture(scope="module")
def layered(run: RunConfig, smoke_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, Path]:
    """The smoke run over layers 0 and its own layer, its inputs lent by the smoke run and its caches built together."""
    multi = run.with_overrides({"cache.layers": [0, run.cache.layer]})
    work = tmp_path_factory.mktemp("layers")
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR):
        shutil.copytree(smoke_run_dir / folder, work / folder)
    prepare_layers(multi, work)
    cache_layers(multi, work, progress=False)
    return multi, work


@pytest.mark.slow
def test_each_layer_gets_its_single_layer_cache_and_chain(
    run: RunConfig, layered: tuple[RunConfig, Path], smoke_run_dir: Path, chain_run_dir: Path, tmp_path: Path
) -> None:
    multi, work = layered
    own, other = multi.layer_runs()[1], multi.layer_runs()[0]
    assert (own.cache.layer, other.cache.layer) == (run.cache.layer, 0)
    # the run's own layer: the smoke run's cache and chain, built by the single-layer path
    own_dir = work / paths.layer_dir_name(own.cache.layer)
    assert _part_files(own_dir, own) == _part_files(smoke_run_dir, run)
    train_chain(own, own_dir, progress=False)
    for step, folder in load_chain(own_dir, own).items():
        ours, theirs = (f / paths.CHAIN_DIR / paths.step_dir_name(step) / "sae_weights.safetensors"
                        for f in (own_dir, chain_run_dir))  # fmt: skip
        assert ours.read_bytes() == theirs.read_bytes(), f"layer {own.cache.layer}, step {step}"
        assert folder.parent.parent == own_dir
    # layer 0: cached alone from its own run directory, the same files, and the same chain
    alone = tmp_path / "alone"
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR):
        shutil.copytree(smoke_run_dir / folder, alone / folder)
    cache_activations(other, alone, progress=False)
    other_dir = work / paths.layer_dir_name(0)
    assert _part_files(other_dir, other) == _part_files(alone, other)
    assert (
        store.read_manifest(other_dir / paths.CACHE_DIR)["config_hash"]
        == store.read_manifest(alone / paths.CACHE_DIR)["config_hash"]
    )
    train_chain(other, other_dir, progress=False)
    train_chain(other, alone, progress=False)
    for step in other.sae_steps:
        ours, theirs = (f / paths.CHAIN_DIR / paths.step_dir_name(step) / "sae_weights.safetensors"
                        for f in (other_dir, alone))  # fmt: skip
        assert ours.read_bytes() == theirs.read_bytes(), f"layer 0, step {step}"


@pytest.mark.slow
def test_one_forward_per_batch_feeds_every_layer(
    run: RunConfig, smoke_run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    multi = run.with_overrides({"cache.layers": [0, 1]})
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR):
        shutil.copytree(smoke_run_dir / folder, tmp_path / folder)
    prepare_layers(multi, tmp_path)
    calls: list[tuple[int, ...]] = []
    real = forward.activations_at_hooks

    def counted(model, tokens, layers, hook="resid_pre"):  # type: ignore[no-untyped-def]
        calls.append(tuple(layers))
        return real(model, tokens, layers, hook)

    monkeypatch.setattr(forward, "activations_at_hooks", counted)
    cache_layers(multi, tmp_path, progress=False)
    assert calls and set(calls) == {(0, 1)}
    manifest = store.read_manifest(smoke_run_dir / paths.CACHE_DIR)
    batches = 0
    for info in manifest["per_step"].values():
        for rows, _ in info["shapes"].values():
            batches += -(-(rows // run.cache.context_length) // run.cache.batch_contexts)
    assert len(calls) == batches  # one forward per batch of contexts, whatever the number of layers


@pytest.mark.slow
def test_an_interrupted_multi_layer_cache_resumes_to_the_same_files(
    layered: tuple[RunConfig, Path], smoke_run_dir: Path, tmp_path: Path
) -> None:
    multi, reference = layered
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR):
        shutil.copytree(smoke_run_dir / folder, tmp_path / folder)
    prepare_layers(multi, tmp_path)

    class Killed(Exception):
        pass

    def kill_after_second(step: int) -> None:
        if step == multi.sae_steps[1]:
            raise Killed

    with pytest.raises(Killed):
        cache_layers(multi, tmp_path, progress=False, after_step=kill_after_second)
    for layer_run in multi.layer_runs():
        assert store.read_manifest(tmp_path / paths.layer_dir_name(layer_run.cache.layer) / paths.CACHE_DIR) is None
    cache_layers(multi, tmp_path, progress=False)
    for layer_run in multi.layer_runs():
        name = paths.layer_dir_name(layer_run.cache.layer)
        assert _part_files(tmp_path / name, layer_run) == _part_files(reference / name, layer_run)


def test_a_single_layer_run_is_refused(run: RunConfig, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cache\.layers"):
        cache_layers(run, tmp_path)
