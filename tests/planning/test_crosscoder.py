"""Notebook 06's plan: the crosscoder's aligned cache and training, statistics, and the methods' matchings."""

from __future__ import annotations

import pytest

from saetrack.config import get_preset
from saetrack.planning import plan_run
from saetrack.planning.crosscoder import crosscoder_cache_bytes
from saetrack.rates import Rates
from saetrack.resources import ResourceError, check_fits, format_plan
from tests.planning.conftest import RATES, by_line

GB = 1e9


def test_the_crosscoder_papers_plan_counts_its_aligned_cache_and_does_not_fit_here() -> None:
    run = get_preset("pythia-160m-l6")
    by = by_line("pythia-160m-l6")
    cc = by["crosscoder"]
    tokens, snapshots, d_model, d_sae = 2_343_750 * 128, 32, 768, 49_152
    cache = tokens * snapshots * d_model * 4  # float32 on disk
    assert crosscoder_cache_bytes(run, d_model) == cache == 29_491_200_000_000  # ~29.5 TB: Ge et al.'s "tens of TB"
    params = 2 * snapshots * d_model * d_sae + 2 * d_sae + snapshots * d_model
    assert cc.disk == cache + 4 * (params + snapshots) + 3 * 4 * params  # + the saved model and the training state
    trainings = 4  # the crosscoder and its three control crosscoders, trained alike
    assert (cc.forward_tokens, cc.sae_tokens) == (tokens * snapshots + 65_536 * snapshots, trainings * tokens)
    assert cc.device == 16 * params + 2 * 4 * 4096 * snapshots * d_model + 3 * 4 * 4096 * d_sae
    assert cc.seconds == pytest.approx(
        (cc.forward_tokens * 2 * 12 * d_model**2 * 6 + 2 * trainings * tokens * d_sae * snapshots * d_model) / 1e11,
        1e-3,
    )
    assert by["statistics"].forward_tokens == 29 * 256 * 128
    stages = plan_run(run, RATES)
    with pytest.raises(ResourceError, match=r"disk: the run needs 29,5\d\d\.\d GB"):
        check_fits(stages, {"disk": int(64 * GB), "host": int(128 * GB), "device": int(141 * GB)})
    text = format_plan(run, stages, RATES, {"disk": int(64 * GB), "host": int(128 * GB)})
    assert "at 32 snapshots (29.5 TB, float32)" in text and "methods" in text


def test_the_nano_crosscoder_plan_and_its_controls() -> None:
    run = get_preset("nano")
    cc = by_line("nano")["crosscoder"]
    assert cc.disk >= crosscoder_cache_bytes(run, 128) == 1024 * 128 * 28 * 128 * 4
    assert (cc.forward_tokens, cc.sae_tokens) == (1024 * 128 * 28, 4 * run.crosscoder.epochs * 1024 * 128)
    alone = by_line("nano", **{"crosscoder.controls": False})["crosscoder"]
    assert alone.sae_tokens == run.crosscoder.epochs * 1024 * 128 and alone.seconds < cc.seconds


def test_the_crosscoder_is_planned_with_the_step_its_device_runs() -> None:
    run = get_preset("nano")
    cpu, gpu = by_line("nano")["crosscoder"], by_line("nano", Rates("cuda", 1e11, 1e11))["crosscoder"]
    cc = run.crosscoder
    trainings, d_sae, d_model = 4, 8 * 128, 128  # the crosscoder and its three controls
    flops = cc.train_contexts * run.cache.context_length * cc.epochs * trainings * d_sae * d_model
    flops *= len(run.crosscoder_steps)
    assert gpu.seconds - cpu.seconds == pytest.approx((12 - 2) * flops / RATES.sae_flops)


def test_a_torchrun_job_trains_the_crosscoders_data_parallel() -> None:
    run = get_preset("pythia-160m-l6")
    one, eight = ({s.stage: s for s in plan_run(run, RATES, ranks)}["crosscoder"] for ranks in (1, 8))
    forwards = one.forward_tokens * 2 * 12 * 768**2 * 6 / 1e11  # the aligned activations' forwards, on rank 0
    assert eight.seconds - forwards == pytest.approx((one.seconds - forwards) / 8)
    batch_terms = 2 * 4 * 4096 * 32 * 768 + 3 * 4 * 4096 * 49_152  # each rank holds an eighth of the batch
    assert eight.device == one.device - batch_terms + batch_terms // 8
    params = 2 * 32 * 768 * 49_152 + 2 * 49_152 + 32 * 768
    steps = 4 * (2_343_750 * 128 // 4096)  # the crosscoder and 3 controls, one epoch each
    assert (
        f"all-reduces {4 * params / GB:.2f} GB of gradients" in eight.notes[-1]
        and f"{steps:,} steps" in eight.notes[-1]
    )
    with pytest.raises(ResourceError, match=r"3 ranks cannot split chain\.batch_size"):
        plan_run(run, RATES, 3)
    odd = run.with_overrides({"crosscoder.batch_size": 4000})
    with pytest.raises(ResourceError, match=r"64 ranks cannot split crosscoder\.batch_size = 4000"):
        plan_run(odd, RATES, 64)  # the chain's 4096 splits, the crosscoder's 4000 does not
