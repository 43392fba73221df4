"""A user's own model, beyond GPT-NeoX and one hook: local GPT-2 and Llama checkpoint folders (random weights, built
here) cached and chained at a sublayer hook; the streamed and cached activations agree; the CE loss recovered splices
the SAE at every hook."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from saetrack import paths, store
from saetrack.analysis.metrics import ce_loss_recovered
from saetrack.config import RunConfig, get_preset
from saetrack.config.data import CACHE_HOOKS
from saetrack.data.activations import open_activations
from saetrack.data.checkpoints import LocalSuite, checkpoint_architecture
from saetrack.data.corpus import prepare_corpus
from saetrack.data.stream import StreamedActivations
from saetrack.sae.model import build_sae
from saetrack.stages.cache import cache_activations, checkpoint_width
from saetrack.stages.chain import read_link_manifests, train_chain
from tests.data.archs import D_MODEL, N_LAYERS, build_arch_suite
from tests.data.test_hf_stream import HELDOUT, _parquet_dataset, _texts

STEPS = (0, 3, 9)
#: (architecture, hook) of each end-to-end run: a GPT-2 (nanoGPT layout) read after its MLP, a Llama inside its block.
RUNS = (("gpt2", "mlp_out"), ("llama", "resid_mid"))


def _run(suite: Path, data: Path, hook: str, mode: str = "cached") -> RunConfig:
    return get_preset("smoke").with_overrides(
        {
            "model.source": "local",
            "model.local_path": str(suite),
            "model.checkpoint_steps": STEPS,
            "model.n_layers": N_LAYERS,
            "model.d_model": None,
            "corpus.source": f"hf:{data}",
            "corpus.heldout_fraction": HELDOUT,
            "cache.layer": 1,
            "cache.hook": hook,
            "cache.mode": mode,
            "cache.analysis_contexts": 8,
            "cache.heldout_tokens": 256,
            "chain.schedule": tuple(range(len(STEPS))),
            "chain.baseline": (),
            "chain.expansion_factor": 2,
            "chain.l1_coefficient": 1e-2,
            "chain.first_tokens": 2048,
            "chain.link_tokens": 512,
            "chain.batch_size": 256,
            "scale.presets": ("smoke",),
        }
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local parquet dataset of the tiny models' words (the Hub's layout, read offline)."""
    return _parquet_dataset(tmp_path_factory.mktemp("own-data"), _texts(n_rows=600, seed=2))


@pytest.fixture(scope="module", params=RUNS, ids=[f"{a}-{h}" for a, h in RUNS])
def chained(request: pytest.FixtureRequest, data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """(architecture, run, run dir, suite folder) of a cached and chained run on the architecture's own suite."""
    arch, hook = request.param
    root = tmp_path_factory.mktemp(f"own-{arch}")
    build_arch_suite(root / "suite", arch, {step: 50 + i for i, step in enumerate(STEPS)}, nudge=0.1)
    run = _run(root / "suite", data, hook)
    run_dir = root / "run"
    prepare_corpus(run, run_dir, progress=False)
    cache_activations(run, run_dir, progress=False)
    train_chain(run, run_dir, progress=False)
    return arch, run, run_dir, root / "suite"


def test_the_chain_trains_every_link_at_the_hook_it_records(chained) -> None:
    arch, run, run_dir, suite = chained
    assert checkpoint_architecture(suite / "step0") == arch and checkpoint_width(suite / "step0") == D_MODEL
    cache = store.read_manifest(run_dir / paths.CACHE_DIR)
    assert cache["hook_name"] == run.cache.hook_name == f"blocks.1.hook_{run.cache.hook}"
    assert cache["d_model"] == D_MODEL
    links = read_link_manifests(run_dir)
    assert sorted(links) == list(STEPS)
    for step, manifest in links.items():
        metrics = manifest["link"]["metrics"]
        assert np.isfinite(metrics["explained_variance"]) and metrics["l0"] > 0, step
        assert np.isfinite(metrics["clean_loss"]) and np.isfinite(metrics["sae_loss"]), step
        sae_cfg = json.loads((run_dir / paths.CHAIN_DIR / paths.step_dir_name(step) / "cfg.json").read_text())
        assert sae_cfg["metadata"]["hook_name"] == run.cache.hook_name


def test_streamed_and_cached_activations_agree(chained, tmp_path: Path) -> None:
    _, run, run_dir, _ = chained
    streamed_run = run.with_overrides({"cache.mode": "streamed"})
    shutil.copytree(run_dir / paths.CORPUS_DIR, tmp_path / paths.CORPUS_DIR)
    cache_activations(streamed_run, tmp_path, progress=False)
    cached = open_activations(run, run_dir)
    for full_model in (True, False):  # the whole model, and the one cut after the hook
        stream = StreamedActivations(streamed_run, tmp_path, full_model=full_model)
        assert stream.hook_name == run.cache.hook_name
        for step in (STEPS[0], STEPS[-1]):
            np.testing.assert_allclose(stream.heldout(step), cached.heldout(step), rtol=0, atol=1e-6)
            np.testing.assert_allclose(stream.train_head(step, 300), cached.train_head(step, 300), rtol=0, atol=1e-6)
            np.testing.assert_allclose(stream.analysis(step)[:50], cached.analysis(step)[:50], rtol=0, atol=1e-6)
    assert np.abs(cached.heldout(STEPS[0])).max() > 0.1


def _identity_sae(run: RunConfig, d: int, zero: bool = False) -> object:
    """An SAE reconstructing its input exactly (``ReLU(x) - ReLU(-x)``), or outputting zeros with ``zero``."""
    chain = dataclasses.replace(run.chain, expansion_factor=2, decoder_norm="unit", apply_b_dec_to_input=False)
    sae = build_sae(d, chain, seed=0)
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.zeros(2 * d, d) if zero else torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


@pytest.mark.parametrize("hook", CACHE_HOOKS)
def test_ce_loss_recovered_splices_the_sae_at_every_hook(chained, hook: str) -> None:
    """Known answers: an exact SAE recovers everything (its loss is the clean loss), a zero SAE nothing."""
    _, run, _, suite = chained
    model = LocalSuite(suite).load_hooked(STEPS[-1])
    tokens = np.random.default_rng(0).integers(0, 64, size=(6, 16))
    hook_name = f"blocks.1.hook_{hook}"
    exact = ce_loss_recovered(model, _identity_sae(run, D_MODEL), tokens, hook_name, min_gap=0.0)
    gap = abs(exact["ablation_gap"])  # a random model: deleting the activation may even lower the loss
    assert gap > 5e-4 and abs(exact["sae_loss"] - exact["clean_loss"]) < 1e-6
    assert abs(exact["ce_recovered"] - 1) < 2e-6 / gap
    zero = ce_loss_recovered(model, _identity_sae(run, D_MODEL, zero=True), tokens, hook_name, min_gap=0.0)
    assert abs(zero["sae_loss"] - zero["zero_loss"]) < 1e-6 and abs(zero["ce_recovered"]) < 2e-6 / gap
