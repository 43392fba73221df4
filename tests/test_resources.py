"""The resource plan: the paper presets' needs from their configs, the refusal with numbers, --plan."""

from __future__ import annotations

import pytest

from saetrack.config import get_preset
from saetrack.data.cache_plan import planned_cache_bytes
from saetrack.resources import (
    GB,
    Rates,
    ResourceError,
    check_fits,
    crosscoder_cache_bytes,
    format_plan,
    human_time,
    plan_run,
    planned_for,
)

RATES = Rates("cpu", sae_flops=1e11, forward_flops=1e11)


#: Notebook 06's stages (the crosscoder and the statistical-learning phase) and notebook 05's other sizes and seed
#: runs; the chain's budgets are tested without them.
NOTEBOOK_06 = ("crosscoder", "statistics", "scale")


def _by_stage(preset: str) -> dict:
    return {s.stage: s for s in plan_run(get_preset(preset), RATES)}


def test_the_410m_chain_fits_50_gb_of_disk_64_gb_of_host_memory_and_one_80_gb_gpu() -> None:
    stages = [s for s in plan_run(get_preset("pythia-410m-l4"), RATES) if s.stage not in NOTEBOOK_06]
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
    stages = [s for s in plan_run(get_preset("pythia-1.4b-l3"), RATES) if s.stage not in NOTEBOOK_06]
    with pytest.raises(ResourceError, match=r"disk: the run needs 1\d\d\.\d GB, 20\.0 GB are free.*--ignore-resources"):
        check_fits(stages, {"disk": int(20 * GB), "host": int(256 * GB)})
    check_fits(stages, {"disk": int(1000 * GB), "host": int(256 * GB), "device": int(80 * GB)})
    text = format_plan(get_preset("pythia-1.4b-l3"), stages, RATES, {"disk": int(20 * GB)})
    assert "chain" in text and "formation" in text and "GFLOP/s" in text


def test_the_crosscoder_papers_plan_counts_its_aligned_cache_and_does_not_fit_here() -> None:
    run = get_preset("pythia-160m-l6")
    by = _by_stage("pythia-160m-l6")
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
        # on a CPU the sparse step's one dense product, the encoder forward (the GPU's dense step: 12 d_sae T d)
        (cc.forward_tokens * 2 * 12 * d_model**2 * 6 + 2 * trainings * tokens * d_sae * snapshots * d_model) / 1e11,
        1e-3,
    )
    # statistics: a full forward of each of the 29 chain checkpoints over 256 held-out contexts
    assert by["statistics"].forward_tokens == 29 * 256 * 128
    stages = plan_run(run, RATES)
    with pytest.raises(ResourceError, match=r"disk: the run needs 29,5\d\d\.\d GB"):
        check_fits(stages, {"disk": int(64 * GB), "host": int(128 * GB), "device": int(141 * GB)})
    text = format_plan(run, stages, RATES, {"disk": int(64 * GB), "host": int(128 * GB)})
    assert "crosscoder" in text and "statistics" in text and "the run does not fit this machine: disk" in text
    assert "at 32 snapshots (29.5 TB, float32)" in text


def test_the_nano_crosscoder_plan_and_a_plan_that_fits() -> None:
    run = get_preset("nano")
    cc = _by_stage("nano")["crosscoder"]
    assert cc.disk >= crosscoder_cache_bytes(run, 128) == 1024 * 128 * 28 * 128 * 4
    # cached: one forward per snapshot; the crosscoder and its three controls train alike
    assert (cc.forward_tokens, cc.sae_tokens) == (1024 * 128 * 28, 4 * run.crosscoder.epochs * 1024 * 128)
    alone = {s.stage: s for s in plan_run(run.with_overrides({"crosscoder.controls": False}), RATES)}["crosscoder"]
    assert alone.sae_tokens == run.crosscoder.epochs * 1024 * 128 and alone.seconds < cc.seconds
    text = format_plan(run, plan_run(run, RATES), RATES, {"disk": int(1000 * GB), "host": int(256 * GB)})
    assert "the run fits this machine" in text


def test_a_suite_preset_counts_its_suite_training_in_the_cache_stage() -> None:
    run = get_preset("nano")
    local = run.with_overrides({"model.source": "local", "model.local_path": "elsewhere"})
    trained, given = _by_stage("nano")["cache"], {s.stage: s for s in plan_run(local, RATES)}["cache"]
    suite = run.suite
    tokens = suite.total_steps * suite.batch_size * suite.context_length
    params = 12 * suite.d_model**2 * suite.n_layers + 2 * run.corpus.vocab_size * suite.d_model
    assert trained.seconds - given.seconds == pytest.approx(6 * params * tokens / RATES.forward_flops)
    assert any("trains the model suite" in note for note in trained.notes)


def test_the_scale_stage_is_the_other_sizes_and_the_seed_runs_whole_pipelines() -> None:
    run = get_preset("nano")
    scale = _by_stage("nano")["scale"]
    pipeline = ("corpus", "cache", "chain", "formation", "drift")
    sizes = [p for p in run.scale.presets if p != "nano"]
    size_seconds = sum(s.seconds for p in sizes for s in plan_run(get_preset(p), RATES) if s.stage in pipeline)
    # every model x chain seed, plus the warm-up control, less the one that is the scale study's own nano-s run
    n_variants = len(run.scale.model_seeds) * len(run.scale.chain_seeds) + 1 - 1
    assert f"{n_variants} seed-study run(s)" in scale.notes[0]
    assert scale.seconds > size_seconds > 0  # the seed runs add to the sizes
    no_seeds = {s.stage: s for s in plan_run(run.with_overrides({"scale.seed_preset": ""}), RATES)}["scale"]
    assert no_seeds.seconds == pytest.approx(size_seconds)
    alone = run.with_overrides({"scale.presets": (), "scale.seed_preset": ""})
    assert "scale" not in {s.stage for s in plan_run(alone, RATES)}


def test_the_crosscoder_is_planned_with_the_step_its_device_runs() -> None:
    # the sparse step on a CPU does one dense product (the encoder forward); the dense step on a GPU six
    run = get_preset("nano")
    cpu = {s.stage: s for s in plan_run(run, RATES)}["crosscoder"]
    gpu = {s.stage: s for s in plan_run(run, Rates("cuda", 1e11, 1e11))}["crosscoder"]
    cc = run.crosscoder
    trainings, d_sae, d_model = 4, 8 * 128, 128  # the crosscoder and its three controls
    flops = cc.train_contexts * run.cache.context_length * cc.epochs * trainings * d_sae * d_model
    flops *= len(run.crosscoder_steps)
    assert gpu.seconds - cpu.seconds == pytest.approx((12 - 2) * flops / RATES.sae_flops)


def test_only_the_stages_that_will_run_are_checked() -> None:
    # run_all.py --only formation on a paper preset must not be refused for the disk its scale study would need
    paper = get_preset("pythia-160m-l4")
    stages = plan_run(paper, RATES)
    assert [s.stage for s in planned_for(stages, ["formation", "drift"], paper)] == ["formation", "drift"]
    assert [s.stage for s in planned_for(stages, ["cache"], paper)] == ["corpus", "cache"]
    assert planned_for(stages, None, paper) == stages
    nano = get_preset("nano")
    assert [s.stage for s in planned_for(plan_run(nano, RATES), ["crosscoder"], nano)] == ["crosscoder", "statistics"]


def test_human_time_reads_seconds_minutes_then_hours() -> None:
    assert [human_time(s) for s in (5, 119, 125, 7199, 7200, 36000)] == [
        "5 s", "119 s", "2 min", "120 min", "2.0 h", "10.0 h"
    ]  # fmt: skip
