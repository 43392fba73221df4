"""The unprocessed HF -> transformer_lens conversion (GPT-NeoX, GPT-2, Llama, Mistral, Qwen2): logits, every hook,
stop_at_layer, config checks."""

from __future__ import annotations

import pytest
import torch
from transformers import GPTJConfig, GPTNeoXConfig, GPTNeoXForCausalLM, Qwen2Config

from saetrack.config.data import CACHE_HOOKS
from saetrack.data.hf_convert import SUPPORTED_MODEL_TYPES, hooked_config_from_hf, hooked_from_hf
from tests.data.archs import N_LAYERS, arch_config, arch_model, hf_hook_values
from tests.data.neox import ATOL, hf_logits, hooked_logits, random_tokens, tiny_config, tiny_model

pytestmark = pytest.mark.usefixtures("hub_offline", "one_thread")


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
        (GPTJConfig(), NotImplementedError, "'gptj'.*supported model types: gpt_neox, gpt2, llama, mistral, qwen2"),
        (arch_config("llama", attention_bias=True), NotImplementedError, "attention_bias"),
        (arch_config("llama", mlp_bias=True), NotImplementedError, "mlp_bias"),
        (
            arch_config(
                "llama",
                rope_scaling={
                    "rope_type": "llama3",
                    "factor": 8.0,
                    "original_max_position_embeddings": 8,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                },
            ),
            NotImplementedError,
            "llama3",
        ),
        (arch_config("llama", hidden_act="gelu_10"), NotImplementedError, "gelu_10"),
        (Qwen2Config(use_sliding_window=True, sliding_window=8, max_window_layers=0), NotImplementedError, "sliding"),
    ],
    ids=[
        "rope-scaling",
        "no-attention-bias",
        "activation",
        "rotary-dim",
        "unsupported-type",
        "llama-attention-bias",
        "llama-mlp-bias",
        "llama3-rope",
        "llama-activation",
        "qwen2-sliding-window",
    ],
)
def test_hooked_config_rejects_what_it_cannot_reproduce(config: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        hooked_config_from_hf(config)  # type: ignore[arg-type]


ARCHS = ("gpt2", "llama", "llama-gqa", "mistral", "qwen2")


def test_supported_model_types() -> None:
    assert SUPPORTED_MODEL_TYPES == ("gpt_neox", "gpt2", "llama", "mistral", "qwen2")


@pytest.mark.parametrize("arch", ARCHS)
def test_hooked_logits_equal_hf_other_architectures(arch: str) -> None:
    hf = arch_model(arch, 0)
    hooked = hooked_from_hf(hf)
    tokens = random_tokens(2, 20)  # longer than Mistral's sliding window of 5
    expected = hf_logits(hf, tokens)
    assert expected.std() > 0.5
    assert (hooked_logits(hooked, tokens) - expected).abs().max().item() < ATOL


@pytest.mark.parametrize("arch", ("gpt_neox", "gpt_neox-sequential", *ARCHS))
def test_every_hook_equals_the_hf_models_own_activation(arch: str) -> None:
    """resid_pre/resid_post = hidden_states, attn_out/mlp_out = the HF attention/MLP module outputs, resid_mid =
    resid_pre + attn_out; every block, every hook the converted model has."""
    sequential = arch == "gpt_neox-sequential"
    hf = arch_model("gpt_neox", 5, use_parallel_residual=False) if sequential else arch_model(arch, 5)
    hooked = hooked_from_hf(hf)
    tokens = random_tokens(2, 16, seed=5)
    expected = hf_hook_values(hf, tokens)
    with torch.no_grad():
        _, cache = hooked.run_with_cache(tokens)
    compared = 0
    for name, value in expected.items():
        if name not in hooked.hook_dict:  # resid_mid of a parallel-attention model
            assert arch == "gpt_neox" and name.endswith("hook_resid_mid")
            continue
        assert value.abs().max() > 0.1
        diff = (cache[name] - value).abs().max().item()
        assert diff < ATOL, f"{name}: {diff}"
        compared += 1
    n_hooks = len(CACHE_HOOKS) * N_LAYERS - 1  # resid_post of the last block is not a hidden state
    assert compared == (n_hooks - N_LAYERS if arch == "gpt_neox" else n_hooks)


@pytest.mark.parametrize("arch", ARCHS)
def test_other_architectures_are_unprocessed(arch: str) -> None:
    hf = arch_model(arch, 6)
    hooked = hooked_from_hf(hf)
    if arch == "gpt2":
        assert hooked.cfg.normalization_type == "LN" and hooked.cfg.positional_embedding_type == "standard"
        assert torch.equal(hooked.blocks[0].ln1.w, hf.transformer.h[0].ln_1.weight)
        assert torch.equal(hooked.blocks[1].mlp.b_out, hf.transformer.h[1].mlp.c_proj.bias)
        assert torch.equal(hooked.unembed.W_U, hf.lm_head.weight.T)  # not centred
        return
    assert hooked.cfg.normalization_type == "RMS" and hooked.cfg.gated_mlp and hooked.cfg.final_rms
    layer = hf.model.layers[0]
    assert torch.equal(hooked.blocks[0].ln1.w, layer.input_layernorm.weight)  # RMSNorm weights not folded away
    assert torch.equal(hooked.ln_final.w, hf.model.norm.weight)
    assert torch.equal(hooked.unembed.W_U, hf.lm_head.weight.T)
    assert torch.equal(hooked.blocks[0].mlp.W_gate, layer.mlp.gate_proj.weight.T)
    assert hooked.cfg.rotary_adjacent_pairs is False and hooked.cfg.rotary_dim == hooked.cfg.d_head == 16


def test_llama_like_config_fields() -> None:
    cfg = hooked_config_from_hf(arch_config("llama", head_dim=8, rms_norm_eps=1e-6, rope_theta=500.0))
    assert (cfg.d_head, cfg.rotary_dim, cfg.rotary_base, cfg.eps, cfg.n_key_value_heads) == (8, 8, 500.0, 1e-6, None)
    assert cfg.original_architecture == "LlamaForCausalLM"
    gqa = hooked_config_from_hf(arch_config("llama-gqa"))
    assert gqa.n_key_value_heads == 2
    mistral = hooked_config_from_hf(arch_config("mistral"))
    assert mistral.use_local_attn and mistral.window_size == 5 and mistral.attn_types == ["local"] * N_LAYERS
    assert hooked_config_from_hf(arch_config("qwen2")).n_key_value_heads == 2
    gpt2 = hooked_config_from_hf(arch_config("gpt2", n_inner=80, activation_function="relu"))
    assert (gpt2.d_mlp, gpt2.act_fn, gpt2.n_ctx, gpt2.d_head) == (80, "relu", 64, 16)
    assert hooked_config_from_hf(arch_config("gpt2")).d_mlp == 4 * 64
