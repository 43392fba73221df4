"""Tiny GPT-NeoX checkpoints, tokenizers and hub-cache layouts for the checkpoint tests (offline, milliseconds)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

from saetrack.store import file_sha256

VOCAB = 64
ATOL = 1e-4
REPO_ID = "TestOrg/tiny-neox"


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
