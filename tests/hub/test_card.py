"""The model card written beside a pushed chain."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from saetrack import paths, store
from saetrack.config import RunConfig, get_preset
from saetrack.hub.card import model_card, sae_lens_version
from saetrack.hub.layout import CARD_FILE
from tests.hub.fakes import REPO_ID

pytestmark = pytest.mark.usefixtures("one_thread")


def test_model_card_of_the_smoke_chain(run: RunConfig, chain_run_dir: Path, staged: Path) -> None:
    card = (staged / CARD_FILE).read_text()
    assert card.startswith("---\nlibrary_name: saelens\ntags:\n")
    front = card.split("---")[1]
    assert "- sae-track" in front and "- sparse-autoencoder" in front
    assert run.cache.hook_name in card and "preset `smoke`" in card and "locally trained nano suite" in card
    manifest = store.read_manifest(chain_run_dir / paths.CHAIN_DIR)
    header = "| link | step | explained variance | L0 | dead % | dense % | CE recovered |"
    table = card.split(header)[1].split("\n\n")[0].strip().splitlines()[1:]  # rows after the alignment line
    assert len(table) == len(run.sae_steps) == len(manifest["links"])
    for row, link in zip(table, manifest["links"], strict=True):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert int(cells[1]) == link["step"]
        assert cells[2] == f"{link['metrics']['explained_variance']:.3f}"
        assert cells[3] == f"{link['metrics']['l0']:.1f}"
    assert f'SAE.from_pretrained("{REPO_ID}", "step{run.sae_steps[0]}")' in card
    assert f'download_chain("{REPO_ID}", revision)' in card and "install_chain" in card
    assert f"{run.chain.first_tokens:,} tokens" in card and f"{run.chain.link_tokens:,} tokens" in card
    assert "`l1_coefficient`" in card and "`expansion_factor`" in card


def test_model_card_of_a_hub_model_lists_resolved_commits() -> None:
    run = get_preset("pythia-160m-l4")
    steps = run.sae_steps[:3]
    manifest = {
        "config_hash": "abc",
        "steps": list(steps),
        "links": [
            {
                "position": i,
                "step": s,
                "metrics": {
                    "explained_variance": 0.9,
                    "l0": 30.0,
                    "dead_fraction": 0.01,
                    "dense_fraction": 0.0,
                    "ce_recovered": float("nan"),
                },
            }
            for i, s in enumerate(steps)
        ],
    }
    commits = {str(s): f"{i:040x}" for i, s in enumerate(steps)}
    card = model_card(
        run, manifest, repo_id="me/pythia-chain", cache_manifest={"config": {"model": {"resolved_commits": commits}}}
    )
    assert "base_model: EleutherAI/pythia-160m-deduped" in card
    assert "`step{step}`" in card
    for step in steps:
        assert f"| {step} | `step{step}` | `{commits[str(step)]}` |" in card
    assert card.count("| n/a |") == len(steps)  # NaN CE recovered
    assert "| 1.0 | 0.0 |" in card  # dead %, dense %
    assert 'SAE.from_pretrained("me/pythia-chain", "step0")' in card
    assert "not recorded" in model_card(run, manifest)


def test_model_card_of_a_local_checkpoint_folder_and_the_sae_config() -> None:
    run = get_preset("smoke").with_overrides({"model.source": "local", "model.local_path": "/data/ckpts"})
    manifest = {"config_hash": "h", "steps": [0, 8], "links": []}
    card = model_card(run, manifest, sae_cfg={"architecture": "standard", "d_in": 32, "d_sae": 128})
    assert "- local checkpoint folder `/data/ckpts` (revisions `step{step}`)" in card
    assert "- checkpoint steps with an SAE: 0, 1, 2, 4, 8, 16, 32, 48" in card  # the run's schedule
    assert "SAELens `standard` SAE, d_in 32, d_sae 128." in card
    assert "base_model:" not in card and "<owner>/<name>" in card  # no repo named: a placeholder
    assert "| `l1_coefficient` | `0.001` |" in card and "first link (random init, step 0)" in card
    assert sae_lens_version() == metadata.version("sae-lens")


def test_model_card_describes_a_crosscoder_pushed_beside_the_chain() -> None:
    run = get_preset("pythia-160m-l6")
    manifest = {"config_hash": "h", "steps": [0, 1000], "links": []}
    entry = {
        "folder": "crosscoder",
        "config_hash": "cc1",
        "snapshot_steps": [0, 512, 143000],
        "n_snapshots": 3,
        "d_model": 768,
        "d_sae": 49152,
        "hook_name": "blocks.6.hook_resid_pre",
    }
    card = model_card(run, manifest, repo_id="me/pythia-l6", crosscoder=entry)
    section = card.split("## Cross-snapshot crosscoder")[1]
    assert "- snapshots: 3 checkpoint steps, 0, 512, 143000" in section
    assert "- d_model 768, d_sae 49152 features, hook `blocks.6.hook_resid_pre`; config hash `cc1`" in section
    assert 'load_hub_crosscoder("me/pythia-l6", revision, "crosscoder-model")' in section
    assert "saetrack.crosscoder.io.load_crosscoder(folder)" in section
    assert "Cross-snapshot crosscoder" not in model_card(run, manifest)
