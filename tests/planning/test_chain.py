"""The chain stage's plan: links, baselines, the comparison's probes and seed SAEs, and the matchings."""

from __future__ import annotations

import pytest

from saetrack.analysis.sparse_matching import MAX_CANDIDATES
from saetrack.config import get_preset
from saetrack.planning import ResourceError, plan_run
from saetrack.planning.chain import matching_host_bytes
from saetrack.planning.common import GB, plan_inputs
from tests.planning.conftest import RATES, by_line


def test_the_410m_chain_baselines_probes_and_seed_saes_at_the_papers_budgets() -> None:
    by = by_line("pythia-410m-l4")
    assert by["chain"].sae_tokens == 300_000_000 + 28 * 15_000_000
    assert by["baselines"].sae_tokens == 5 * 300_000_000
    assert by["probes"].sae_tokens == 5 * 300_000_000  # the convergence study's recurrent probes
    assert by["seed SAEs"].sae_tokens == 2 * 300_000_000
    assert by["matching"].seconds == pytest.approx((28 + 3 * 7) * 2 * 65_536**2 * 1024 / 1e11)
    assert "35 matchings of 65,536 features: sparse" in by["matching"].notes[0]


def test_projected_time_is_flops_over_the_measured_rate() -> None:
    from saetrack.rates import Rates

    slow, fast = by_line("nano", Rates("cpu", 5e10, 5e10)), by_line("nano")
    assert slow["chain"].seconds == pytest.approx(2 * fast["chain"].seconds)


def test_a_sparse_matching_keeps_its_candidates_not_the_cosine_matrix() -> None:
    inputs = plan_inputs(get_preset("pythia-1.4b-l3"), RATES)
    f = inputs.d_sae
    assert matching_host_bytes(inputs) < 10 * GB < 8 * f * f  # 131,072^2 float64 cosines would be 137 GB
    assert matching_host_bytes(inputs) >= 40 * 2 * f * MAX_CANDIDATES
    nano = plan_inputs(get_preset("nano"), RATES)
    assert matching_host_bytes(nano) >= 3 * 8 * nano.d_sae**2  # exact at nano's size


def test_a_torchrun_job_divides_the_data_parallel_lines_and_keeps_the_rest_on_rank_0() -> None:
    run = get_preset("pythia-410m-l4")
    one, eight = ({s.stage: s for s in plan_run(run, RATES, ranks)} for ranks in (1, 8))
    for name in ("chain", "baselines"):  # trained by all ranks together: an eighth of the time, memory per rank
        assert eight[name].seconds == pytest.approx(one[name].seconds / 8)
        assert eight[name].device == one[name].device - 3 * 4 * run.chain.batch_size * 65_536 * 7 // 8
        gradient = 4 * (2 * 1024 * 65_536 + 65_536 + 1024) / GB
        assert f"data-parallel over 8 ranks: per step each rank all-reduces {gradient:.2f} GB" in eight[name].notes[-1]
    for name in ("probes", "seed SAEs", "matching"):  # rank 0 alone
        assert eight[name].seconds == one[name].seconds and eight[name].device == one[name].device
    with pytest.raises(ResourceError, match=r"3 ranks cannot split chain\.batch_size = 4096"):
        plan_run(run, RATES, 3)
