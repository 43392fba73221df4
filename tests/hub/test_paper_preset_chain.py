"""``run_all.py --preset pythia-160m-l4 --chain-from-hub REPO --chain-revision COMMIT`` reaches the analysis stages
without planning or streaming a single training token - offline, with a chain in a local Hub-cache layout and a
tiny stand-in for Pythia (the paper's chain section, budgets and schedule kept; the model, corpus and analysis set
swapped for test-sized ones)."""

from __future__ import annotations

import sys
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch

from saetrack import paths, store
from saetrack.analysis.metrics import reconstruction_metrics
from saetrack.config import RunConfig, get_preset
from saetrack.config.schedules import PYTHIA_CHECKPOINT_STEPS
from saetrack.hub.push import push_chain
from saetrack.pipeline.skeleton import run_stage
from saetrack.sae.io import save_sae
from saetrack.sae.model import build_sae
from saetrack.stages.chain import chain_config_hash
from saetrack.stages.chain.links import sae_metadata
from saetrack.stages.drift import analyse_drift, load_drift
from saetrack.stages.formation import analyse_formation
from tests.data.neox import save_tokenizer, tiny_model
from tests.data.test_hf_stream import HELDOUT, _parquet_dataset, _texts
from tests.hub.fakes import REPO_ID, FakeHfApi, build_hub_cache

sys.path.insert(0, str(paths.REPO_ROOT))
import run_all

WIDTH, LAYERS = 32, 5  # the hook is the paper's blocks.4.hook_resid_pre


def _stand_in_suite(root: Path, sae_steps: tuple[int, ...]) -> Path:
    """Every Pythia checkpoint step as a folder: distinct tiny models at the SAE steps, links to one elsewhere."""
    for seed, step in enumerate(sae_steps):
        tiny_model(seed, hidden_size=WIDTH, num_hidden_layers=LAYERS, max_position_embeddings=128).save_pretrained(
            root / paths.step_dir_name(step)
        )
    for step in PYTHIA_CHECKPOINT_STEPS:
        if step not in sae_steps:
            (root / paths.step_dir_name(step)).symlink_to(root / paths.step_dir_name(sae_steps[0]))
    save_tokenizer(root / "tokenizer")
    return root


def _stand_in_run(root: Path) -> RunConfig:
    paper = get_preset("pythia-160m-l4")
    suite = _stand_in_suite(root / "suite", paper.sae_steps)
    return paper.with_overrides(
        {
            "model.source": "local",
            "model.local_path": str(suite),
            "model.n_layers": LAYERS,
            "model.d_model": WIDTH,
            "corpus.source": f"hf:{_parquet_dataset(root / 'data', _texts(n_rows=600, seed=2))}",
            "corpus.heldout_fraction": HELDOUT,
            "cache.analysis_contexts": 8,
            "cache.heldout_tokens": 256,
            "cache.batch_contexts": 8,
            "formation.top_k": 5,  # the analysis at test size (the stage's cost grows with top_k squared)
            "formation.min_active": 3,
            "formation.umap_token_features": 0,
            "formation.umap_concept_features": 0,
        }
    )


def _publish_chain(run: RunConfig, run_dir: Path) -> tuple[Path, str]:
    """A chain of ``run`` (untrained SAEs of the paper's shape: the config is what matters), pushed to a fake Hub."""

    def build(stage):
        links = []
        x = torch.randn(512, WIDTH, generator=torch.Generator().manual_seed(0))
        for position, step in enumerate(run.sae_steps):
            sae = build_sae(WIDTH, run.chain, seed=position, metadata=sae_metadata(run, step))
            folder = stage.folder / paths.step_dir_name(step)
            files = save_sae(sae, folder, feature_sparsity=torch.zeros(sae.cfg.d_sae))
            record = {"position": position, "step": step, "metrics": reconstruction_metrics(sae, x.numpy())}
            stage.write_part_manifest(folder, stage="chain-link", config={"step": step}, files=files, link=record)
            links.append(record)
        return stage.finish(config={"chain": run.to_dict()["chain"]}, preset=run.preset, steps=list(run.sae_steps),
                            links=links)  # fmt: skip

    run_stage(run_dir / paths.CHAIN_DIR, "chain", chain_config_hash(run), build)
    api = FakeHfApi()
    commit = push_chain(run_dir, run, REPO_ID, api=api)
    cache = run_dir.parent / "hf_cache"
    build_hub_cache(cache, REPO_ID, api.uploaded, commit=commit)
    return cache, commit


@pytest.mark.usefixtures("one_thread")
def test_a_hub_chain_on_a_paper_preset_is_analysed_without_training_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _stand_in_run(tmp_path)
    assert run.chain.first_tokens == 300_000_000 and run.cache.mode == "streamed"  # the paper's budgets, streamed
    cache, commit = _publish_chain(run, tmp_path / "trained")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    fresh = tmp_path / "fresh"
    overrides = [f"--set={key}={value!r}" for key, value in _overrides(run).items()]
    argv = ["--preset", "pythia-160m-l4", *overrides, "--run-dir", str(fresh), "--quiet", "--device", "cpu"]
    code = run_all.main([*argv, "--chain-from-hub", REPO_ID, "--chain-revision", commit, "--only", "cache"])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    assert f"links installed from {REPO_ID}@{commit}" in out.out
    corpus = store.read_manifest(fresh / paths.CORPUS_DIR)
    assert corpus["n_train_tokens"] == 0 and len(np.load(fresh / paths.CORPUS_DIR / "train_tokens.npy")) == 0
    assert store.read_manifest(fresh / paths.CACHE_DIR)["wrapped"]["train"] is None
    # the analysis stages run on the installed chain, computing activations on the fly
    formation = analyse_formation(run, fresh, progress=False)
    assert formation["filter_counts"]["live"] > 0
    analyse_drift(run, fresh, progress=False)
    assert list(load_drift(fresh, run).steps) == list(run.sae_steps)


def _overrides(run: RunConfig) -> dict[str, object]:
    return {
        "model.source": run.model.source,
        "model.local_path": run.model.local_path,
        "model.n_layers": LAYERS,
        "model.d_model": WIDTH,
        "corpus.source": run.corpus.source,
        "corpus.heldout_fraction": HELDOUT,
        "cache.analysis_contexts": 8,
        "cache.heldout_tokens": 256,
        "cache.batch_contexts": 8,
        "formation.top_k": 5,
        "formation.min_active": 3,
        "formation.umap_token_features": 0,
        "formation.umap_concept_features": 0,
    }
