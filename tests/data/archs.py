"""Tiny random-weight GPT-2, Llama, Mistral and Qwen2 checkpoints (besides GPT-NeoX, tests/data/neox.py): a user's
own training run in each layout, built locally in milliseconds (no download)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from tests.data.neox import VOCAB, save_tokenizer, tiny_model

#: Residual width and depth of every tiny model here.
D_MODEL, N_LAYERS = 64, 3

_LLAMA_LIKE: dict[str, object] = dict(
    vocab_size=VOCAB,
    hidden_size=D_MODEL,
    num_hidden_layers=N_LAYERS,
    num_attention_heads=4,
    intermediate_size=96,
    max_position_embeddings=64,
)


def arch_config(arch: str, **overrides: Any) -> Any:
    """The tiny config of ``arch``: ``"gpt2"`` (nanoGPT-like), ``"llama"``, ``"llama-gqa"`` (2 KV heads, tied
    embeddings, as SmolLM), ``"mistral"`` (sliding window of 5), ``"qwen2"`` (q/k/v biases, 2 KV heads)."""
    if arch == "gpt2":
        values: dict[str, Any] = dict(vocab_size=VOCAB, n_embd=D_MODEL, n_layer=N_LAYERS, n_head=4, n_positions=64)
        return GPT2Config(**{**values, **overrides})
    extra: dict[str, dict[str, Any]] = {
        "llama": {},
        "llama-gqa": dict(num_key_value_heads=2, tie_word_embeddings=True),
        "mistral": dict(num_key_value_heads=2, sliding_window=5),
        "qwen2": dict(num_key_value_heads=2),
    }
    config_class = {"mistral": MistralConfig, "qwen2": Qwen2Config}.get(arch, LlamaConfig)
    return config_class(**{**_LLAMA_LIKE, **extra[arch], **overrides})


def arch_model(arch: str, seed: int, **overrides: Any) -> PreTrainedModel:
    """A tiny model of ``arch`` (``"gpt_neox"`` or any of :func:`arch_config`) whose every parameter is random and
    O(1): norms near 1, matrices scaled by their fan-in, biases 0.2 x N(0, 1)."""
    if arch == "gpt_neox":
        return tiny_model(seed, hidden_size=D_MODEL, num_hidden_layers=N_LAYERS, **overrides)
    model_class = {"gpt2": GPT2LMHeadModel, "mistral": MistralForCausalLM, "qwen2": Qwen2ForCausalLM}
    torch.manual_seed(seed)
    model = model_class.get(arch, LlamaForCausalLM)(arch_config(arch, **overrides)).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            is_norm = "norm" in name or name.split(".")[-2].startswith("ln")
            if is_norm and name.endswith("weight"):
                param.copy_(1.0 + 0.2 * noise)
            elif param.ndim == 2:
                param.copy_(noise / param.shape[1] ** 0.5 * 1.5)
            else:
                param.copy_(0.2 * noise)
    return model


def build_arch_suite(
    root: Path, arch: str, seeds: dict[int, int], *, nudge: float | None = None
) -> dict[int, PreTrainedModel]:
    """``root/step{N}/`` checkpoints of ``arch_model(arch, seeds[N])`` and ``root/tokenizer``; returns the models.

    With ``nudge``, every checkpoint is instead the first step's model with each parameter moved by
    ``nudge * step / last step`` of its own scale in a direction drawn from ``seeds[N]``: one training run's
    checkpoints, drifting slowly (what a chain follows), instead of unrelated models.
    """
    models = {}
    first, last = min(seeds), max(seeds)
    for step, seed in seeds.items():
        model = arch_model(arch, seeds[first] if nudge is not None else seed)
        if nudge is not None and step != first:
            generator = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for param in model.parameters():
                    noise = torch.randn(param.shape, generator=generator)
                    param.add_(nudge * (step - first) / max(1, last - first) * param.std() * noise)
        models[step] = model
        model.save_pretrained(root / f"step{step}")
    save_tokenizer(root / "tokenizer")
    return models


def hf_hook_values(model: PreTrainedModel, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """The Hugging Face model's own activations under transformer_lens hook names, for every block ``L``:
    ``resid_pre``/``resid_post`` from ``hidden_states``; ``attn_out``/``mlp_out`` from forward hooks on the block's
    attention and MLP modules; ``resid_mid`` = ``resid_pre + attn_out`` (sequential blocks only)."""
    base = getattr(model, "gpt_neox", None) or getattr(model, "transformer", None) or model.model
    layers = getattr(base, "layers", None) or base.h
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for index, layer in enumerate(layers):
        attn = getattr(layer, "self_attn", None) or getattr(layer, "attention", None) or layer.attn
        for kind, module in (("attn_out", attn), ("mlp_out", layer.mlp)):
            name = f"blocks.{index}.hook_{kind}"

            def keep(_m: torch.nn.Module, _i: Any, out: Any, name: str = name) -> None:
                outputs[name] = out[0] if isinstance(out, tuple) else out

            handles.append(module.register_forward_hook(keep))
    try:
        with torch.no_grad():
            hidden = model(tokens, output_hidden_states=True).hidden_states
    finally:
        for handle in handles:
            handle.remove()
    for index in range(len(layers)):
        outputs[f"blocks.{index}.hook_resid_pre"] = hidden[index]
        outputs[f"blocks.{index}.hook_resid_mid"] = hidden[index] + outputs[f"blocks.{index}.hook_attn_out"]
        if index + 1 < len(layers):  # the last hidden state is after the final norm
            outputs[f"blocks.{index}.hook_resid_post"] = hidden[index + 1]
    return outputs
