"""The drift stage's plan: one link's decoder at a time beside the final one, and the noise floor."""

from __future__ import annotations

from saetrack.config import get_preset
from saetrack.planning.common import GB, plan_inputs
from saetrack.planning.drift import density_cost, density_links, drift_host_bytes
from tests.planning.conftest import RATES, by_line


def test_the_noise_floor_links_and_host_memory_independent_of_the_number_of_links() -> None:
    drift = by_line("pythia-410m-l4")["drift"]
    assert drift.sae_tokens == 8 * 15_000_000  # the noise floor's 8 links; the paper presets skip the density study
    with_density = by_line("pythia-410m-l4", **{"drift.density_strides": (2, 4, 8)})["drift"]
    assert with_density.sae_tokens == 8 * 15_000_000 + 25 * 15_000_000  # its 25 sparse links, when asked for
    inputs = plan_inputs(get_preset("pythia-1.4b-l3"), RATES)
    stacked = inputs.n_checkpoints * inputs.d_sae * inputs.d_model * 8  # the [T, F, d] float64 stack it replaced
    assert drift_host_bytes(inputs) < 10 * GB < stacked


def test_the_density_study_costs_its_sparse_links_and_nothing_when_off() -> None:
    # nano: 28 checkpoints; strides 2, 4, 8 train 14 + 7 + 4 links (positions 0, s, 2s, ... and the final one)
    assert density_links(28, (2, 4, 8)) == 14 + 7 + 4 and density_links(8, (2, 4, 8)) == 4 + 2 + 1
    inputs = plan_inputs(get_preset("nano"), RATES)
    cost = density_cost(inputs)
    assert cost is not None and cost.sae_tokens == 25 * 50_000 and cost.forward_tokens == 0  # cached: no forward
    assert cost.seconds == cost.sae_tokens * inputs.sae_step_seconds and "25 links of 50,000 tokens" in cost.notes[0]
    off = by_line("nano", **{"drift.density_strides": ()})["drift"]
    on = by_line("nano")["drift"]
    assert on.sae_tokens - off.sae_tokens == cost.sae_tokens and on.seconds - off.seconds == cost.seconds
    assert on.notes[-1] == cost.notes[0] and not any("density" in n for n in off.notes)
    assert density_cost(plan_inputs(get_preset("nano", {"drift.density_strides": ()}), RATES)) is None
    assert by_line("nano", **{"drift.density_strides": (4,)})["drift"].sae_tokens == off.sae_tokens + 7 * 50_000
