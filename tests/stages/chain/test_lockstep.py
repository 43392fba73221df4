"""Streamed layers trained side by side from one forward per batch: every layer's chain and baselines are, byte for
byte, its own single-layer streamed run's; a layer's interrupted chain resumes to the same weights. On the smoke
suite's first four checkpoints (a short chain, the same code paths)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from saetrack import paths, store
from saetrack.config import RunConfig
from saetrack.pipeline.layers import prepare_layers
from saetrack.stages.cache import cache_activations
from saetrack.stages.cache.layers import cache_layers
from saetrack.stages.chain import train_baselines, train_chain
from saetrack.stages.chain.lockstep import train_layers_in_lockstep


def _weights(folder: Path, kind: str, steps: tuple[int, ...]) -> dict[int, bytes]:
    return {s: (folder / kind / paths.step_dir_name(s) / "sae_weights.safetensors").read_bytes() for s in steps}


@pytest.fixture(scope="module")
def streamed_layers(
    run: RunConfig, smoke_run_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[RunConfig, Path, dict]:
    multi = run.with_overrides({"cache.mode": "streamed", "cache.layers": [0, 1], "chain.schedule": [0, 1, 2, 3],
                                "chain.baseline": [3]})  # the smoke suite's first four checkpoints  # fmt: skip
    work = tmp_path_factory.mktemp("lockstep")
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR):
        shutil.copytree(smoke_run_dir / folder, work / folder)
    prepare_layers(multi, work)
    cache_layers(multi, work, progress=False)
    return multi, work, train_layers_in_lockstep(multi, work, log=lambda _: None)


@pytest.mark.slow
def test_each_layer_trains_its_single_layer_streamed_chain_and_baselines(
    streamed_layers: tuple[RunConfig, Path, dict], smoke_run_dir: Path, tmp_path: Path
) -> None:
    multi, work, shared = streamed_layers
    assert shared["alone"] == 0 and shared["shared"] > 0  # every request for rows was served by a shared forward
    for layer_run in multi.layer_runs():
        alone = tmp_path / paths.layer_dir_name(layer_run.cache.layer)
        for folder in (paths.CORPUS_DIR, paths.MODEL_DIR):
            shutil.copytree(smoke_run_dir / folder, alone / folder)
        cache_activations(layer_run, alone, progress=False)
        train_chain(layer_run, alone, progress=False)
        train_baselines(layer_run, alone, progress=False)
        together = work / paths.layer_dir_name(layer_run.cache.layer)
        for kind, steps in ((paths.CHAIN_DIR, layer_run.sae_steps), (paths.BASELINE_DIR, layer_run.baseline_steps)):
            assert _weights(together, kind, steps) == _weights(alone, kind, steps), (layer_run.preset, kind)


@pytest.mark.slow
def test_a_layer_whose_chain_was_cut_short_resumes_to_the_same_weights(
    streamed_layers: tuple[RunConfig, Path, dict], tmp_path: Path
) -> None:
    multi, work, _ = streamed_layers
    copy = tmp_path / "copy"
    shutil.copytree(work, copy)
    layer_run = multi.layer_runs()[1]
    folder = copy / paths.layer_dir_name(layer_run.cache.layer)
    # as if killed during the last two links: neither they nor the chain's manifest were written
    for step in layer_run.sae_steps[-2:]:
        shutil.rmtree(folder / paths.CHAIN_DIR / paths.step_dir_name(step))
    (folder / paths.CHAIN_DIR / paths.MANIFEST).unlink()
    again = train_layers_in_lockstep(multi, copy, log=lambda _: None)
    # the other layer had nothing left to do: the two links were trained again from the layer's own forwards
    assert again["alone"] > 0 and again["shared"] == 0 and again["forwards"] == 0
    assert store.read_manifest(folder / paths.CHAIN_DIR) is not None
    original = work / paths.layer_dir_name(layer_run.cache.layer)
    assert _weights(folder, paths.CHAIN_DIR, layer_run.sae_steps) == _weights(
        original, paths.CHAIN_DIR, layer_run.sae_steps
    )


def test_a_cached_or_single_layer_run_is_refused(run: RunConfig, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="streamed run with cache"):
        train_layers_in_lockstep(run.with_overrides({"cache.layers": [0, 1]}), tmp_path)
