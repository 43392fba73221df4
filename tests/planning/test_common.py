"""The shared plan inputs: shapes, per-token costs, and the device memory of training one link."""

from __future__ import annotations

import pytest
import torch

from saetrack.config import get_preset
from saetrack.data.stream import stream_peak_bytes
from saetrack.planning.common import (
    forward_workspace_bytes,
    plan_inputs,
    sae_bytes,
    sae_training_device_bytes,
    streamed_model_bytes,
)
from tests.planning.conftest import RATES


def test_shapes_and_per_token_costs_come_from_the_config_and_the_rates() -> None:
    inputs = plan_inputs(get_preset("pythia-410m-l4"), RATES)
    assert (inputs.d_model, inputs.n_layers, inputs.vocab, inputs.d_sae) == (1024, 24, 50_304, 65_536)
    assert inputs.sae_step_seconds == pytest.approx(12 * 1024 * 65_536 / 1e11)
    assert inputs.forward_seconds == pytest.approx(2 * 12 * 1024**2 * 4 / 1e11)  # the 4 blocks before the hook
    assert sae_bytes(2, 3) == 4 * (2 * 2 * 3 + 2 * 3 + 2)


def test_a_streamed_link_counts_the_shuffle_buffer_the_model_and_a_forward() -> None:
    run = get_preset("pythia-410m-l4")
    inputs = plan_inputs(run, RATES)
    cached = plan_inputs(run.with_overrides({"cache.mode": "cached"}), RATES)
    buffer_rows = run.cache.buffer_tokens or max(run.chain.first_tokens, run.chain.baseline_token_budget)
    batch_rows = run.cache.batch_contexts * run.cache.context_length
    shuffle = stream_peak_bytes(buffer_rows, 1024, torch.float32, batch_rows, run.chain.batch_size)
    assert shuffle < 2 * 4 * buffer_rows * 1024  # one preallocated buffer, not two
    extra = sae_training_device_bytes(inputs) - sae_training_device_bytes(cached)
    assert extra == shuffle + streamed_model_bytes(inputs) + forward_workspace_bytes(inputs)
