"""The Eq. 6 forward in batches: same activations whatever the first context, autocast switch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from saetrack.config import get_preset
from saetrack.data.checkpoints import open_source
from saetrack.data.forward import forward_context, residual_at_layer, residual_chunks


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
