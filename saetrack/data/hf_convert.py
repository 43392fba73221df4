"""A Hugging Face GPT-NeoX checkpoint as a transformer_lens HookedTransformer, without weight processing."""

from __future__ import annotations

import copy
import warnings

import torch
import transformers
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.pretrained.weight_conversions.neox import convert_neox_weights
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

__all__ = [
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


def hooked_config_from_hf(
    hf_config: GPTNeoXConfig, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> HookedTransformerConfig:
    """The ``HookedTransformerConfig`` computing exactly what a GPT-NeoX ``hf_config`` model computes.

    Rotary embeddings on the first ``rotary_dim = int(rotary_pct * d_head)`` dimensions of each head
    (GPT-NeoX's rotate-half convention, i.e. non-adjacent pairs), attention and MLP in parallel or in
    sequence as ``use_parallel_residual`` says, LayerNorm with the config's eps, an untied unembedding.
    Raises ``NotImplementedError`` for GPT-NeoX variants transformer_lens cannot reproduce exactly.
    """
    if not isinstance(hf_config, GPTNeoXConfig):
        model_type = getattr(hf_config, "model_type", None)
        raise TypeError(f"expected a GPTNeoXConfig, got {type(hf_config).__name__} (model_type={model_type!r}).")
    rope = dict(hf_config.rope_parameters or {})
    rope_type = rope.get("rope_type", "default")
    if rope_type != "default":
        raise NotImplementedError(f"rope_parameters['rope_type'] = {rope_type!r}: only 'default' RoPE is supported.")
    if not getattr(hf_config, "attention_bias", True):
        raise NotImplementedError(
            "attention_bias = False: transformer_lens' GPT-NeoX converter needs attention biases."
        )
    if hf_config.hidden_act not in _ACT_FN:
        raise NotImplementedError(
            f"hidden_act = {hf_config.hidden_act!r} is not supported; allowed: {sorted(_ACT_FN)}."
        )
    d_head = hf_config.hidden_size // hf_config.num_attention_heads
    partial = float(rope.get("partial_rotary_factor", 1.0))
    rotary_dim = int(d_head * partial)  # transformers truncates the same way (GPTNeoXAttention.rotary_ndims)
    if rotary_dim <= 0 or rotary_dim % 2:
        raise NotImplementedError(
            f"partial_rotary_factor = {partial} gives rotary_dim = {rotary_dim} for d_head = {d_head}; "
            "it must be a positive even number."
        )
    return HookedTransformerConfig(
        model_name=str(getattr(hf_config, "_name_or_path", "") or "gpt-neox"),
        original_architecture="GPTNeoXForCausalLM",
        d_model=hf_config.hidden_size,
        d_head=d_head,
        n_heads=hf_config.num_attention_heads,
        d_mlp=hf_config.intermediate_size,
        n_layers=hf_config.num_hidden_layers,
        n_ctx=hf_config.max_position_embeddings,
        d_vocab=hf_config.vocab_size,
        d_vocab_out=hf_config.vocab_size,
        eps=hf_config.layer_norm_eps,
        act_fn=_ACT_FN[hf_config.hidden_act],
        normalization_type="LN",
        use_attn_scale=True,
        use_local_attn=False,
        scale_attn_by_inverse_layer_idx=False,
        parallel_attn_mlp=bool(hf_config.use_parallel_residual),
        positional_embedding_type="rotary",
        rotary_dim=rotary_dim,
        rotary_base=rope.get("rope_theta", 10_000),
        rotary_adjacent_pairs=False,
        default_prepend_bos=False,
        init_weights=False,
        device=str(device),
        dtype=dtype,
    )


def hooked_from_hf(
    hf_model: GPTNeoXForCausalLM,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    tokenizer: transformers.PreTrainedTokenizerBase | None = None,
) -> HookedTransformer:
    """A ``HookedTransformer`` (eval mode) with ``hf_model``'s weights loaded unprocessed.

    Weights go through transformer_lens' own GPT-NeoX converter and are loaded as they are (no folding or
    centring), so every hook equals the corresponding Hugging Face intermediate value:
    ``blocks.{L}.hook_resid_pre`` is ``hidden_states[L]`` and the logits are the model's logits.
    ``tokenizer`` (copied, since transformer_lens modifies it) is attached when given.
    """
    cfg = hooked_config_from_hf(hf_model.config, device=device, dtype=dtype)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="HookedTransformer is deprecated", category=DeprecationWarning)
        model = HookedTransformer(cfg, move_to_device=True)
    state = convert_neox_weights(hf_model, cfg)
    result = model.load_state_dict(state, strict=False)
    buffers = {name for name, _ in model.named_buffers()}
    missing = sorted(set(result.missing_keys) - buffers)
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"GPT-NeoX -> transformer_lens conversion mismatch: parameters not loaded {missing}, "
            f"unexpected converted keys {sorted(result.unexpected_keys)}."
        )
    if tokenizer is not None:
        model.set_tokenizer(copy.deepcopy(tokenizer))
    return model.eval()
