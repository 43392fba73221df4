"""The seed study: its variants (model x chain seeds and the warm-up control), their headless jobs and hashes, and
its numbers from planted phase curves whose segment counts and boundaries are known."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from saetrack import store
from saetrack.analysis import phases as ph
from saetrack.config import RunConfig, get_preset
from saetrack.ledger.claim import FAILS, HOLDS, Results
from saetrack.ledger.paper import three_phases, warmup_not_boundary
from saetrack.stages.drift import drift_config_hash
from saetrack.stages.drift.phase_fits import fit_perspectives, phase_records
from saetrack.stages.scale.seeds import (
    LIGHT_OVERRIDES,
    SEEDS_DIR,
    _warmup_numbers,
    seed_numbers,
    seed_variants,
    variant_hashes,
    variant_jobs,
)

NAMES = ["m0-c0", "m0-c1", "m1-c0", "m1-c1", "warmup12-m0-c0"]


@pytest.fixture
def variants(run: RunConfig, tmp_path: Path) -> list:
    """The smoke preset's seed study (smoke-s, model seeds 0 and 1 x chain seeds 0 and 1, warm-up 12 steps), the
    size smoke-s run in ``tmp_path / "smoke-s"``."""
    return seed_variants(run, tmp_path, {"smoke-s": tmp_path / "smoke-s", "smoke": tmp_path})


def test_seed_variants_are_every_seed_pair_then_the_warmup_control(run: RunConfig, tmp_path: Path, variants) -> None:
    assert [v.name for v in variants] == NAMES
    size = get_preset("smoke-s")
    shared = variants[0]
    assert shared.shared and shared.run == size and shared.folder == tmp_path / "smoke-s"  # the size's own run
    assert [v.shared for v in variants] == [True, False, False, False, False]
    assert [v.model for v in variants] == ["m0-c0", "m0-c0", "m1-c0", "m1-c0", "warmup12-m0-c0"]
    for v in variants[1:]:
        assert v.folder == tmp_path / SEEDS_DIR / v.name and v.run.preset == "smoke-s"
        assert (v.run.seed, v.run.chain.seed, v.run.chain_seed) == (v.model_seed, v.chain_seed, v.chain_seed)
        # the light overrides: no noise floor, UMAP, seed control or crosscoder in a variant
        assert v.run.drift.noise_floor_links == 0 and v.run.chain.seed_control == 0 and not v.run.crosscoder.enabled
        assert v.run.formation.umap_token_features == v.run.formation.umap_concept_features == 0
        assert v.run.chain.l1_coefficient == size.chain.l1_coefficient  # otherwise the size's own settings
    assert [(v.model_seed, v.chain_seed) for v in variants] == [(0, 0), (0, 1), (1, 0), (1, 1), (0, 0)]
    control = variants[-1]
    assert control.is_warmup_control and not any(v.is_warmup_control for v in variants[:-1])
    assert control.run.suite.warmup_steps == control.warmup_steps == 12
    assert {v.warmup_steps for v in variants[:-1]} == {size.suite.warmup_steps} == {4}
    assert set(LIGHT_OVERRIDES) == {
        "drift.noise_floor_links",
        "formation.umap_token_features",
        "formation.umap_concept_features",
        "chain.seed_control",
        "crosscoder.enabled",
    }


def test_seed_variants_without_the_size_run_or_the_study(run: RunConfig, tmp_path: Path) -> None:
    alone = seed_variants(run, tmp_path, {})  # the size is not among the study's: the default seeds run too
    assert not any(v.shared for v in alone) and alone[0].folder == tmp_path / SEEDS_DIR / "m0-c0"
    assert alone[0].model == "m0-c0" and alone[0].run.drift.noise_floor_links == 0
    assert seed_variants(run.with_overrides({"scale.seed_preset": ""}), tmp_path, {}) == []
    no_control = seed_variants(
        run.with_overrides({"scale.warmup_steps": None, "scale.chain_seeds": (5,)}), tmp_path, {}
    )
    assert [v.name for v in no_control] == ["m0-c5", "m1-c5"] and no_control[1].model == "m1-c5"
    own = get_preset("smoke-s").with_overrides({"scale.seed_preset": "smoke-s", "scale.warmup_steps": None})
    mine = seed_variants(own, tmp_path, {"smoke-s": tmp_path})
    assert mine[0].shared and mine[0].run is own and mine[0].folder == tmp_path  # this run is the shared variant


def test_variant_jobs_wait_for_the_model_they_share_and_may_adopt_it(variants, tmp_path: Path) -> None:
    jobs = {job.name: job for job in variant_jobs(variants, {"smoke-s", "smoke-m"}, "cpu")}
    assert list(jobs) == NAMES[1:]  # the shared variant is the size's own job
    size_folder = tmp_path / "smoke-s"
    expected_after = {"m0-c1": ("smoke-s",), "m1-c0": (), "m1-c1": ("m1-c0",), "warmup12-m0-c0": ()}
    lenders = {"m0-c1": [size_folder, size_folder], "m1-c0": [size_folder],
               "m1-c1": [size_folder, tmp_path / SEEDS_DIR / "m1-c0"], "warmup12-m0-c0": [size_folder]}  # fmt: skip
    by_name = {v.name: v for v in variants}
    for name, job in jobs.items():
        v = by_name[name]
        assert job.after == expected_after[name], name
        assert job.log_path == v.folder / "headless.log"
        config = v.folder / "config.json"
        assert RunConfig.from_dict(store.read_json(config)) == v.run  # its config, written for the process
        assert job.command == (sys.executable, "-m", "saetrack.pipeline.headless", "--config", str(config),
                               "--run-dir", str(v.folder), "--device", "cpu", "--adopt",
                               *map(str, lenders[name]))  # fmt: skip
    # the size already current (not in the pool): nothing to wait for, still a lender
    alone = {job.name: job for job in variant_jobs(variants, set(), "cuda")}
    assert alone["m0-c1"].after == () and str(size_folder) in alone["m0-c1"].command
    assert alone["m1-c0"].command[alone["m1-c0"].command.index("--device") + 1] == "cuda"


def test_variant_jobs_for_pending_variants_only(variants, tmp_path: Path) -> None:
    # m1-c0 finished earlier: m1-c1 does not wait for it (it has no job) but may adopt its model
    jobs = variant_jobs(variants, {"smoke-s"}, "cpu", pending={"m0-c1", "m1-c1"})
    assert [(job.name, job.after) for job in jobs] == [("m0-c1", ("smoke-s",)), ("m1-c1", ())]
    assert str(tmp_path / SEEDS_DIR / "m1-c0") in jobs[1].command
    assert not (tmp_path / SEEDS_DIR / "m1-c0" / "config.json").exists()  # no job: nothing written for it


def test_variant_hashes_are_each_variants_drift_hash(variants) -> None:
    hashes = variant_hashes(variants)
    assert list(hashes) == NAMES and hashes["m0-c0"] == drift_config_hash(get_preset("smoke-s"))
    assert all(hashes[v.name] == drift_config_hash(v.run) for v in variants)
    assert len(set(hashes.values())) == len(NAMES)  # every seed and the warm-up change the drift stage's inputs


STEPS = np.array([0, 1, 2, 4, 8, 16, 32, 64, 100, 200, 300, 400])
#: Planted curves on the checkpoint index: drift always three segments, its knots moving with the seeds and moved
#: by 3 checkpoints by the long warm-up; progress three segments except m1-c1's, which has two (one knot at 5).
DRIFT_KNOTS = {"m0-c0": (3, 7), "m0-c1": (4, 7), "m1-c0": (3, 8), "m1-c1": (5, 8), "warmup12-m0-c0": (6, 9)}
PROGRESS_KNOTS = {"m0-c0": (3, 7), "m0-c1": (3, 7), "m1-c0": (3, 7), "m1-c1": (5,), "warmup12-m0-c0": (3, 7)}


def _planted(knots: tuple[int, ...]) -> np.ndarray:
    values = [0.2, 0.3, 0.9, 1.0] if len(knots) == 2 else [0.1, 0.2, 0.6]
    return np.interp(np.arange(len(STEPS)), [0, *knots, len(STEPS) - 1], values)


def _results(variants: list) -> dict[str, Any]:
    """DriftResult-like objects: the steps, both phase curves and the drift stage's phase records of each."""
    out = {}
    for v in variants:
        curves = {"drift": _planted(DRIFT_KNOTS[v.name]), "progress": _planted(PROGRESS_KNOTS[v.name])}
        records = phase_records(fit_perspectives(v.run, STEPS, curves), STEPS)
        out[v.name] = SimpleNamespace(steps=STEPS, median_cosine=curves["drift"], progress_curve=curves["progress"],
                                      manifest={"phases": records})  # fmt: skip
    return out


def test_seed_numbers_on_planted_curves(run: RunConfig, variants) -> None:
    results = _results(variants)
    numbers = seed_numbers(run, variants, results)
    assert json.loads(json.dumps(numbers, allow_nan=False)) == numbers  # plain JSON, keys already strings
    assert (numbers["preset"], numbers["model_seeds"], numbers["chain_seeds"]) == ("smoke-s", [0, 1], [0, 1])
    assert numbers["steps"] == STEPS.tolist() and [r["name"] for r in numbers["runs"]] == NAMES
    m11 = numbers["runs"][3]
    assert (m11["model_seed"], m11["chain_seed"], m11["warmup_steps"]) == (1, 1, 4)
    assert m11["phases"]["drift"]["index"] == {"preferred": 3, "at_cap": False, "three_index": [5, 8],
                                               "three_step": [16, 100]}  # fmt: skip
    assert m11["phases"]["progress"]["index"]["preferred"] == 2
    assert set(m11["phases"]["drift"]) == set(ph.PHASE_AXES)
    drift, progress = numbers["stability"]["drift"]["index"], numbers["stability"]["progress"]["index"]
    assert drift["runs"] == 4 and drift["preferred_counts"] == {"3": 4} and drift["share_three"] == 1.0
    assert drift["emergent_index_range"] == [3, 5] and drift["convergent_index_range"] == [7, 8]
    assert drift["emergent_steps"] == [4, 8, 4, 16] and drift["convergent_steps"] == [64, 64, 100, 100]
    assert progress["preferred_counts"] == {"2": 1, "3": 3} and progress["share_three"] == 0.75
    assert progress["share_at_cap"] == 0.0
    seeds = [results[n].median_cosine for n in NAMES[:4]]  # the warm-up control is not a seed run
    np.testing.assert_allclose(numbers["curves"]["drift"]["mean"], np.mean(seeds, axis=0))
    np.testing.assert_allclose(numbers["curves"]["drift"]["sd"], np.std(seeds, axis=0, ddof=1))
    found = ph.segments_within_noise(np.arange(len(STEPS), dtype=float), np.stack(seeds), min_phase=2, max_segments=6)
    noise = numbers["within_noise"]["drift"]["index"]
    assert noise["segments"] == found["segments"] and noise["runs"] == 4
    assert noise["chi2"] == {str(k): v for k, v in found["chi2"].items()}
    assert noise["threshold"] == {str(k): v for k, v in found["threshold"].items()}


def test_the_warmup_control_and_the_ledger_read_the_seed_numbers(run: RunConfig, variants) -> None:
    numbers = seed_numbers(run, variants, _results(variants))
    control = numbers["warmup_control"]
    assert (control["default_warmup"], control["control_warmup"]) == (4, 12)
    assert control["drift"] == {"default_emergent_index": 3, "default_emergent_step": 4, "control_emergent_index": 6,
                                "control_emergent_step": 32, "shift_checkpoints": 3, "seed_range_checkpoints": 2,
                                "default_preferred": 3, "control_preferred": 3}  # fmt: skip
    assert control["progress"]["shift_checkpoints"] == 0 and control["progress"]["seed_range_checkpoints"] == 1
    ledger = Results({"seeds": json.loads(json.dumps(numbers))})
    assert three_phases(ledger).verdict == HOLDS and three_phases(ledger).number == 7 / 8  # 7 of 8 fits
    assert warmup_not_boundary(ledger).verdict == FAILS  # drift's boundary moved 3 > its seed range 2


def test_seed_numbers_with_one_seed_run_and_no_control(run: RunConfig, variants) -> None:
    one = [variants[0]]
    numbers = seed_numbers(run, one, _results(one))
    assert numbers["curves"] == {} and numbers["within_noise"] == {} and numbers["warmup_control"] is None
    assert numbers["stability"]["drift"]["index"]["emergent_index_range"] == [3, 3]


def _record(first: int | None, preferred: int = 3) -> dict[str, Any]:
    entry = {"preferred": preferred, "at_cap": False, "three_index": [first, None if first is None else first + 4],
             "three_step": [None if first is None else 10 * first, None]}  # fmt: skip
    return {"phases": {"drift": {"index": entry}, "progress": {"index": entry}}}


def test_warmup_numbers_shift_and_range(variants) -> None:
    seeds, control = variants[:4], variants[4]
    records = {"m0-c0": _record(3), "m0-c1": _record(4), "m1-c0": _record(None), "m1-c1": _record(6),
               control.name: _record(2)}  # fmt: skip
    out = _warmup_numbers(control, seeds, records)["drift"]
    assert out["shift_checkpoints"] == -1  # control 2 against the default run with the same seeds (m0-c0) at 3
    assert out["seed_range_checkpoints"] == 3  # 3..6; a run without a three-segment fit is left out
    assert (out["default_emergent_step"], out["control_emergent_step"]) == (30, 20)
    records[control.name] = _record(None, preferred=2)
    out = _warmup_numbers(control, seeds, records)["drift"]
    assert out["shift_checkpoints"] is None and out["control_preferred"] == 2
    for name in NAMES[:4]:
        records[name] = _record(None)
    assert _warmup_numbers(control, seeds, records)["progress"]["seed_range_checkpoints"] is None
