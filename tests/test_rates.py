"""The matmul rates a resource plan divides by: measured, positive, for the device asked."""

from __future__ import annotations

from saetrack.rates import measure_rates


def test_measured_rates_are_positive_and_name_their_device() -> None:
    rates = measure_rates("cpu", d_model=64, d_sae=256, batch=128)
    assert rates.device == "cpu" and rates.sae_flops > 0 and rates.forward_flops > 0
