"""The drift stage's plan: one link's decoder at a time beside the final one, and the noise floor."""

from __future__ import annotations

from saetrack.config import get_preset
from saetrack.planning.common import GB, plan_inputs
from saetrack.planning.drift import drift_host_bytes
from tests.planning.conftest import RATES, by_line


def test_the_noise_floor_links_and_host_memory_independent_of_the_number_of_links() -> None:
    drift = by_line("pythia-410m-l4")["drift"]
    assert drift.sae_tokens == 8 * 15_000_000  # the noise floor's 8 links
    inputs = plan_inputs(get_preset("pythia-1.4b-l3"), RATES)
    stacked = inputs.n_checkpoints * inputs.d_sae * inputs.d_model * 8  # the [T, F, d] float64 stack it replaced
    assert drift_host_bytes(inputs) < 10 * GB < stacked
