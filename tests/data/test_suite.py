"""The nano-Pythia suite on the smoke preset: schedule, loadable checkpoints, learning, bit-exact resumption."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from saetrack import store
from saetrack.config import RunConfig
from saetrack.data.corpus import load_corpus, prepare_corpus
from saetrack.data.nanolm import eval_contexts, evaluate_loss
from saetrack.data.suite import RESUME_FILE, WEIGHTS_FILE, microbatch_backward, train_suite
from tests.sigkill import assert_resumes_after_sigkill


@pytest.fixture(scope="module")
def corpus_dir(smoke: RunConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("suite_corpus")
    prepare_corpus(smoke, run_dir)
    return run_dir / "corpus"


def _run_dir_with_corpus(corpus_dir: Path, folder: Path) -> Path:
    shutil.copytree(corpus_dir, folder / "corpus")
    return folder


@pytest.fixture(scope="module")
def trained(smoke: RunConfig, corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run_dir = _run_dir_with_corpus(corpus_dir, tmp_path_factory.mktemp("suite_straight"))
    return run_dir, train_suite(smoke, run_dir, progress=False, threads=1)


def _weight_hashes(run_dir: Path, steps: tuple[int, ...]) -> dict[int, str]:
    return {s: store.file_sha256(run_dir / "model" / f"step{s}" / WEIGHTS_FILE) for s in steps}


def test_saves_exactly_the_configured_steps(smoke: RunConfig, trained: tuple[Path, dict]) -> None:
    run_dir, manifest = trained
    steps = smoke.suite.checkpoint_steps
    saved = sorted(int(p.name[4:]) for p in (run_dir / "model").glob("step*"))
    assert saved == list(steps) == manifest["checkpoint_steps"]
    assert [r["step"] for r in manifest["checkpoints"]] == list(steps)
    assert not (run_dir / "model" / RESUME_FILE).exists()
    assert (run_dir / "model" / "tokenizer" / "tokenizer.json").exists()
    assert manifest["config_hash"] == smoke.section_hash("corpus", "suite")
    assert manifest["tokens_per_s"] > 0 and manifest["torch_threads"] >= 1
    assert store.manifest_is_current(run_dir / "model", manifest["config_hash"], verify_files=True)
    assert len(manifest["train_loss_history"]) == smoke.suite.total_steps


def test_checkpoints_load_with_auto_model(smoke: RunConfig, trained: tuple[Path, dict]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, manifest = trained
    last = manifest["checkpoints"][-1]
    model = AutoModelForCausalLM.from_pretrained(run_dir / "model" / f"step{last['step']}")
    config = model.config
    assert config.model_type == "gpt_neox" and config.use_parallel_residual and not config.tie_word_embeddings
    assert config.rope_parameters["partial_rotary_factor"] == smoke.suite.rotary_pct
    assert (config.num_hidden_layers, config.hidden_size) == (smoke.suite.n_layers, smoke.suite.d_model)
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "model" / "tokenizer")
    assert config.vocab_size == len(tokenizer)
    _, _, heldout = load_corpus(run_dir)
    tokens = eval_contexts(heldout, smoke.suite)
    loss = evaluate_loss(model, tokens, batch_size=16)
    assert loss == pytest.approx(last["heldout_loss"], abs=1e-4)


def test_heldout_loss_decreases(trained: tuple[Path, dict]) -> None:
    _, manifest = trained
    first, last = manifest["checkpoints"][0], manifest["checkpoints"][-1]
    assert first["heldout_loss"] == pytest.approx(math.log(512), abs=0.3)  # initialisation: near uniform
    assert last["heldout_loss"] < first["heldout_loss"] - 0.5
    assert last["train_loss"] < first["train_loss"] - 0.5
    assert manifest["final_heldout_loss"] == last["heldout_loss"]


def test_current_suite_is_skipped(smoke: RunConfig, trained: tuple[Path, dict]) -> None:
    run_dir, manifest = trained
    assert train_suite(smoke, run_dir, progress=False, threads=1)["finished_at"] == manifest["finished_at"]


class _Interrupt(RuntimeError):
    pass


def test_interrupted_then_resumed_equals_uninterrupted(
    smoke: RunConfig, corpus_dir: Path, trained: tuple[Path, dict], tmp_path: Path
) -> None:
    straight_dir, straight = trained
    run_dir = _run_dir_with_corpus(corpus_dir, tmp_path)

    def crash(step: int, record: dict[str, Any]) -> None:
        if step == 8:
            raise _Interrupt(f"killed after step {step}")

    with pytest.raises(_Interrupt):
        train_suite(smoke, run_dir, progress=False, threads=1, on_checkpoint=crash)
    assert (run_dir / "model" / RESUME_FILE).exists()
    assert store.read_manifest(run_dir / "model") is None
    assert not (run_dir / "model" / "step16").exists()

    resumed_steps: list[int] = []
    resumed = train_suite(smoke, run_dir, progress=False, threads=1, on_checkpoint=lambda s, r: resumed_steps.append(s))
    assert resumed_steps == [s for s in smoke.suite.checkpoint_steps if s > 8]
    assert resumed["steps_this_session"] == smoke.suite.total_steps - 8
    steps = smoke.suite.checkpoint_steps
    assert _weight_hashes(run_dir, steps) == _weight_hashes(straight_dir, steps)
    assert [r["sha256"] for r in resumed["checkpoints"]] == [r["sha256"] for r in straight["checkpoints"]]
    assert resumed["train_loss_history"] == straight["train_loss_history"]


def test_suite_needs_a_corpus(smoke: RunConfig, tmp_path: Path) -> None:
    with pytest.raises(store.StaleArtifactError, match="prepare_corpus"):
        train_suite(smoke, tmp_path, progress=False)


@pytest.mark.slow
def test_sigkill_during_suite_training_then_resume_gives_identical_hashes(
    sigkill_reference: dict[str, object], tmp_path: Path
) -> None:
    assert_resumes_after_sigkill(tmp_path, "suite", 8, sigkill_reference)


def _toy_loss(weight: torch.Tensor) -> object:
    """A micro-batch loss on ``weight``'s device: ``mean((part @ weight)^2)``."""
    return lambda part: (part @ weight).pow(2).mean()


def test_microbatch_loss_stays_on_the_losses_device() -> None:
    # on the meta device (a stand-in for CUDA) the old accumulator, a CPU tensor, could not take the loss in place
    weight = torch.ones(3, 2, device="meta", requires_grad=True)
    loss = microbatch_backward(torch.ones(8, 3, device="meta"), 4, _toy_loss(weight))
    assert loss.device.type == "meta" and loss.shape == () and not loss.requires_grad
    assert weight.grad is not None and weight.grad.device.type == "meta"
    stale = torch.zeros(())  # the old accumulator: a CPU zero taking the loss in place stayed on the CPU
    stale += loss
    assert stale.device.type == "cpu"


def test_microbatch_loss_and_grads_equal_the_old_cpu_accumulation() -> None:
    gen = torch.Generator().manual_seed(0)
    batch, init = torch.randn(12, 5, generator=gen), torch.randn(5, 3, generator=gen)
    weight = init.clone().requires_grad_(True)
    loss = microbatch_backward(batch, 3, _toy_loss(weight))
    reference_weight = init.clone().requires_grad_(True)
    reference = torch.zeros(())  # the old loop of SuiteTrainer.train_step, kept as the reference
    for part in batch.chunk(3):
        part_loss = _toy_loss(reference_weight)(part) / 3
        part_loss.backward()
        reference += part_loss.detach()
    assert torch.equal(loss, reference) and torch.equal(weight.grad, reference_weight.grad)
