"""The checkpoint-density study on the smoke chain: shapes, stride 1 is the chain, the first link is shared, resume."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from saetrack import paths, store
from saetrack.config import RunConfig
from saetrack.config.analysis import drift_hash_fields
from saetrack.data.activations import open_activations
from saetrack.sae.io import load_training_sae
from saetrack.sae.recurrent import recurrent_init
from saetrack.sae.weights import load_decoder
from saetrack.stages.chain import load_chain, read_link_manifests, train_chain
from saetrack.stages.chain.links import link_seed, train_link
from saetrack.stages.drift import density
from saetrack.stages.drift.density_links import dense_chain, stride_dir_name
from saetrack.stages.drift.density_rules import RECOMMEND_MARGIN, recommend_stride, tokens_to_converge

STRIDES = (2, 4)


@pytest.fixture(scope="module")
def study_run(smoke: RunConfig) -> RunConfig:
    """The smoke preset with two strides: 8 checkpoints, so chains over positions (0 2 4 6 7) and (0 4 7); its λ
    calibrated to a target L0 (the study reads the chain's calibrated λ)."""
    return smoke.with_overrides({"drift.density_strides": STRIDES, "chain.target_l0": 8})


@pytest.fixture(scope="module")
def chain_dir(study_run: RunConfig, smoke_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the smoke run with its chain trained (no other stage)."""
    work = tmp_path_factory.mktemp("density_chain")
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR, paths.CACHE_DIR):
        shutil.copytree(smoke_run_dir / folder, work / folder)
    train_chain(study_run, work, progress=False)
    return work


@pytest.fixture(scope="module")
def studied(study_run: RunConfig, chain_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the chain run with the whole study run straight through."""
    work = tmp_path_factory.mktemp("density_study")
    shutil.copytree(chain_dir, work, dirs_exist_ok=True)
    density.analyse_density(study_run, work, progress=False)
    return work


def test_the_study_has_one_chain_per_density_with_the_schedule_positions(study_run: RunConfig, studied: Path) -> None:
    study = density.load_density(studied, study_run)
    steps = study_run.sae_steps
    assert [c["stride"] for c in study["chains"]] == [1, 2, 4]
    assert study["chains"][0]["steps"] == list(steps)
    assert study["chains"][1]["steps"] == [steps[p] for p in (0, 2, 4, 6, 7)]
    assert study["chains"][2]["steps"] == [steps[p] for p in (0, 4, 7)]
    for chain in study["chains"]:
        n = len(chain["steps"])
        assert len(chain["links"]) == n and len(chain["pairs"]) == n - 1 and len(chain["median_cosine_to_final"]) == n
        assert chain["median_cosine_to_final"][-1] == pytest.approx(1.0)  # the final link against itself
        assert all(0 <= p["persistence"] <= 1 and 0 <= p["null"] <= 1 for p in chain["pairs"])
        assert chain["links"][0]["tokens_to_converge"] is None  # the shared first link is not a link of the study
        assert all(x["tokens_to_converge"] <= study_run.chain.link_tokens for x in chain["links"][1:])
        assert set(chain["phases"]) == {"index", "log_step", "step"}
    # 8 checkpoints fit three phases (each >= 2), 5 and 3 do not: said, not hidden
    assert study["chains"][0]["phases"]["index"]["fitted"]
    assert not study["chains"][2]["phases"]["index"]["fitted"] and study["chains"][2]["phases"]["index"]["note"]
    for stride in STRIDES:
        trained = sorted((studied / paths.DENSITY_DIR / stride_dir_name(stride)).iterdir())
        assert len(trained) == len(study["chains"][STRIDES.index(stride) + 1]["steps"]) - 1  # the first is not copied
    numbers = density.summary_numbers(study)
    assert numbers["strides"] == [1, 2, 4] and set(numbers["by_stride"]) == {"1", "2", "4"}
    assert len(numbers["control"]["dense_null_per_pair"]) == len(steps) - 1
    assert numbers["recommendation"]["stride"] in (1, 2, 4)


def test_stride_one_is_the_dense_chain_itself(study_run: RunConfig, studied: Path) -> None:
    study = density.load_density(studied, study_run)
    dense, manifests = study["chains"][0], read_link_manifests(studied)
    assert [x["l0"] for x in dense["links"]] == [manifests[s]["link"]["metrics"]["l0"] for s in study_run.sae_steps]
    assert "agreement" not in dense["links"][1] and study["summary"]["1"]["agreement"] == 1.0
    assert dense_chain(study_run, studied).folders == [load_chain(studied, study_run)[s] for s in study_run.sae_steps]
    assert not (studied / paths.DENSITY_DIR / stride_dir_name(1)).exists()  # never retrained
    # a sparse link shares the dense link's step, rows and seed: at the second checkpoint of stride 2 only the start
    # differs, yet agreement with the dense chain is a real measurement there (not 1 by construction)
    sparse = study["chains"][1]["links"][1]
    assert sparse["step"] == study_run.sae_steps[2] and 0 <= sparse["agreement"] <= 1


def test_the_sparse_chains_first_link_is_the_dense_first_link(study_run: RunConfig, studied: Path) -> None:
    first = load_chain(studied, study_run)[study_run.sae_steps[0]]
    for stride in STRIDES:
        assert not (studied / paths.DENSITY_DIR / stride_dir_name(stride) / first.name).exists()
    # and the second link of stride 4 is exactly a chain link trained from it: recurrent init, link budget, lr, seed,
    # the dense link's rows at that checkpoint
    run, position = study_run, 4
    step = run.sae_steps[position]
    saved = store.read_manifest(studied / paths.DENSITY_DIR / stride_dir_name(4) / paths.step_dir_name(step))
    assert saved is not None and saved["link"]["initialised_from"] == run.sae_steps[0]
    l1, first_l1 = (
        saved["link"]["l1_coefficient"],
        read_link_manifests(studied)[run.sae_steps[0]]["link"]["l1_coefficient"],
    )
    previous = load_training_sae(first, run.chain, l1_coefficient=first_l1)
    sae = recurrent_init(previous, run.chain, l1_coefficient=l1, device="cpu")
    again = train_link(run, sae, open_activations(run, studied), step, n_tokens=run.chain.link_tokens,
                       lr=run.chain.lr_link, warmup=run.chain.warmup_steps_link, seed=link_seed(run, "chain", position),
                       optimizer_state=None, desc="again", progress=False, keep_optimizer_state=False)  # fmt: skip
    folder = studied / paths.DENSITY_DIR / stride_dir_name(4) / paths.step_dir_name(step)
    torch.testing.assert_close(again.sae.W_dec.detach(), load_decoder(folder))


def test_an_interrupted_study_keeps_finished_links_and_resumes_to_the_same_numbers(
    study_run: RunConfig, chain_dir: Path, studied: Path, tmp_path: Path
) -> None:
    work = tmp_path / "run"
    shutil.copytree(chain_dir, work)

    class Killed(Exception):
        pass

    trained: list[tuple[int, int]] = []
    armed = [True]

    def kill(stride: int, step: int) -> None:
        trained.append((stride, step))
        if armed[0] and stride == 2 and step == study_run.sae_steps[4]:
            armed[0] = False
            raise Killed

    with pytest.raises(Killed):
        density.analyse_density(study_run, work, progress=False, after_link=kill)
    assert store.read_manifest(work / paths.DENSITY_DIR) is None  # not finished
    kept = work / paths.DENSITY_DIR / stride_dir_name(2) / paths.step_dir_name(study_run.sae_steps[2])
    before = store.read_manifest(kept)
    # a half-written next link (no manifest) is ignored and retrained, never loaded
    half = work / paths.DENSITY_DIR / stride_dir_name(2) / paths.step_dir_name(study_run.sae_steps[6])
    half.mkdir()
    (half / "sae_weights.safetensors").write_bytes(b"garbage")
    trained.clear()
    study = density.analyse_density(study_run, work, progress=False, after_link=kill)
    steps = study_run.sae_steps
    assert trained == [(2, steps[6]), (2, steps[7]), (4, steps[4]), (4, steps[7])]  # steps[2] and steps[4] kept
    assert store.read_manifest(kept) == before
    reference = density.load_density(studied, study_run)
    assert study is not None and study["summary"] == reference["summary"]
    trained.clear()
    density.analyse_density(study_run, work, progress=False, after_link=kill)  # current: nothing trained
    assert trained == []


def test_the_study_has_its_own_hash_and_never_moves_the_drift_stages(study_run: RunConfig) -> None:
    assert density.output_hashes(study_run) == {paths.DENSITY_DIR: density.density_config_hash(study_run)}
    assert density.output_hashes(study_run.with_overrides({"drift.density_strides": ()})) == {}
    other = study_run.with_overrides({"drift.density_strides": (2, 8)})
    assert density.density_config_hash(other) != density.density_config_hash(study_run)
    assert drift_hash_fields(other.to_dict()["drift"]) == drift_hash_fields(study_run.to_dict()["drift"])
    assert (
        density.analyse_density(study_run.with_overrides({"drift.density_strides": ()}), Path("/nonexistent")) is None
    )


def test_convergence_rule_on_a_known_curve() -> None:
    # loss 1 + 9 exp(-t/1000) over 400 points to 400k tokens: final = mean of the last 40 points = 1.0 (to 1e-100);
    # the running mean over 20 points is within 2% of it once 9 exp(-t/1000) (averaged) < 0.02: t ~ 6.1k + window
    tokens = np.linspace(1000, 400_000, 400)
    loss = 1 + 9 * np.exp(-tokens / 1000)
    found = tokens_to_converge(tokens, loss)
    window = 20
    running = np.convolve(loss, np.ones(window) / window)[: loss.size]
    running[:window] = np.cumsum(loss[:window]) / np.arange(1, window + 1)
    expected = tokens[np.argmax(np.abs(running - loss[-40:].mean()) <= 0.02 * loss[-40:].mean())]
    assert found == expected and 6_000 < found < 30_000
    assert tokens_to_converge(tokens, np.ones(400)) == tokens[0]  # flat: converged from the first point
    assert tokens_to_converge([], []) is None and tokens_to_converge([1.0, 2.0], [1.0, np.nan]) is None


def test_recommendation_rule_on_known_numbers() -> None:
    assert RECOMMEND_MARGIN == 0.05
    assert recommend_stride({1: 0.9, 2: 0.88, 4: 0.86, 8: 0.7})["stride"] == 4
    assert recommend_stride({1: 0.9, 2: 0.8, 4: 0.89})["stride"] == 1  # a denser stride failing stops the search
    out = recommend_stride({1: 0.9, 2: 0.85, 4: float("nan")})
    assert out["stride"] == 2 and out["bar"] == pytest.approx(0.85) and out["passed"] == {1: True, 2: True, 4: False}
    with pytest.raises(ValueError, match="stride 1"):
        recommend_stride({2: 0.5})
