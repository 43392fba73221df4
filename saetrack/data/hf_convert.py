"""A Hugging Face causal LM (GPT-NeoX, GPT-2, Llama, Mistral, Qwen2) as a transformer_lens HookedTransformer,
without weight processing.

:func:`hooked_config_from_hf` builds the ``HookedTransformerConfig`` computing exactly what the Hugging Face config
describes (refusing the variants transformer_lens cannot reproduce), and :func:`hooked_from_hf` loads the weights
through transformer_lens' own converter of that architecture, unprocessed: no LayerNorm folding, no centring, no
value-bias folding, so every hook equals the matching Hugging Face intermediate value.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import torch
import transformers
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights
from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights
from transformer_lens.pretrained.weight_conversions.mistral import convert_mistral_weights
from transformer_lens.pretrained.weight_conversions.neox import convert_neox_weights
from transformer_lens.pretrained.weight_conversions.qwen2 import convert_qwen2_weights

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "hooked_config_from_hf",
    "hooked_from_hf",
]


#: Hugging Face ``hidden_act`` -> transformer_lens ``act_fn`` (same function in both libraries).
_ACT_FN: dict[str, str] = {
    "gelu": "gelu",
    "gelu_new": "gelu_new",
    "gelu_fast": "gelu_fast",
    "gelu_pytorch_tanh": "gelu_pytorch_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}

#: Hugging Face ``model_type`` -> (HF architecture class name, transformer_lens weight converter).
_CONVERTERS: dict[str, tuple[str, Callable[[Any, HookedTransformerConfig], dict[str, torch.Tensor]]]] = {
    "gpt_neox": ("GPTNeoXForCausalLM", convert_neox_weights),
    "gpt2": ("GPT2LMHeadModel", convert_gpt2_weights),
    "llama": ("LlamaForCausalLM", convert_llama_weights),
    "mistral": ("MistralForCausalLM", convert_mistral_weights),
    "qwen2": ("Qwen2ForCausalLM", convert_qwen2_weights),
}

#: The Hugging Face ``model_type`` values that load (GPT-NeoX/Pythia, GPT-2/nanoGPT, Llama/OLMo/SmolLM/TinyLlama
#: layouts, Mistral, Qwen2).
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(_CONVERTERS)


def _model_type(hf_config: Any) -> str:
    """``hf_config.model_type``, or one error naming the supported types."""
    model_type = getattr(hf_config, "model_type", None)
    if model_type not in _CONVERTERS:
        raise NotImplementedError(
            f"model_type = {model_type!r} ({type(hf_config).__name__}) is not supported; "
            f"supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}."
        )
    return str(model_type)


def _act_fn(name: str) -> str:
    if name not in _ACT_FN:
        raise NotImplementedError(f"hidden_act = {name!r} is not supported; allowed: {sorted(_ACT_FN)}.")
    return _ACT_FN[name]


def _rope(hf_config: Any) -> dict[str, Any]:
    """The config's RoPE parameters (transformers 5 ``rope_parameters``), refusing scaled RoPE."""
    rope = dict(getattr(hf_config, "rope_parameters", None) or {})
    rope_type = rope.get("rope_type", "default")
    if rope_type != "default":
        raise NotImplementedError(f"rope_parameters['rope_type'] = {rope_type!r}: only 'default' RoPE is supported.")
    return rope


def _neox_fields(hf_config: Any) -> dict[str, Any]:
    """GPT-NeoX: partial rotary (rotate-half pairs), parallel or sequential attention and MLP, LayerNorm, biases."""
    rope = _rope(hf_config)
    if not getattr(hf_config, "attention_bias", True):
        raise NotImplementedError(
            "attention_bias = False: transformer_lens' GPT-NeoX converter needs attention biases."
        )
    d_head = hf_config.hidden_size // hf_config.num_attention_heads
    partial = float(rope.get("partial_rotary_factor", 1.0))
    rotary_dim = int(d_head * partial)  # transformers truncates the same way (GPTNeoXAttention.rotary_ndims)
    if rotary_dim <= 0 or rotary_dim % 2:
        raise NotImplementedError(
            f"partial_rotary_factor = {partial} gives rotary_dim = {rotary_dim} for d_head = {d_head}; "
            "it must be a positive even number."
        )
    return dict(
        d_model=hf_config.hidden_size,
        d_head=d_head,
        n_heads=hf_config.num_attention_heads,
        d_mlp=hf_config.intermediate_size,
        n_layers=hf_config.num_hidden_layers,
        n_ctx=hf_config.max_position_embeddings,
        eps=hf_config.layer_norm_eps,
        act_fn=_act_fn(hf_config.hidden_act),
        normalization_type="LN",
        parallel_attn_mlp=bool(hf_config.use_parallel_residual),
        positional_embedding_type="rotary",
        rotary_dim=rotary_dim,
        rotary_base=rope.get("rope_theta", 10_000),
        rotary_adjacent_pairs=False,
    )


def _gpt2_fields(hf_config: Any) -> dict[str, Any]:
    """GPT-2 (nanoGPT exports): learned positions, LayerNorm, biases, ``n_inner`` or 4 x width MLP."""
    return dict(
        d_model=hf_config.n_embd,
        d_head=hf_config.n_embd // hf_config.n_head,
        n_heads=hf_config.n_head,
        d_mlp=hf_config.n_inner or 4 * hf_config.n_embd,
        n_layers=hf_config.n_layer,
        n_ctx=hf_config.n_positions,
        eps=hf_config.layer_norm_epsilon,
        act_fn=_act_fn(hf_config.activation_function),
        normalization_type="LN",
        use_attn_scale=bool(getattr(hf_config, "scale_attn_weights", True)),
        scale_attn_by_inverse_layer_idx=bool(getattr(hf_config, "scale_attn_by_inverse_layer_idx", False)),
        positional_embedding_type="standard",
    )


def _llama_like_fields(hf_config: Any, model_type: str) -> dict[str, Any]:
    """Llama, Mistral, Qwen2: RMSNorm, gated SiLU MLP, full rotate-half RoPE, grouped-query attention."""
    rope = _rope(hf_config)
    if float(rope.get("partial_rotary_factor", 1.0)) != 1.0:
        raise NotImplementedError(f"partial_rotary_factor = {rope['partial_rotary_factor']}: only full RoPE.")
    if model_type == "llama" and (getattr(hf_config, "attention_bias", False) or getattr(hf_config, "mlp_bias", False)):
        raise NotImplementedError("attention_bias / mlp_bias = True: transformer_lens' Llama converter drops biases.")
    layer_types = set(getattr(hf_config, "layer_types", None) or ["full_attention"])
    if model_type != "mistral" and layer_types != {"full_attention"}:
        raise NotImplementedError(f"layer_types {sorted(layer_types)}: only full attention is supported.")
    d_head = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
    n_kv = getattr(hf_config, "num_key_value_heads", None) or hf_config.num_attention_heads
    window = getattr(hf_config, "sliding_window", None) if model_type == "mistral" else None
    return dict(
        d_model=hf_config.hidden_size,
        d_head=d_head,
        n_heads=hf_config.num_attention_heads,
        # the Llama converter expects None without grouping; Mistral's and Qwen2's always write grouped K/V
        n_key_value_heads=None if model_type == "llama" and n_kv == hf_config.num_attention_heads else n_kv,
        d_mlp=hf_config.intermediate_size,
        n_layers=hf_config.num_hidden_layers,
        n_ctx=hf_config.max_position_embeddings,
        eps=hf_config.rms_norm_eps,
        act_fn=_act_fn(hf_config.hidden_act),
        normalization_type="RMS",
        final_rms=True,
        gated_mlp=True,
        positional_embedding_type="rotary",
        rotary_dim=d_head,
        rotary_base=rope.get("rope_theta", 10_000),
        rotary_adjacent_pairs=False,
        use_local_attn=window is not None,
        window_size=window,
        attn_types=["local"] * hf_config.num_hidden_layers if window is not None else None,
    )


def hooked_config_from_hf(
    hf_config: Any, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> HookedTransformerConfig:
    """The ``HookedTransformerConfig`` computing exactly what ``hf_config``'s model computes.

    GPT-NeoX: rotary embeddings on the first ``rotary_dim = int(rotary_pct * d_head)`` dimensions of each head
    (rotate-half convention, i.e. non-adjacent pairs), attention and MLP in parallel or in sequence as
    ``use_parallel_residual`` says, LayerNorm. GPT-2: learned positions, LayerNorm. Llama, Mistral (sliding
    window as local attention), Qwen2: RMSNorm, gated MLP, full RoPE, grouped-query attention. Always an explicit
    unembedding (tied or not) and the config's norm eps. Raises ``NotImplementedError`` for a model type not in
    :data:`SUPPORTED_MODEL_TYPES` (naming them) and for variants transformer_lens cannot reproduce exactly.
    """
    model_type = _model_type(hf_config)
    if model_type == "gpt_neox":
        fields = _neox_fields(hf_config)
    elif model_type == "gpt2":
        fields = _gpt2_fields(hf_config)
    else:
        fields = _llama_like_fields(hf_config, model_type)
    return HookedTransformerConfig(
        model_name=str(getattr(hf_config, "_name_or_path", "") or model_type),
        original_architecture=_CONVERTERS[model_type][0],
        d_vocab=hf_config.vocab_size,
        d_vocab_out=hf_config.vocab_size,
        default_prepend_bos=False,
        init_weights=False,
        device=str(device),
        dtype=dtype,
        **fields,
    )


def hooked_from_hf(
    hf_model: Any,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    tokenizer: transformers.PreTrainedTokenizerBase | None = None,
) -> HookedTransformer:
    """A ``HookedTransformer`` (eval mode) with ``hf_model``'s weights loaded unprocessed.

    Weights go through transformer_lens' own converter of the model's architecture (``convert_neox_weights``,
    ``convert_gpt2_weights``, ``convert_llama_weights``, ``convert_mistral_weights``, ``convert_qwen2_weights``) and
    are loaded as they are (no folding or centring), so every hook equals the corresponding Hugging Face
    intermediate value: ``blocks.{L}.hook_resid_pre`` is ``hidden_states[L]`` and the logits are the model's logits.
    ``tokenizer`` (copied, since transformer_lens modifies it) is attached when given.
    """
    cfg = hooked_config_from_hf(hf_model.config, device=device, dtype=dtype)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="HookedTransformer is deprecated", category=DeprecationWarning)
        model = HookedTransformer(cfg, move_to_device=True)
    state = _CONVERTERS[hf_model.config.model_type][1](hf_model, cfg)
    state.setdefault("unembed.b_U", torch.zeros(cfg.d_vocab_out, dtype=dtype))  # GPT-2's converter omits it
    result = model.load_state_dict(state, strict=False)
    buffers = {name for name, _ in model.named_buffers()}
    missing = sorted(set(result.missing_keys) - buffers)
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"{hf_model.config.model_type} -> transformer_lens conversion mismatch: parameters not loaded {missing}, "
            f"unexpected converted keys {sorted(result.unexpected_keys)}."
        )
    if tokenizer is not None:
        model.set_tokenizer(copy.deepcopy(tokenizer))
    return model.eval()
