"""Checkpoint sources and the unprocessed GPT-NeoX -> transformer_lens conversion (offline, tiny models)."""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from pathlib import Path

import huggingface_hub
import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, PreTrainedTokenizerFast

from saetrack.config import ModelConfig
from saetrack.data.checkpoints import HubSuite, LocalSuite, open_source
from saetrack.data.hf_convert import hooked_config_from_hf, hooked_from_hf
from saetrack.data.integrity import (
    DuplicateCheckpointWarning,
    checkpoint_weights_sha256,
    duplicate_checkpoints,
    state_dict_sha256,
    warn_on_duplicates,
)
from saetrack.store import file_sha256

VOCAB = 64
ATOL = 1e-4
REPO_ID = "TestOrg/tiny-neox"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach the Hub: huggingface_hub reads ``constants.HF_HUB_OFFLINE`` at call time."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------
# Builders
# ----------------------------------------------------------------------------------------------


def tiny_config(**overrides: object) -> GPTNeoXConfig:
    """A 2-layer GPT-NeoX config small enough to build in milliseconds."""
    values: dict[str, object] = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        rotary_pct=0.5,
        rotary_emb_base=10_000,
        max_position_embeddings=64,
        use_parallel_residual=True,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        tie_word_embeddings=False,
    )
    values.update(overrides)
    return GPTNeoXConfig(**values)


def tiny_model(seed: int, **overrides: object) -> GPTNeoXForCausalLM:
    """A tiny GPT-NeoX whose every parameter (biases and LayerNorms included) is random and O(1)."""
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(tiny_config(**overrides)).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if "norm" in name and name.endswith("weight"):
                param.copy_(1.0 + 0.2 * noise)
            elif param.ndim == 2:
                param.copy_(noise / param.shape[1] ** 0.5 * 1.5)
            else:
                param.copy_(0.2 * noise)
    return model


def random_tokens(n_batch: int, n_pos: int, vocab: int = VOCAB, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (n_batch, n_pos), generator=torch.Generator().manual_seed(seed))


def save_tokenizer(folder: Path) -> None:
    """A WordLevel tokenizer over VOCAB made-up words, saved in Hugging Face format (no download)."""
    vocab = {"<|endoftext|>": 0, "<unk>": 1, **{f"w{i}": i for i in range(2, VOCAB)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<unk>"
    )
    tokenizer.save_pretrained(folder)


def build_suite(root: Path, seeds: dict[int, int], tokenizer_in_steps: bool = False) -> dict[int, GPTNeoXForCausalLM]:
    """``root/step{N}/`` checkpoints of ``tiny_model(seeds[N])`` and a tokenizer; returns the models."""
    models_by_step = {}
    for step, seed in seeds.items():
        model = tiny_model(seed)
        model.save_pretrained(root / f"step{step}")
        if tokenizer_in_steps:
            save_tokenizer(root / f"step{step}")
        models_by_step[step] = model
    if not tokenizer_in_steps:
        save_tokenizer(root / "tokenizer")
    return models_by_step


def save_as_bin(model: GPTNeoXForCausalLM, folder: Path) -> None:
    """Save ``model`` as an old-style ``pytorch_model.bin`` checkpoint (transformers 5 only writes safetensors)."""
    model.save_pretrained(folder)
    state = load_file(folder / "model.safetensors")  # the tensor names transformers stores
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()


def build_hub_cache(cache_dir: Path, repo_id: str, revisions: dict[str, Path]) -> dict[str, str]:
    """Lay ``revisions`` (name -> checkpoint folder) out as the Hugging Face hub cache does; return their shas.

    ``models--Org--name/refs/<revision>`` holds the commit sha, ``snapshots/<sha>/<file>`` symlinks into
    ``blobs/`` — exactly what ``snapshot_download`` leaves behind after a real download.
    """
    storage = cache_dir / f"models--{repo_id.replace('/', '--')}"
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "blobs").mkdir(exist_ok=True)
    shas = {}
    for revision, source in revisions.items():
        sha = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
        (storage / "refs" / revision).write_text(sha)
        snapshot = storage / "snapshots" / sha
        snapshot.mkdir(parents=True)
        for file in sorted(source.iterdir()):
            blob = storage / "blobs" / file_sha256(file)
            if not blob.exists():
                shutil.copyfile(file, blob)
            (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
        shas[revision] = sha
    return shas


def hf_logits(model: GPTNeoXForCausalLM, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens).logits


def hooked_logits(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens)


# ----------------------------------------------------------------------------------------------
# 1-3. Unprocessed conversion: logits, residual stream, stop_at_layer
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"use_parallel_residual": False},
        {"hidden_act": "gelu_new"},
        {"hidden_act": "relu"},
        {"hidden_act": "silu"},
        {"tie_word_embeddings": True},
        {"rotary_pct": 1.0, "rotary_emb_base": 500},
        {"rotary_pct": 0.25, "num_attention_heads": 2, "num_hidden_layers": 3},
    ],
    ids=["pythia-like", "sequential", "gelu_new", "relu", "silu", "tied", "full-rotary", "3-layer"],
)
def test_hooked_logits_equal_hf_tiny(overrides: dict[str, object]) -> None:
    hf = tiny_model(0, **overrides)
    hooked = hooked_from_hf(hf)
    tokens = random_tokens(3, 24)
    expected = hf_logits(hf, tokens)
    diff = (hooked_logits(hooked, tokens) - expected).abs().max().item()
    assert expected.std() > 0.5  # the comparison is not between near-zero numbers
    assert diff < ATOL


def test_hooked_logits_equal_hf_pythia_160m_config() -> None:
    config = GPTNeoXConfig(
        vocab_size=50304,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        rotary_pct=0.25,
        rotary_emb_base=10000,
        max_position_embeddings=2048,
        use_parallel_residual=True,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        tie_word_embeddings=False,
    )
    cfg = hooked_config_from_hf(config)
    assert (cfg.d_head, cfg.rotary_dim, cfg.n_ctx, cfg.d_vocab, cfg.rotary_base) == (64, 16, 2048, 50304, 10000)
    torch.manual_seed(0)
    hf = GPTNeoXForCausalLM(config).eval()
    hooked = hooked_from_hf(hf)
    tokens = random_tokens(1, 6, vocab=50304)
    diff = (hooked_logits(hooked, tokens) - hf_logits(hf, tokens)).abs().max().item()
    assert diff < ATOL


@pytest.mark.parametrize("parallel", [True, False])
def test_resid_pre_equals_hf_hidden_states(parallel: bool) -> None:
    hf = tiny_model(1, num_hidden_layers=3, use_parallel_residual=parallel)
    hooked = hooked_from_hf(hf)
    tokens = random_tokens(2, 16, seed=1)
    with torch.no_grad():
        hidden = hf(tokens, output_hidden_states=True).hidden_states
        _, cache = hooked.run_with_cache(tokens)
    assert len(hidden) == 4
    for layer in range(3):
        diff = (cache[f"blocks.{layer}.hook_resid_pre"] - hidden[layer]).abs().max().item()
        assert diff < ATOL, f"layer {layer}: {diff}"
    # transformers' last hidden state is the final residual stream after the final LayerNorm.
    with torch.no_grad():
        final = hooked.ln_final(cache["blocks.2.hook_resid_post"])
    assert (final - hidden[3]).abs().max().item() < ATOL


def test_stop_at_layer_gives_same_resid_pre_as_full_pass() -> None:
    hooked = hooked_from_hf(tiny_model(2, num_hidden_layers=3))
    tokens = random_tokens(2, 16, seed=2)
    with torch.no_grad():
        _, full = hooked.run_with_cache(tokens)
        for layer in range(3):
            name = f"blocks.{layer}.hook_resid_pre"
            # forward(stop_at_layer=L) runs blocks 0..L-1 and returns the residual entering block L.
            early = hooked(tokens, stop_at_layer=layer)
            _, partial = hooked.run_with_cache(tokens, stop_at_layer=layer + 1, names_filter=name)
            assert torch.allclose(early, full[name], atol=1e-6, rtol=0)
            assert torch.allclose(partial[name], full[name], atol=1e-6, rtol=0)


def test_hooked_model_is_unprocessed() -> None:
    hf = tiny_model(3)
    hooked = hooked_from_hf(hf)
    assert hooked.cfg.normalization_type == "LN"  # LayerNorm weights not folded away
    layer = hf.gpt_neox.layers[0]
    assert torch.equal(hooked.blocks[0].ln1.w, layer.input_layernorm.weight)
    assert torch.equal(hooked.unembed.W_U, hf.lm_head.weight.T)  # not centred
    assert torch.equal(hooked.blocks[0].mlp.b_out, layer.mlp.dense_4h_to_h.bias)
    qkv_bias = layer.attention.query_key_value.bias.view(4, 3, 8)  # (head, qkv, d_head)
    assert torch.equal(hooked.blocks[0].attn.b_V, qkv_bias[:, 2])  # value biases not folded into b_O
    assert not hooked.training


def test_hooked_config_follows_hf_config() -> None:
    config = tiny_config(rotary_pct=0.25, rotary_emb_base=500, use_parallel_residual=False, layer_norm_eps=1e-6)
    cfg = hooked_config_from_hf(config, dtype=torch.float64)
    assert cfg.rotary_dim == 2 and cfg.rotary_base == 500 and cfg.eps == 1e-6
    assert cfg.parallel_attn_mlp is False and cfg.rotary_adjacent_pairs is False
    assert cfg.positional_embedding_type == "rotary" and cfg.dtype == torch.float64
    hooked = hooked_from_hf(tiny_model(4), dtype=torch.float64)
    assert hooked.W_E.dtype == torch.float64


@pytest.mark.parametrize(
    ("config", "error", "match"),
    [
        (tiny_config(rope_scaling={"rope_type": "linear", "factor": 2.0}), NotImplementedError, "linear"),
        (tiny_config(attention_bias=False), NotImplementedError, "attention_bias"),
        (tiny_config(hidden_act="quick_gelu"), NotImplementedError, "quick_gelu"),
        (tiny_config(rotary_pct=0.1), NotImplementedError, "rotary_dim = 0"),
        (LlamaConfig(), TypeError, "llama"),
    ],
    ids=["rope-scaling", "no-attention-bias", "activation", "rotary-dim", "not-neox"],
)
def test_hooked_config_rejects_what_it_cannot_reproduce(config: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        hooked_config_from_hf(config)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------
# Weight hashes and duplicates
# ----------------------------------------------------------------------------------------------


def test_weights_hash_ignores_format_and_sharding(tmp_path: Path) -> None:
    model = tiny_model(5)
    model.save_pretrained(tmp_path / "safetensors")
    save_as_bin(model, tmp_path / "bin")
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    # transformers 5 stores GPT-NeoX's lm_head under Pythia's historical name ``embed_out``.
    stored_names = {"lm_head.weight": "embed_out.weight"}
    expected = state_dict_sha256((stored_names.get(name, name), t) for name, t in model.state_dict().items())
    for kind in ("safetensors", "bin", "sharded"):
        assert checkpoint_weights_sha256(tmp_path / kind) == expected, kind
    changed = {name: t.clone() for name, t in model.state_dict().items()}
    changed["gpt_neox.final_layer_norm.bias"][0] += 1e-3
    assert state_dict_sha256(changed.items()) != expected
    renamed = {f"x.{name}": t for name, t in model.state_dict().items()}
    assert state_dict_sha256(renamed.items()) != expected
    as_half = {name: t.half() for name, t in model.state_dict().items()}
    assert state_dict_sha256(as_half.items()) != expected


def test_duplicate_checkpoints_groups_equal_hashes() -> None:
    hashes = {0: "a", 1: "b", 2: "a", 4: "c", 8: "b", 16: "a", 32: "d"}
    assert duplicate_checkpoints(hashes) == [[0, 2, 16], [1, 8]]
    assert duplicate_checkpoints({0: "a", 1: "b"}) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_on_duplicates({0: "a", 1: "b"})  # distinct: no warning


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
