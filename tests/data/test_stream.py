"""Streamed activations: the smoke preset trains and analyses the same chain as from the cache, and every input is
checked before anything is computed from it; no batch reads back to the host, one model load serves a link and its
evaluation, the link's tokens are read by batch, and the batch path on meta makes nothing elsewhere."""

from __future__ import annotations

import itertools
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from transformer_lens import HookedTransformer, HookedTransformerConfig

from saetrack import paths
from saetrack.config import get_preset
from saetrack.data.activations import ActivationCache, open_activations
from saetrack.data.corpus import TRAIN_TOKENS
from saetrack.data.forward import residual_chunks
from saetrack.data.shuffle import block_shuffled_batches
from saetrack.data.stream import ContextSpan, LazyActivations, StreamedActivations, hooked_model
from saetrack.stages.cache import cache_activations
from saetrack.stages.chain import train_chain
from saetrack.stages.drift import analyse_drift
from saetrack.stages.formation import analyse_formation
from saetrack.store import StaleArtifactError
from tests.data.test_shuffle import DeviceRecorder, count_syncs


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
    on_device = lazy.device_rows(100, 1300)
    assert isinstance(on_device, torch.Tensor) and on_device.device.type == "cpu"  # the source's device
    np.testing.assert_array_equal(on_device.numpy(), full[100:1300])  # the same forward batches, the same values
    np.testing.assert_array_equal(lazy.device_rows(len(full) - 5, len(full) + 9).numpy(), full[-5:])


@pytest.fixture(scope="module")
def streamed_only(smoke_run_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The smoke inputs with a streamed token plan only (no chain trained)."""
    run = get_preset("smoke", {"cache.mode": "streamed", "cache.buffer_tokens": 1000})
    run_dir = _copy_inputs(smoke_run_dir, tmp_path_factory.mktemp("streamed_only"), with_cache=False)
    cache_activations(run, run_dir, progress=False)
    return run, run_dir


def test_a_streamed_batch_reads_nothing_back_to_the_host(streamed_only, monkeypatch: pytest.MonkeyPatch) -> None:
    run, run_dir = streamed_only
    stream = open_activations(run, run_dir)
    batches = stream.train_batches(run.sae_steps[1], n_tokens=3000, batch_size=256, seed=0)
    next(batches)  # warm-up: the model is loaded, the buffer allocated
    counts = count_syncs(monkeypatch)
    for _ in range(30):  # forwards, buffer refills, straddling batches and a second pass
        next(batches)
    assert sum(counts.values()) == 0, counts


def test_one_model_load_serves_the_link_and_its_evaluation(streamed_only, monkeypatch: pytest.MonkeyPatch) -> None:
    run, run_dir = streamed_only
    stream = open_activations(run, run_dir)
    assert isinstance(stream, StreamedActivations)
    loads: list[int] = []
    load = stream.checkpoints.load_hooked
    monkeypatch.setattr(stream.checkpoints, "load_hooked", lambda step, **kw: loads.append(step) or load(step, **kw))
    step = run.sae_steps[2]
    stream.train_head(step, 100)
    next(stream.train_batches(step, n_tokens=512, batch_size=256, seed=0))
    stream.heldout(step)
    model = hooked_model(stream, stream.checkpoints, step, "cpu")
    assert loads == [step] and model is stream.model(step)
    assert model.unembed is not None and len(model.blocks) == model.cfg.n_layers  # whole: the CE loss needs logits
    assert hooked_model(object(), stream.checkpoints, step, "cpu") is not model and loads == [step, step]


def test_a_stream_without_evaluation_keeps_only_the_blocks_before_the_hook(streamed_only) -> None:
    run, run_dir = streamed_only
    whole, cut = open_activations(run, run_dir), open_activations(run, run_dir, full_model=False)
    assert isinstance(cut, StreamedActivations) and whole.full_model and not cut.full_model
    step = run.sae_steps[0]
    model = cut.model(step)
    assert len(model.blocks) == run.cache.layer and model.unembed is None
    np.testing.assert_array_equal(cut.train_head(step, 300), whole.train_head(step, 300))
    loaded: list[int] = []
    cut.checkpoints.load_hooked = lambda s, **kw: loaded.append(s) or whole.model(s)  # type: ignore[method-assign]
    hooked_model(cut, cut.checkpoints, step, "cpu")
    assert loaded == [step]  # a cut model is never handed to an evaluation


def test_link_tokens_are_read_by_batch_never_whole(streamed_only, monkeypatch: pytest.MonkeyPatch) -> None:
    run, run_dir = streamed_only
    stream = open_activations(run, run_dir)
    step = run.sae_steps[1]
    whole = stream.train_tokens(step)
    span = ContextSpan(stream.plan, stream._train_stream, stream.plan.train[step])
    assert span.shape == whole.shape and len(span) == len(whole)
    assert span.start == stream.plan.train[step][0]
    np.testing.assert_array_equal(span[3:17], whole[3:17])
    np.testing.assert_array_equal(np.asarray(span), whole)
    assert span[5:2].shape == (0, whole.shape[1])
    with pytest.raises(TypeError):
        span[[1, 2]]  # type: ignore[index]
    monkeypatch.setattr(StreamedActivations, "train_tokens", lambda *a: pytest.fail("materialised the link's tokens"))
    stream.train_head(step, 100)
    next(stream.train_batches(step, n_tokens=512, batch_size=256, seed=0))


def test_the_streamed_batch_path_on_meta_makes_nothing_elsewhere() -> None:
    config = dict(n_layers=3, d_model=16, n_ctx=8, d_head=4, n_heads=4, d_vocab=50, act_fn="gelu")
    cfg = HookedTransformerConfig(**config, normalization_type="LN", device="meta")
    with torch.device("meta"):
        model = HookedTransformer(cfg, move_to_device=False)
    tokens = np.random.default_rng(0).integers(0, 50, size=(20, 8))

    def rows() -> Iterator[torch.Tensor]:
        return residual_chunks(model, tokens, 2, batch_contexts=4, device="meta")

    with DeviceRecorder() as recorder:
        batches = list(itertools.islice(block_shuffled_batches(rows, 16, buffer_rows=40, seed=0, device="meta"), 12))
    assert all(b.device.type == "meta" and b.shape == (16, 16) for b in batches)
    assert recorder.off_device("meta") == set()
