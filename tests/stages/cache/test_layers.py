"""Several layers from one forward (``cache.layers``): each layer's cache is, file for file, its own single-layer
run's, so each layer trains the same chain; one forward per batch feeds every layer; an interrupted multi-layer cache
resumes to the same files. On the smoke suite's first three checkpoints (a short chain, the same code paths)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from saetrack import paths, store
from saetrack.config import RunConfig
from saetrack.data import forward
from saetrack.pipeline.layers import prepare_layers
from saetrack.stages.cache import cache_activations
from saetrack.stages.cache.layers import cache_layers
from saetrack.stages.chain import train_chain

#: The smoke preset over its first three checkpoints: a 3-link chain, one baseline checkpoint.
SHORT = {"chain.schedule": [0, 1, 2], "chain.baseline": [2]}


def _part_files(run_dir: Path, run: RunConfig) -> dict[int, dict[str, str]]:
    """Step -> the file hashes of the cache part of that checkpoint."""
    return {
        step: store.read_manifest(run_dir / paths.CACHE_DIR / paths.step_dir_name(step))["files"]
        for step in run.sae_steps
    }


def _lend_inputs(smoke_run_dir: Path, work: Path) -> None:
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR):  # the smoke suite, so it is not trained again
        shutil.copytree(smoke_run_dir / folder, work / folder)


@pytest.fixture(scope="module")
def layered(run: RunConfig, smoke_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Layers 0 and 1 of the short smoke run, their caches built together, every forward's layers counted."""
    multi = run.with_overrides({**SHORT, "cache.layers": [0, 1]})
    work = tmp_path_factory.mktemp("layers")
    _lend_inputs(smoke_run_dir, work)
    prepare_layers(multi, work)
    calls: list[tuple[int, ...]] = []
    real = forward.activations_at_hooks

    def counted(model, tokens, layers, hook="resid_pre"):  # type: ignore[no-untyped-def]
        calls.append(tuple(layers))
        return real(model, tokens, layers, hook)

    forward.activations_at_hooks = counted  # type: ignore[assignment]
    try:
        cache_layers(multi, work, progress=False)
    finally:
        forward.activations_at_hooks = real  # type: ignore[assignment]
    return {"run": multi, "dir": work, "forwards": calls}


@pytest.mark.slow
def test_each_layer_gets_its_single_layer_cache_and_chain(
    layered: dict[str, Any], smoke_run_dir: Path, tmp_path: Path
) -> None:
    multi, work = layered["run"], layered["dir"]
    for layer_run in multi.layer_runs():
        alone = tmp_path / f"alone{layer_run.cache.layer}"
        _lend_inputs(smoke_run_dir, alone)
        cache_activations(layer_run, alone, progress=False)
        together = work / paths.layer_dir_name(layer_run.cache.layer)
        assert _part_files(together, layer_run) == _part_files(alone, layer_run)
        hashes = [store.read_manifest(d / paths.CACHE_DIR)["config_hash"] for d in (together, alone)]
        assert hashes[0] == hashes[1]
        train_chain(layer_run, together, progress=False)
        train_chain(layer_run, alone, progress=False)
        for step in layer_run.sae_steps:
            ours, theirs = (d / paths.CHAIN_DIR / paths.step_dir_name(step) / "sae_weights.safetensors"
                            for d in (together, alone))  # fmt: skip
            assert ours.read_bytes() == theirs.read_bytes(), f"layer {layer_run.cache.layer}, step {step}"


@pytest.mark.slow
def test_one_forward_per_batch_feeds_every_layer(layered: dict[str, Any]) -> None:
    multi, calls = layered["run"], layered["forwards"]
    cache = multi.cache
    manifest = store.read_manifest(layered["dir"] / "layer1" / paths.CACHE_DIR)
    batches = 0
    for info in manifest["per_step"].values():  # every token set of every checkpoint, in batches of contexts
        for rows, _ in info["shapes"].values():
            batches += -(-(rows // cache.context_length) // cache.batch_contexts)
    assert set(calls) == {(0, 1)}
    assert len(calls) == batches  # one forward per batch of contexts, whatever the number of layers


@pytest.mark.slow
def test_an_interrupted_multi_layer_cache_resumes_to_the_same_files(
    layered: dict[str, Any], smoke_run_dir: Path, tmp_path: Path
) -> None:
    multi, reference = layered["run"], layered["dir"]
    _lend_inputs(smoke_run_dir, tmp_path)
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
