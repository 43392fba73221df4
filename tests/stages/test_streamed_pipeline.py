"""The whole pipeline streamed (cache, chain, baselines, comparison, formation, drift) on local GPT-NeoX checkpoints
of a real model's width (Pythia-160m's 768) at CI size, reading an ``hf:`` dataset in the Hub's layout offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from saetrack import paths, store
from saetrack.config import RunConfig, get_preset
from saetrack.data.corpus import prepare_corpus, streamed_token_budget
from saetrack.stages.cache import cache_activations
from saetrack.stages.chain import read_link_manifests, train_baselines, train_chain
from saetrack.stages.chain.comparison import compare_chain_and_baselines
from saetrack.stages.drift import analyse_drift, load_drift
from saetrack.stages.formation import analyse_formation, load_formation
from tests.data.neox import save_tokenizer, tiny_model
from tests.data.test_hf_stream import HELDOUT, _parquet_dataset, _texts

WIDTH = 768  # Pythia-160m's residual stream
STEPS = (0, 1, 2, 4, 8, 16)  # drift phases need 6 checkpoints


def _suite(root: Path) -> Path:
    for seed, step in enumerate(STEPS):
        model = tiny_model(
            seed, hidden_size=WIDTH, num_attention_heads=12, intermediate_size=4 * WIDTH, max_position_embeddings=64
        )
        model.save_pretrained(root / paths.step_dir_name(step))
    save_tokenizer(root / "tokenizer")
    return root


@pytest.fixture(scope="module")
def streamed(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, Path]:
    root = tmp_path_factory.mktemp("neox768")
    run = get_preset("smoke").with_overrides(
        {
            "model.source": "local",
            "model.local_path": str(_suite(root / "suite")),
            "model.checkpoint_steps": STEPS,
            "model.n_layers": 2,
            "model.d_model": WIDTH,
            "corpus.source": f"hf:{_parquet_dataset(root / 'data', _texts(n_rows=900, seed=1))}",
            "corpus.heldout_fraction": HELDOUT,
            "cache.layer": 1,
            "cache.mode": "streamed",
            "cache.buffer_tokens": 1024,
            "cache.analysis_contexts": 8,
            "cache.heldout_tokens": 128,
            "chain.schedule": tuple(range(len(STEPS))),
            "chain.baseline": (len(STEPS) - 1,),
            "chain.expansion_factor": 2,
            "chain.first_tokens": 1024,
            "chain.link_tokens": 256,
            "chain.batch_size": 256,
            "scale.presets": ("smoke",),
        }
    )
    run_dir = root / "run"
    prepare_corpus(run, run_dir, progress=False)
    cache_activations(run, run_dir, progress=False)
    train_chain(run, run_dir, progress=False)
    train_baselines(run, run_dir, progress=False)
    compare_chain_and_baselines(run, run_dir, progress=False)
    analyse_formation(run, run_dir, progress=False)
    analyse_drift(run, run_dir, progress=False)
    return run, run_dir


def test_the_corpus_holds_exactly_the_planned_tokens_and_no_activation_is_written(streamed) -> None:
    run, run_dir = streamed
    corpus = store.read_manifest(run_dir / paths.CORPUS_DIR)
    assert (corpus["n_train_tokens"], corpus["n_heldout_tokens"]) == streamed_token_budget(run)
    written = {p.name for p in (run_dir / paths.CACHE_DIR).rglob("*.npy")}
    assert written == {"analysis_tokens.npy", "heldout_tokens.npy"}
    cache = store.read_manifest(run_dir / paths.CACHE_DIR)
    assert cache["mode"] == "streamed" and cache["d_model"] == WIDTH and cache["wrapped"]["train"] is False


def test_every_link_and_the_baseline_trained_on_its_own_tokens_with_finite_metrics(streamed) -> None:
    run, run_dir = streamed
    links = read_link_manifests(run_dir)
    assert sorted(links) == list(run.sae_steps)
    for step, manifest in links.items():
        metrics = manifest["link"]["metrics"]
        assert np.isfinite(metrics["explained_variance"]) and metrics["l0"] > 0, step
        assert manifest["link"]["training"]["n_tokens"] == run.chain.tokens_for(run.sae_steps.index(step))
    baseline = read_link_manifests(run_dir, paths.BASELINE_DIR)
    assert sorted(baseline) == list(run.baseline_steps)
    assert store.read_manifest(run_dir / paths.COMPARISON_DIR)["agreement"][0]["step"] == run.baseline_steps[0]


def test_formation_and_drift_cover_every_checkpoint_and_feature(streamed) -> None:
    run, run_dir = streamed
    formation = load_formation(run_dir, run)
    d_sae = run.chain.expansion_factor * WIDTH
    assert formation.top_indices.shape == (len(STEPS), d_sae, run.formation.top_k)
    assert formation.top_indices.max() < run.cache.analysis_contexts * run.cache.context_length
    drift = load_drift(run_dir, run)
    assert list(drift.steps) == list(STEPS)
