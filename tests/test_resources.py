"""The resource plan: the paper presets' needs from their configs, the refusal with numbers, --plan."""

from __future__ import annotations

import pytest

from saetrack.config import get_preset
from saetrack.data.cache_plan import planned_cache_bytes
from saetrack.resources import GB, Rates, ResourceError, check_fits, format_plan, measure_rates, plan_run

RATES = Rates("cpu", sae_flops=1e11, forward_flops=1e11)


def _by_stage(preset: str) -> dict:
    return {s.stage: s for s in plan_run(get_preset(preset), RATES)}


def test_the_410m_chain_fits_50_gb_of_disk_64_gb_of_host_memory_and_one_80_gb_gpu() -> None:
    stages = plan_run(get_preset("pythia-410m-l4"), RATES)
    assert sum(s.disk for s in stages) <= 50 * GB
    assert max(s.host for s in stages) <= 64 * GB
    assert max(s.device for s in stages) <= 80 * GB
    by = {s.stage: s for s in stages}
    assert by["cache"].forward_tokens == 0  # streamed: nothing cached
    # the chain, 5 from-scratch baselines and 2 second-seed SAEs (seed control)
    assert by["chain"].sae_tokens == 300_000_000 + 28 * 15_000_000 + (5 + 2) * 300_000_000
    assert by["drift"].sae_tokens == 8 * 15_000_000  # the noise floor's 8 links


def test_a_cached_plan_counts_the_cache_the_cache_stage_would_write() -> None:
    run = get_preset("smoke")
    by = _by_stage("smoke")
    assert by["cache"].disk == planned_cache_bytes(run, run.suite.d_model)
    assert by["chain"].forward_tokens == 0 and by["cache"].forward_tokens > 0


def test_projected_time_is_flops_over_the_measured_rate() -> None:
    slow = {s.stage: s for s in plan_run(get_preset("nano"), Rates("cpu", 5e10, 5e10))}
    fast = _by_stage("nano")
    assert slow["chain"].seconds == pytest.approx(2 * fast["chain"].seconds)


def test_a_run_that_does_not_fit_is_refused_with_its_numbers() -> None:
    stages = plan_run(get_preset("pythia-1.4b-l3"), RATES)
    with pytest.raises(ResourceError, match=r"disk: the run needs 1\d\d\.\d GB, 20\.0 GB are free.*--ignore-resources"):
        check_fits(stages, {"disk": int(20 * GB), "host": int(256 * GB)})
    check_fits(stages, {"disk": int(1000 * GB), "host": int(256 * GB), "device": int(80 * GB)})
    text = format_plan(get_preset("pythia-1.4b-l3"), stages, RATES, {"disk": int(20 * GB)})
    assert "chain" in text and "formation" in text and "GFLOP/s" in text


def test_measured_rates_are_positive() -> None:
    rates = measure_rates("cpu", d_model=64, d_sae=256, batch=128)
    assert rates.sae_flops > 0 and rates.forward_flops > 0
