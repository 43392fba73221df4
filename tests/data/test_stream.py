"""Streamed activations: the smoke preset trains and analyses the same chain as from the cache, and every input is
checked before anything is computed from it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from saetrack import paths
from saetrack.config import get_preset
from saetrack.data.activations import ActivationCache, open_activations
from saetrack.data.corpus import TRAIN_TOKENS
from saetrack.data.stream import LazyActivations, StreamedActivations
from saetrack.stages.cache import cache_activations
from saetrack.stages.chain import train_chain
from saetrack.stages.drift import analyse_drift
from saetrack.stages.formation import analyse_formation
from saetrack.store import StaleArtifactError


def _copy_inputs(src: Path, dst: Path, with_cache: bool) -> Path:
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR, *((paths.CACHE_DIR,) if with_cache else ())):
        shutil.copytree(src / folder, dst / folder)
    return dst


def _analyse(run, run_dir: Path) -> None:
    train_chain(run, run_dir, progress=False)
    analyse_formation(run, run_dir, progress=False)
    analyse_drift(run, run_dir, progress=False)


@pytest.fixture(scope="module")
def both_modes(smoke_run_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The smoke chain, formation and drift, cached and streamed (no baselines: the chain is compared)."""
    cached_run = get_preset("smoke")
    streamed_run = get_preset("smoke", {"cache.mode": "streamed"})
    cached = _copy_inputs(smoke_run_dir, tmp_path_factory.mktemp("cached"), with_cache=True)
    streamed = _copy_inputs(smoke_run_dir, tmp_path_factory.mktemp("streamed"), with_cache=False)
    cache_activations(streamed_run, streamed, progress=False)
    _analyse(cached_run, cached)
    _analyse(streamed_run, streamed)
    return cached_run, cached, streamed_run, streamed


def test_streamed_mode_writes_no_activations(both_modes) -> None:
    _, cached, _, streamed = both_modes
    assert not list((streamed / paths.CACHE_DIR).rglob("*train.npy"))
    assert not list((streamed / paths.CACHE_DIR).rglob("analysis.npy"))
    assert list((cached / paths.CACHE_DIR).rglob("train.npy"))


def test_streamed_chain_weights_equal_the_cached_chain(both_modes) -> None:
    run, cached, _, streamed = both_modes
    for step in run.sae_steps:
        rel = Path(paths.CHAIN_DIR) / paths.step_dir_name(step) / "sae_weights.safetensors"
        a, b = load_file(cached / rel), load_file(streamed / rel)
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=f"step {step} {name}")


@pytest.mark.parametrize("folder", [paths.FORMATION_DIR, paths.DRIFT_DIR])
def test_streamed_formation_and_drift_numbers_equal_the_cached_ones(both_modes, folder: str) -> None:
    _, cached, _, streamed = both_modes
    files = sorted((cached / folder).glob("*.npz"))
    assert files
    for file in files:
        a, b = np.load(file), np.load(streamed / folder / file.name)
        assert a.files == b.files
        for key in a.files:
            if a[key].dtype.kind == "f":
                np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=f"{file.name}:{key}")
            else:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{file.name}:{key}")


def test_a_shuffle_buffer_gives_the_same_batches_from_cache_and_stream(both_modes) -> None:
    run, cached, streamed_run, streamed = both_modes
    over = {"cache.buffer_tokens": 1000}
    cache = ActivationCache(cached, run.with_overrides(over))
    stream = open_activations(streamed_run.with_overrides(over), streamed)
    assert isinstance(stream, StreamedActivations)
    step = run.sae_steps[2]
    kwargs = dict(start=512, n_tokens=2048, batch_size=256, seed=5)
    from_cache, from_stream = cache.train_batches(step, **kwargs), stream.train_batches(step, **kwargs)
    for _ in range(10):  # one pass is 8 batches; the next pass starts new permutations on both
        np.testing.assert_allclose(next(from_cache).numpy(), next(from_stream).numpy(), rtol=1e-6, atol=1e-6)
    batches = stream.train_batches(step, **kwargs)
    rows = np.concatenate([next(batches).numpy() for _ in range(8)])
    expected = np.asarray(cache.train(step)[512 : 512 + 2048])
    np.testing.assert_allclose(np.sort(rows, axis=0), np.sort(expected, axis=0), rtol=1e-6, atol=1e-6)


def test_stream_refuses_rows_outside_the_links_slice(both_modes) -> None:
    _, _, streamed_run, streamed = both_modes
    stream = open_activations(streamed_run, streamed)
    step = streamed_run.sae_steps[1]
    with pytest.raises(ValueError, match=rf"of step {step}'s training slice.*the token plan gives it"):
        stream.train_batches(step, n_tokens=10**7, batch_size=256, seed=0)


def test_a_changed_token_file_or_checkpoint_is_named_before_streaming(both_modes, tmp_path: Path) -> None:
    _, _, streamed_run, streamed = both_modes
    work = tmp_path / "run"
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR, paths.CACHE_DIR):
        shutil.copytree(streamed / folder, work / folder)
    open_activations(streamed_run, work)  # intact: opens
    tokens_file = work / paths.CORPUS_DIR / TRAIN_TOKENS
    original = tokens_file.read_bytes()
    tokens_file.write_bytes(original[:-2] + bytes([original[-2] ^ 1]) + original[-1:])
    with pytest.raises(StaleArtifactError, match=re.escape(str(tokens_file)) + " was changed on disk"):
        open_activations(streamed_run, work)
    tokens_file.write_bytes(original)
    step = streamed_run.sae_steps[0]
    weights = next((work / paths.MODEL_DIR / paths.step_dir_name(step)).glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(StaleArtifactError, match=rf"weights of checkpoint step {step}.*rerun notebook 01"):
        open_activations(streamed_run, work).train_head(step, 10)


def test_an_interrupted_streamed_chain_resumes_to_the_same_weights(both_modes, tmp_path: Path) -> None:
    _, _, streamed_run, streamed = both_modes
    work = tmp_path / "run"
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR, paths.CACHE_DIR):
        shutil.copytree(streamed / folder, work / folder)
    stop_at = streamed_run.sae_steps[2]

    def interrupt(step: int) -> None:
        if step == stop_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_chain(streamed_run, work, progress=False, after_link=interrupt)
    assert len(list((work / paths.CHAIN_DIR).glob("step*/manifest.json"))) == 3  # finished links kept
    train_chain(streamed_run, work, progress=False)
    for step in streamed_run.sae_steps:
        rel = Path(paths.CHAIN_DIR) / paths.step_dir_name(step) / "sae_weights.safetensors"
        a, b = load_file(streamed / rel), load_file(work / rel)
        assert all(np.array_equal(a[k], b[k]) for k in a), step


def test_the_lazy_analysis_view_reads_rows_like_the_cache(both_modes) -> None:
    run, cached, streamed_run, streamed = both_modes
    step = run.sae_steps[3]
    full = np.asarray(ActivationCache(cached, run).analysis(step))
    lazy = open_activations(streamed_run, streamed).analysis(step)
    assert isinstance(lazy, LazyActivations) and lazy.shape == full.shape and lazy.ndim == 2
    np.testing.assert_array_equal(lazy[100:1300], full[100:1300])
    rows = np.random.default_rng(0).choice(len(full), size=300, replace=False)
    np.testing.assert_array_equal(lazy[rows], full[rows])
    np.testing.assert_array_equal(lazy[[-1]], full[[-1]])
    with pytest.raises(IndexError, match="out of range"):
        lazy[np.array([len(full)])]
