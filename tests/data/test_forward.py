"""The Eq. 6 forward in batches: same activations whatever the first context, autocast switch; every hook, the
forward stopped there."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from saetrack import paths
from saetrack.config import get_preset
from saetrack.config.data import CACHE_HOOKS
from saetrack.data.checkpoints import open_source
from saetrack.data.forward import (
    activation_at_hook,
    activations_at_hooks,
    forward_context,
    layered_chunks,
    residual_at_layer,
    residual_chunks,
    truncate_at_layer,
)
from saetrack.data.hf_convert import hooked_from_hf
from tests.data.archs import N_LAYERS, arch_model
from tests.data.neox import random_tokens


def test_chunks_are_the_hook_value_and_skipping_keeps_batch_boundaries(smoke_run_dir: Path) -> None:
    run = get_preset("smoke")
    model = open_source(run.model, smoke_run_dir).load_hooked(run.sae_steps[-1])
    tokens = np.random.default_rng(0).integers(0, 500, size=(10, run.cache.context_length))
    full = torch.cat(list(residual_chunks(model, tokens, 1, batch_contexts=4, device="cpu")))
    direct = residual_at_layer(model, torch.as_tensor(tokens), 1).reshape(-1, full.shape[1])
    torch.testing.assert_close(full, direct, rtol=1e-5, atol=1e-5)
    tail = torch.cat(list(residual_chunks(model, tokens, 1, batch_contexts=4, device="cpu", first_context=5)))
    assert torch.equal(tail, full[5 * run.cache.context_length :])  # bit-identical: same batches
    assert tail.requires_grad is False and not tail.is_inference()


def test_forward_context_is_a_no_op_in_float32_and_autocast_in_bfloat16() -> None:
    a = torch.randn(8, 8)
    with forward_context("cpu", "float32"):
        assert (a @ a).dtype == torch.float32
    with forward_context("cpu", "bfloat16"):
        assert (a @ a).dtype == torch.bfloat16


def _matmul_flags() -> tuple[bool, bool, str]:
    """The process-wide matmul numerics a stage could leak into the next one."""
    matmul = torch.backends.cuda.matmul.allow_tf32
    return (matmul, torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision())


class _FlagRecorder(torch.nn.Module):
    """A stand-in model that records the TF32 flag while its forward runs."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bool] = []

    def forward(self, tokens: torch.Tensor, stop_at_layer: int) -> torch.Tensor:
        self.seen.append(torch.backends.cuda.matmul.allow_tf32)
        return torch.zeros(*tokens.shape, 4)


def test_tf32_is_on_during_each_forward_only_never_between_batches() -> None:
    before = _matmul_flags()
    model, tokens = _FlagRecorder(), np.zeros((6, 3), dtype=np.int64)
    for chunk in residual_chunks(model, tokens, 1, batch_contexts=2, device="cpu", tf32=True):
        assert _matmul_flags() == before and chunk.shape == (6, 4)  # what the consumer (the SAE step) runs under
    assert model.seen == [True, True, True] and _matmul_flags() == before
    list(residual_chunks(model, tokens, 1, batch_contexts=2, device="cpu"))
    assert model.seen[3:] == [False, False, False]
    with forward_context("cpu", "float32", tf32=True), forward_context("cpu", "bfloat16", tf32=True):
        assert torch.backends.cuda.matmul.allow_tf32
    assert _matmul_flags() == before


def test_loading_and_streaming_a_model_changes_no_global_matmul_flag(smoke_run_dir: Path) -> None:
    run = get_preset("smoke")
    before = _matmul_flags()
    model = open_source(run.model, smoke_run_dir).load_hooked(run.sae_steps[-1])
    tokens = np.zeros((2, run.cache.context_length), dtype=np.int64)
    chunks = list(residual_chunks(model, tokens, 1, batch_contexts=1, device="cpu", tf32=True))
    assert len(chunks) == 2 and _matmul_flags() == before


def test_only_the_scoped_contexts_set_a_matmul_flag() -> None:
    # a flag set anywhere else would outlive the stage that set it (the streamed path once did, on CUDA only): only the
    # model forward's context and the SAE step loop's precision context set one, and both restore it (their tests)
    setters = re.compile(r"allow_tf32\s*=(?!=)|set_float32_matmul_precision\(|reduced_precision_reduction\s*=")
    found = {
        path.relative_to(paths.REPO_ROOT).as_posix()
        for path in (paths.REPO_ROOT / "saetrack").rglob("*.py")
        if setters.search(path.read_text())
    }
    assert found == {"saetrack/data/forward.py", "saetrack/sae/precision.py"}


def test_a_model_cut_at_the_hook_gives_the_same_activations(smoke_run_dir: Path) -> None:
    run = get_preset("smoke")
    model = open_source(run.model, smoke_run_dir).load_hooked(run.sae_steps[-1])
    tokens = np.random.default_rng(1).integers(0, 500, size=(6, run.cache.context_length))
    before = torch.cat(list(residual_chunks(model, tokens, 1, batch_contexts=4, device="cpu")))
    n_params = sum(p.numel() for p in model.parameters())
    assert truncate_at_layer(model, 1) is model
    after = torch.cat(list(residual_chunks(model, tokens, 1, batch_contexts=4, device="cpu")))
    assert torch.equal(before, after)  # bit-identical
    assert len(model.blocks) == 1 and model.unembed is None and model.ln_final is None
    assert sum(p.numel() for p in model.parameters()) < n_params
    assert "blocks.0.hook_resid_pre" in model.hook_dict and not any(k.startswith("blocks.1.") for k in model.hook_dict)
    with pytest.raises(ValueError, match="layer = 5"):
        truncate_at_layer(model, 5)


def test_read_only_int64_token_batches_are_uploaded_without_a_copy_warning(tmp_path: Path) -> None:
    np.save(tmp_path / "t.npy", np.arange(24, dtype=np.int64).reshape(4, 6))
    tokens = np.load(tmp_path / "t.npy", mmap_mode="r")
    model = _FlagRecorder()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chunks = list(residual_chunks(model, tokens, 1, batch_contexts=3, device="cpu"))
    assert [c.shape for c in chunks] == [(18, 4), (6, 4)]


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox"])
@pytest.mark.parametrize("hook", CACHE_HOOKS)
def test_every_hook_is_the_hook_value_and_nothing_past_it_runs(arch: str, hook: str) -> None:
    hooked = hooked_from_hf(arch_model(arch, 3))
    tokens = random_tokens(2, 12, seed=3)
    with torch.no_grad():
        _, cache = hooked.run_with_cache(tokens)
    ran: list[str] = []
    for layer in range(N_LAYERS):
        name = f"blocks.{layer}.hook_{hook}"
        if name not in hooked.hook_dict:  # resid_mid of GPT-NeoX's parallel attention and MLP
            assert (arch, hook) == ("gpt_neox", "resid_mid")
            with pytest.raises(ValueError, match="parallel"):
                activation_at_hook(hooked, tokens, layer, hook)
            continue
        ran.clear()
        later = [(n, p) for n, p in hooked.hook_dict.items() if n.startswith("ln_final.")]
        later += [(n, p) for n, p in hooked.hook_dict.items() if n.startswith(f"blocks.{layer + 1}.")]
        # the hook point right after ours in block `layer` must not run either (no compute past the hook)
        after = {"attn_out": "hook_resid_mid", "resid_mid": "hook_mlp_out", "mlp_out": "hook_resid_post"}.get(hook)
        if after and arch != "gpt_neox":
            later.append((f"blocks.{layer}.{after}", hooked.hook_dict[f"blocks.{layer}.{after}"]))
        handles = [p.register_forward_hook(lambda *_, n=n: ran.append(n)) for n, p in later]
        try:
            value = activation_at_hook(hooked, tokens, layer, hook)
        finally:
            for handle in handles:
                handle.remove()
        assert ran == [], f"{name}: {ran} ran past the hook"
        assert torch.equal(value, cache[name]) or torch.allclose(value, cache[name], rtol=0, atol=1e-6)
        assert torch.equal(residual_at_layer(hooked, tokens, layer, hook), value)
    assert all(not p._forward_hooks for p in hooked.hook_dict.values())  # the capturing hook was removed


def test_hook_checks_name_the_problem() -> None:
    hooked = hooked_from_hf(arch_model("gpt2", 4))
    tokens = random_tokens(1, 4)
    with pytest.raises(ValueError, match="hook = 'resid_final'"):
        activation_at_hook(hooked, tokens, 0, "resid_final")
    with pytest.raises(ValueError, match=f"layer = {N_LAYERS} is invalid for hook 'mlp_out'"):
        activation_at_hook(hooked, tokens, N_LAYERS, "mlp_out")
    with pytest.raises(TypeError, match="HookedTransformer"):
        activation_at_hook(_FlagRecorder(), tokens, 0, "attn_out")


@pytest.mark.parametrize("hook", ["resid_pre", "resid_mid", "attn_out", "resid_post"])
def test_a_model_cut_at_any_hook_gives_the_same_activations(hook: str) -> None:
    model = hooked_from_hf(arch_model("llama", 7))
    tokens = np.random.default_rng(7).integers(0, 64, size=(5, 10))
    before = torch.cat(list(residual_chunks(model, tokens, 1, batch_contexts=2, device="cpu", hook=hook)))
    truncate_at_layer(model, 1, hook)
    assert len(model.blocks) == (1 if hook == "resid_pre" else 2) and model.unembed is None
    after = torch.cat(list(residual_chunks(model, tokens, 1, batch_contexts=2, device="cpu", hook=hook)))
    assert torch.equal(before, after) and before.shape == (50, 64)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox"])
@pytest.mark.parametrize("hook", ["resid_pre", "attn_out", "mlp_out", "resid_post"])
def test_several_layers_from_one_forward_are_each_layers_own_value(arch: str, hook: str) -> None:
    hooked = hooked_from_hf(arch_model(arch, 5))
    tokens = random_tokens(2, 12, seed=5)
    layers = [0, N_LAYERS - 2, N_LAYERS - 1]
    ran: list[str] = []
    later = [p for n, p in hooked.hook_dict.items() if n.startswith("ln_final.")]
    handles = [p.register_forward_hook(lambda *_: ran.append("past")) for p in later]
    try:
        values = activations_at_hooks(hooked, tokens, layers, hook)
    finally:
        for handle in handles:
            handle.remove()
    assert ran == []  # the forward ended at the deepest layer's hook
    for layer, value in zip(layers, values, strict=True):
        assert torch.equal(value, activation_at_hook(hooked, tokens, layer, hook)), f"{arch} {hook} layer {layer}"
    assert all(not p._forward_hooks for p in hooked.hook_dict.values())  # every keeping hook removed


def test_layered_chunks_equal_each_layers_residual_chunks() -> None:
    model = hooked_from_hf(arch_model("llama", 8))
    tokens = np.random.default_rng(8).integers(0, 64, size=(5, 10))
    kwargs = dict(batch_contexts=2, device="cpu", store_dtype=torch.bfloat16)
    layered = list(layered_chunks(model, tokens, [0, 2], **kwargs))
    assert len(layered) == 3 and all(len(chunks) == 2 for chunks in layered)
    for index, layer in enumerate([0, 2]):
        alone = list(residual_chunks(model, tokens, layer, **kwargs))
        assert all(torch.equal(a, b[index]) for a, b in zip(alone, layered, strict=True))


def test_several_layers_from_a_model_cut_at_the_deepest_and_out_of_range_layers() -> None:
    hooked = hooked_from_hf(arch_model("gpt2", 4))
    tokens = random_tokens(1, 4)
    with pytest.raises(ValueError, match=f"layer = {N_LAYERS} is invalid for hook 'mlp_out'"):
        activations_at_hooks(hooked, tokens, [0, N_LAYERS], "mlp_out")
    final = activations_at_hooks(hooked, tokens, [0, N_LAYERS], "resid_pre")  # the residual leaving the last block
    assert torch.equal(final[1], activation_at_hook(hooked, tokens, N_LAYERS))
    for hook in ("resid_pre", "mlp_out"):
        whole = activations_at_hooks(hooked, tokens, [0, 1], hook)
        cut = truncate_at_layer(hooked_from_hf(arch_model("gpt2", 4)), 1, hook)
        assert all(
            torch.equal(a, b) for a, b in zip(whole, activations_at_hooks(cut, tokens, [0, 1], hook), strict=True)
        )
