"""Checkpoint sources: local step folders, Hub revisions through the hub-cache layout (offline), open_source."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
import pytest
from safetensors.torch import load_file, save_file
from transformers import GPT2LMHeadModel, GPTJConfig, GPTJForCausalLM, GPTNeoXForCausalLM, LlamaForCausalLM

from saetrack.config import ModelConfig
from saetrack.data.checkpoints import HubSuite, LocalSuite, checkpoint_architecture, open_source
from saetrack.data.integrity import DuplicateCheckpointWarning
from tests.data.archs import build_arch_suite
from tests.data.neox import (
    ATOL,
    REPO_ID,
    build_hub_cache,
    build_suite,
    hf_logits,
    hooked_logits,
    random_tokens,
    save_as_bin,
    save_tokenizer,
    tiny_model,
)

pytestmark = pytest.mark.usefixtures("hub_offline", "one_thread")


def test_duplicate_steps_warn_naming_both(tmp_path: Path) -> None:
    build_suite(tmp_path, {0: 10, 1: 11, 2: 10})  # steps 0 and 2 have identical weights
    suite = LocalSuite(tmp_path)
    with pytest.warns(DuplicateCheckpointWarning, match=r"steps \[0, 2\].*Pythia") as record:
        hashes = suite.weights_hashes()
    assert len(record) == 1
    assert hashes[0] == hashes[2] != hashes[1]


# ----------------------------------------------------------------------------------------------
# LocalSuite
# ----------------------------------------------------------------------------------------------


def test_local_suite_round_trip(tmp_path: Path) -> None:
    originals = build_suite(tmp_path, {0: 20, 10: 21, 100: 22})
    (tmp_path / "step5").mkdir()  # no config.json: not a checkpoint
    suite = LocalSuite(tmp_path)
    assert suite.steps == (0, 10, 100)
    tokens = random_tokens(2, 12, seed=3)
    hashes = {}
    for step, original in originals.items():
        expected = hf_logits(original, tokens)
        hf = suite.load_hf(step)
        assert isinstance(hf, GPTNeoXForCausalLM) and not hf.training
        assert (hf_logits(hf, tokens) - expected).abs().max().item() < 1e-6
        hooked = suite.load_hooked(step)
        assert (hooked_logits(hooked, tokens) - expected).abs().max().item() < ATOL
        hashes[step] = suite.weights_hash(step)
        assert suite.weights_hash(step) == hashes[step]
    assert len(set(hashes.values())) == 3
    assert LocalSuite(tmp_path).weights_hashes() == hashes  # stable across instances
    described = suite.describe()
    assert described["kind"] == "local" and described["steps"] == [0, 10, 100]
    assert described["weights_sha256"] == {str(k): v for k, v in hashes.items()}
    assert suite.tokenizer().convert_tokens_to_ids("w7") == 7
    assert hooked.tokenizer is not None
    assert hooked.to_tokens("w3 w4", prepend_bos=False).tolist() == [[3, 4]]


def test_local_suite_missing_steps_raise(tmp_path: Path) -> None:
    build_suite(tmp_path, {0: 30, 10: 31})
    suite = LocalSuite(tmp_path, steps=[10])
    assert suite.steps == (10,)
    with pytest.raises(ValueError, match=r"step 0 is not a checkpoint.*\[10\]"):
        suite.load_hf(0)
    with pytest.raises(ValueError, match=r"step 7 .*available steps: \[0, 10\]"):
        LocalSuite(tmp_path).weights_hash(7)
    with pytest.raises(ValueError, match=r"steps \[5\] have no checkpoint folder.*\[0, 10\]"):
        LocalSuite(tmp_path, steps=[0, 5])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LocalSuite(tmp_path / "nowhere")


def test_local_suite_refuses_checkpoint_with_missing_weights(tmp_path: Path) -> None:
    build_suite(tmp_path, {0: 35})
    weights = tmp_path / "step0" / "model.safetensors"
    state = load_file(weights)
    del state["gpt_neox.final_layer_norm.bias"]
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(RuntimeError, match=r"lacks weights.*final_layer_norm\.bias"):
        LocalSuite(tmp_path).load_hf(0)


@pytest.mark.parametrize(
    ("arch", "model_class", "model_type"),
    [
        ("gpt2", GPT2LMHeadModel, "gpt2"),
        ("llama", LlamaForCausalLM, "llama"),
        ("llama-gqa", LlamaForCausalLM, "llama"),
        ("mistral", None, "mistral"),
        ("qwen2", None, "qwen2"),
        ("gpt_neox", GPTNeoXForCausalLM, "gpt_neox"),
    ],
)
def test_local_suite_loads_a_users_own_architecture(
    tmp_path: Path, arch: str, model_class: type | None, model_type: str
) -> None:
    originals = build_arch_suite(tmp_path, arch, {0: 40, 5: 41})
    suite = LocalSuite(tmp_path)
    tokens = random_tokens(2, 12, seed=4)
    for step, original in originals.items():
        assert checkpoint_architecture(suite.checkpoint_dir(step)) == model_type
        expected = hf_logits(original, tokens)
        hf = suite.load_hf(step)
        assert type(hf) is type(original) and (model_class is None or isinstance(hf, model_class))
        assert not hf.training and (hf_logits(hf, tokens) - expected).abs().max().item() < 1e-6
        hooked = suite.load_hooked(step)
        assert (hooked_logits(hooked, tokens) - expected).abs().max().item() < ATOL
    assert suite.weights_hash(0) != suite.weights_hash(5)


def test_local_suite_refuses_an_unsupported_architecture_naming_the_supported_ones(tmp_path: Path) -> None:
    GPTJForCausalLM(GPTJConfig(vocab_size=64, n_embd=32, n_layer=1, n_head=4, n_positions=16)).save_pretrained(
        tmp_path / "step0"
    )
    save_tokenizer(tmp_path / "tokenizer")
    assert checkpoint_architecture(tmp_path / "step0") == "gptj"  # named even when it does not load
    with pytest.raises(NotImplementedError, match="model_type='gptj'; supported model types: gpt_neox, gpt2, llama"):
        LocalSuite(tmp_path).load_hf(0)
    (tmp_path / "step0" / "config.json").write_text('{"model_type": "my_own_lm"}')  # unknown to transformers too
    with pytest.raises(NotImplementedError, match="model_type='my_own_lm'; supported model types: gpt_neox"):
        LocalSuite(tmp_path).load_hooked(0)
    (tmp_path / "step0" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="names no model_type"):
        checkpoint_architecture(tmp_path / "step0")


def test_local_suite_refuses_a_llama_checkpoint_with_missing_weights(tmp_path: Path) -> None:
    build_arch_suite(tmp_path, "llama", {0: 42})
    weights = tmp_path / "step0" / "model.safetensors"
    state = load_file(weights)
    del state["model.layers.1.mlp.gate_proj.weight"]
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(RuntimeError, match=r"lacks weights.*layers\.1\.mlp\.gate_proj"):
        LocalSuite(tmp_path).load_hf(0)


def test_local_suite_tokenizer_in_step_folders(tmp_path: Path) -> None:
    build_suite(tmp_path, {0: 40}, tokenizer_in_steps=True)
    assert LocalSuite(tmp_path).tokenizer().convert_tokens_to_ids("w9") == 9


# ----------------------------------------------------------------------------------------------
# HubSuite against the hub-cache layout, offline
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def hub_setup(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A local suite and the same checkpoints as ``step{N}`` revisions in a hub cache (tokenizer in each)."""
    local = tmp_path / "local"
    build_suite(local, {0: 50, 10: 51, 100: 52}, tokenizer_in_steps=True)
    cache = tmp_path / "hf-cache"
    shas = build_hub_cache(cache, REPO_ID, {f"step{s}": local / f"step{s}" for s in (0, 10, 100)})
    return local, cache, shas


def test_hub_suite_offline_matches_local(hub_setup: tuple[Path, Path, dict[str, str]]) -> None:
    local_root, cache, shas = hub_setup
    hub = HubSuite(REPO_ID, [0, 10, 100], cache_dir=cache, token="hf_not_a_real_token")
    local = LocalSuite(local_root)
    assert hub.checkpoint_dir(10) == cache / "models--TestOrg--tiny-neox" / "snapshots" / shas["step10"]
    tokens = random_tokens(2, 12, seed=4)
    for step in (0, 100):
        diff = (hooked_logits(hub.load_hooked(step), tokens) - hooked_logits(local.load_hooked(step), tokens)).abs()
        assert diff.max().item() == 0.0
        assert hub.weights_hash(step) == local.weights_hash(step)
    described = hub.describe()
    assert described["kind"] == "hub" and described["repo_id"] == REPO_ID
    assert described["resolved_commits"] == {"0": shas["step0"], "10": shas["step10"], "100": shas["step100"]}
    assert described["tokenizer_commit"] == shas["step100"]
    assert hub.resolved_revisions() == {0: shas["step0"], 10: shas["step10"], 100: shas["step100"]}
    assert "hf_not_a_real_token" not in str(described) + repr(hub)


def test_hub_suite_pinned_revisions(hub_setup: tuple[Path, Path, dict[str, str]]) -> None:
    local_root, cache, shas = hub_setup
    # Pin step 10 to the commit of the step0 branch: the pin, not the branch name, decides what is loaded.
    hub = HubSuite(REPO_ID, [0, 10], cache_dir=cache, revisions={10: shas["step0"]})
    assert hub.revision(10) == shas["step0"] and hub.revision(0) == "step0"
    assert hub.weights_hash(10) == LocalSuite(local_root).weights_hash(0)
    assert hub.describe()["pinned"] == {"10": shas["step0"]}
    with pytest.warns(DuplicateCheckpointWarning, match=r"\[0, 10\]"):
        hub.weights_hashes()


def test_hub_suite_bin_only_revision(tmp_path: Path) -> None:
    folder = tmp_path / "bin-step"
    model = tiny_model(60)
    save_as_bin(model, folder)
    save_tokenizer(folder)
    cache = tmp_path / "hf-cache"
    build_hub_cache(cache, REPO_ID, {"step3": folder})
    hub = HubSuite(REPO_ID, [3], cache_dir=cache)
    tokens = random_tokens(1, 8, seed=5)
    assert (hf_logits(hub.load_hf(3), tokens) - hf_logits(model, tokens)).abs().max().item() < 1e-6


def test_hub_suite_errors(hub_setup: tuple[Path, Path, dict[str, str]]) -> None:
    _, cache, shas = hub_setup
    hub = HubSuite(REPO_ID, [0, 10, 20], cache_dir=cache)
    with pytest.raises(ValueError, match=r"step 5 is not a checkpoint.*\[0, 10, 20\]"):
        hub.checkpoint_dir(5)
    with pytest.raises(huggingface_hub.errors.LocalEntryNotFoundError) as caught:
        hub.checkpoint_dir(20)  # no step20 revision in the cache, and offline
    assert "step20" in "\n".join(getattr(caught.value, "__notes__", []))
    with pytest.raises(ValueError, match="40-hex commit"):
        HubSuite(REPO_ID, [0], revisions={0: "main"})
    with pytest.raises(ValueError, match=r"pin steps \[7\]"):
        HubSuite(REPO_ID, [0], revisions={7: shas["step0"]})
    with pytest.raises(ValueError, match="revision_template"):
        HubSuite(REPO_ID, [0], revision_template="main")


# ----------------------------------------------------------------------------------------------
# open_source
# ----------------------------------------------------------------------------------------------


def test_open_source_dispatch(
    tmp_path: Path, hub_setup: tuple[Path, Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    local_root, cache, _ = hub_setup
    monkeypatch.setattr("saetrack.data.checkpoints.REPO_ROOT", tmp_path)
    relative = open_source(ModelConfig(source="local", local_path="local", checkpoint_steps=(0,)), tmp_path)
    assert isinstance(relative, LocalSuite) and relative.root == local_root.resolve()
    run_dir = tmp_path / "run"
    build_suite(run_dir / "model", {0: 70, 4: 71})
    suite = open_source(ModelConfig(source="suite", checkpoint_steps=(0, 4)), run_dir)
    assert isinstance(suite, LocalSuite) and suite.root == (run_dir / "model").resolve() and suite.steps == (0, 4)
    local = open_source(ModelConfig(source="local", local_path=str(local_root), checkpoint_steps=(10, 100)), run_dir)
    assert isinstance(local, LocalSuite) and local.steps == (10, 100)
    hub_config = ModelConfig(source="hub", repo_id=REPO_ID, checkpoint_steps=(0, 10))
    hub = open_source(hub_config, run_dir, cache_dir=cache)
    assert isinstance(hub, HubSuite) and hub.revision(10) == "step10"
    assert hub.weights_hash(10) == local.weights_hash(10)
    with pytest.raises(ValueError, match=r"steps \[8\] have no checkpoint folder.*\[0, 4\]"):
        open_source(ModelConfig(source="suite", checkpoint_steps=(0, 8)), run_dir)


def test_local_suite_reads_the_hf_trainers_checkpoint_folders(tmp_path: Path) -> None:
    build_suite(tmp_path, {0: 0, 5: 1})
    (tmp_path / "step5").rename(tmp_path / "checkpoint-5")
    suite = LocalSuite(tmp_path)
    assert suite.steps == (0, 5) and suite.checkpoint_dir(5) == tmp_path / "checkpoint-5"
    assert suite.checkpoint_dir(0) == tmp_path / "step0"
    assert suite.load_hf(5) is not None


def test_known_hashes_are_remembered_and_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build_suite(tmp_path / "model", {0: 80, 4: 81})
    config = ModelConfig(source="suite", checkpoint_steps=(0, 4))
    first = open_source(config, tmp_path)
    assert first.known_hashes == {}
    hashes = first.weights_hashes()
    assert first.known_hashes == hashes and first.known_hashes is not first.known_hashes  # a copy each time

    def no_reading(folder: Path) -> str:
        raise AssertionError(f"{folder} was hashed again")

    monkeypatch.setattr("saetrack.data.checkpoints.checkpoint_weights_sha256", no_reading)
    again = open_source(config, tmp_path, known_hashes={**hashes, 99: "not a step of this source"})
    assert again.known_hashes == hashes and again.weights_hashes() == hashes
    fresh = open_source(ModelConfig(source="suite", checkpoint_steps=(4,)), tmp_path, known_hashes={0: hashes[0]})
    assert fresh.known_hashes == {}  # step 0 is not one of its checkpoints
    with pytest.raises(AssertionError, match="hashed again"):
        fresh.weights_hash(4)
