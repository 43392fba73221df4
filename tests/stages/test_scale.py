"""The scale study: its sizes, per-size figure keys, parameter counts, the stage hash, running sizes and the seed
study's variants (in this process or in one pool), its summary."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from saetrack import paths, store
from saetrack.config import PRESETS, RunConfig, get_preset
from saetrack.ledger.claim import HOLDS, Results
from saetrack.ledger.drift import every_size
from saetrack.pipeline import headless
from saetrack.pipeline.parallel import SIZE_STAGES, Job
from saetrack.stages import scale
from saetrack.stages.drift import drift_config_hash
from saetrack.stages.scale import (
    PAPER_FIGURE_KEYS,
    SizeResult,
    ensure_sizes,
    figure_keys,
    non_embedding_parameters,
    output_hashes,
    scale_config_hash,
    size_runs,
    study_variants,
    summary_numbers,
    write_summary,
)
from saetrack.stages.scale.seeds import SEEDS_DIR


def test_size_runs_are_the_presets_with_this_run_itself(run: RunConfig) -> None:
    changed = run.with_overrides({"chain.l1_coefficient": 2e-3})
    sizes = size_runs(changed)
    assert [s.preset for s in sizes] == ["smoke-s", "smoke-m", "smoke"]
    assert sizes[-1] is changed and sizes[0] == get_preset("smoke-s")  # other sizes use their preset's defaults
    alone = get_preset("pythia-160m-l4").with_overrides({"scale.presets": ()})
    assert [s.preset for s in size_runs(alone)] == ["pythia-160m-l4"]


def test_figure_keys_go_to_the_first_two_other_sizes() -> None:
    assert figure_keys(["nano-s", "nano-m", "nano"], "nano") == {
        "nano-s": PAPER_FIGURE_KEYS[0],
        "nano-m": PAPER_FIGURE_KEYS[1],
    }
    assert figure_keys(["a", "b", "c", "d"], "b") == {"a": ("09", "10", "11", "12"), "c": ("13", "14", "15", "16")}
    assert figure_keys(["nano"], "nano") == {}


def test_non_embedding_parameters_by_hand() -> None:
    # d 64, d_mlp 256: attention 4*64^2 + 4*64, MLP 2*64*256 + 256 + 64, two LayerNorms 4*64; two blocks
    per_block = 4 * 64 * 64 + 4 * 64 + 2 * 64 * 256 + 256 + 64 + 4 * 64
    assert non_embedding_parameters(64, 2) == 2 * per_block == 99_968
    assert non_embedding_parameters(128, 4) == 793_088  # nano
    assert non_embedding_parameters(64, 2, d_mlp=128) < non_embedding_parameters(64, 2)


def test_scale_hash_covers_the_drift_stage_of_every_size(run: RunConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    assert output_hashes(run) == {paths.SCALE_DIR: scale_config_hash(run)}
    changed = run.with_overrides({"drift.formed_fraction": 0.9})
    assert drift_config_hash(changed) != drift_config_hash(run)
    assert scale_config_hash(changed) != scale_config_hash(run)
    before = scale_config_hash(run)
    original = PRESETS["smoke-s"]
    monkeypatch.setitem(PRESETS, "smoke-s", lambda: original().with_overrides({"drift.formed_fraction": 0.9}))
    assert scale_config_hash(run) != before  # another size's drift stage changed: the study is not current


def test_scale_hash_covers_the_seed_study(run: RunConfig) -> None:
    before = scale_config_hash(run)
    changes = (
        {"scale.chain_seeds": (0, 2)},
        {"scale.model_seeds": (0,)},
        {"scale.warmup_steps": 16},
        {"scale.warmup_steps": None},
        {"scale.seed_preset": ""},
        {"scale.seed_preset": "smoke-m"},
    )
    for change in changes:
        assert scale_config_hash(run.with_overrides(change)) != before, change
    assert scale_config_hash(run.with_overrides({"scale.parallel_sizes": 1})) == before  # how it runs is not an input


def _variant_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Path, list[Path]]]:
    """Seed variants run here record (name, folder, lenders) instead of running."""
    calls: list[tuple[str, Path, list[Path]]] = []

    def fake_adopt(variant: RunConfig, folder: Path, lenders: list[Path]) -> list[str]:
        calls.append((f"m{variant.seed}-c{variant.chain_seed}", folder, list(lenders)))
        return []

    monkeypatch.setattr(headless, "adopt", fake_adopt)
    monkeypatch.setattr(headless, "run_headless", lambda variant, folder, device: 0.5)
    return calls


def test_ensure_sizes_runs_other_sizes_in_their_own_folders(
    run: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(paths.RUNS_ENV, str(tmp_path / "runs"))
    calls: list[tuple[str, Path, dict[str, Any]]] = []

    def run_pipeline(size: RunConfig, folder: Path, **kw: Any) -> float:
        calls.append((size.preset, folder, kw))
        return 0.5

    variant_calls = _variant_calls(monkeypatch)
    serial = run.with_overrides({"scale.parallel_sizes": 1})
    lines: list[str] = []
    folders = ensure_sizes(serial, tmp_path, run_pipeline=run_pipeline, force=True, log=lines.append)
    runs = tmp_path / "runs"
    assert folders == {"smoke-s": runs / "smoke-s", "smoke-m": runs / "smoke-m", "smoke": tmp_path}
    assert all(folder.is_dir() for folder in folders.values())
    assert [preset for preset, _, _ in calls] == ["smoke", "smoke-s", "smoke-m"]  # this run's own size first
    own, other = calls[0][2], calls[1][2]
    # other sizes run notebooks 01-04 only: the scale study itself and the crosscoder are this run's
    assert own["outputs_only"] is True and own["only"] == SIZE_STAGES and "force" not in own
    assert other["force"] is True and other["only"] == SIZE_STAGES
    assert SIZE_STAGES == ("cache", "chain", "formation", "drift")
    assert "[scale] size smoke-m: pipeline current after 0.5 s" in lines
    # then the seed variants (smoke-s: m0-c0 is the size's own run), each may adopt from every variant's folder
    assert [name for name, _, _ in variant_calls] == ["m0-c1", "m1-c0", "m1-c1", "m0-c0"]  # the last: warm-up
    seeds = tmp_path / SEEDS_DIR
    assert [folder for _, folder, _ in variant_calls] == [seeds / n for n in ("m0-c1", "m1-c0", "m1-c1",
                                                                              "warmup12-m0-c0")]  # fmt: skip
    assert variant_calls[0][2] == [runs / "smoke-s", *(seeds / n for n in ("m0-c1", "m1-c0", "m1-c1",
                                                                           "warmup12-m0-c0"))]  # fmt: skip
    assert lines[-1] == "[scale] seed variant warmup12-m0-c0: current after 0.5 s"


def test_ensure_sizes_skips_finished_variants_that_still_lend(
    run: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(paths.RUNS_ENV, str(tmp_path / "runs"))
    variant_calls = _variant_calls(monkeypatch)
    finished = next(v for v in study_variants(run, tmp_path) if v.name == "m1-c0")
    store.write_manifest(finished.folder / paths.DRIFT_DIR, stage="drift", config={},
                         config_hash=drift_config_hash(finished.run))  # fmt: skip
    serial = run.with_overrides({"scale.parallel_sizes": 1})
    ensure_sizes(serial, tmp_path, run_pipeline=lambda *a, **kw: 0.1, log=lambda line: None)
    assert [folder.name for _, folder, _ in variant_calls] == ["m0-c1", "m1-c1", "warmup12-m0-c0"]
    assert finished.folder in variant_calls[1][2]  # m1-c1 may adopt m1-c0's model


def test_ensure_sizes_runs_sizes_and_variants_in_one_pool(
    run: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(paths.RUNS_ENV, str(tmp_path / "runs"))
    pools: list[tuple[list[Job], int]] = []
    monkeypatch.setattr(scale, "run_jobs", lambda jobs, parallel, log: pools.append((list(jobs), parallel)))
    ensure_sizes(run, tmp_path, run_pipeline=lambda *a, **kw: 0.1, log=lambda line: None)
    ((jobs, parallel),) = pools
    assert parallel == run.scale.parallel_sizes == 2
    assert [job.name for job in jobs] == ["smoke-s", "smoke-m", "m0-c1", "m1-c0", "m1-c1", "warmup12-m0-c0"]
    after = {job.name: job.after for job in jobs}
    # the variant on the size's own model waits for that size and may adopt from its folder
    assert after == {"smoke-s": (), "smoke-m": (), "m0-c1": ("smoke-s",), "m1-c0": (), "m1-c1": ("m1-c0",),
                     "warmup12-m0-c0": ()}  # fmt: skip
    m0c1 = next(job for job in jobs if job.name == "m0-c1")
    assert str(tmp_path / "runs" / "smoke-s") in m0c1.command[m0c1.command.index("--adopt") :]


def test_study_variants_live_beside_the_sizes(run: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(paths.RUNS_ENV, str(tmp_path / "runs"))
    variants = study_variants(run, tmp_path / "smoke")
    assert variants[0].shared and variants[0].folder == tmp_path / "runs" / "smoke-s"
    assert variants[1].folder == tmp_path / "smoke" / SEEDS_DIR / "m0-c1"
    assert study_variants(run.with_overrides({"scale.seed_preset": ""}), tmp_path) == []


def test_summary_numbers_carry_what_the_every_size_claim_reads(
    run: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_formation_numbers(formation: Any) -> dict[str, Any]:
        return {"activation_cosine": {"concept_rise": formation}, "normalised_progress": {"concept": {
            "first": 0.1, "final": 0.1 + formation}}}  # fmt: skip

    monkeypatch.setattr(scale, "formation_numbers", fake_formation_numbers)
    sizes = [SizeResult(p, run, tmp_path, formation=rise, drift=None, numbers={
        "preset": p, "drift": {"median_cosine_to_final": {"first": {"value": 0.3}}}}) for p, rise in
        (("a", 0.2), ("b", 0.3))]  # fmt: skip
    numbers = summary_numbers(sizes)
    assert [s["progress_activation_cosine"]["concept_rise"] for s in numbers["sizes"]] == [0.2, 0.3]
    assert numbers["sizes"][1]["normalised_progress"]["concept"]["final"] == pytest.approx(0.4)
    assert every_size(Results({"scale": numbers})).verdict == HOLDS


def test_size_result_label_and_formed_share(run: RunConfig, tmp_path: Path) -> None:
    drift = SimpleNamespace(steps=np.array([0, 1, 2]), formed=np.array([[0, 0], [1, 0], [1, 1]], dtype=bool))
    numbers = {"non_embedding_parameters": 99_968, "d_model": 64, "n_layers": 2}
    result = SizeResult("nano-s", run, tmp_path, formation=None, drift=drift, numbers=numbers)
    assert result.label == "nano-s (d64, 2 layers, 100k non-embedding)"
    np.testing.assert_allclose(result.formed_share(), [0.0, 0.5, 1.0])
    big = SizeResult("x", run, tmp_path, None, drift, {**numbers, "non_embedding_parameters": 1_530_000})
    assert big.label == "x (d64, 2 layers, 1.5M non-embedding)"
    empty = SimpleNamespace(steps=np.array([0, 1]), formed=np.zeros((2, 0), dtype=bool))
    np.testing.assert_array_equal(SizeResult("y", run, tmp_path, None, empty, numbers).formed_share(), [0.0, 0.0])


def test_write_summary_writes_the_study_atomically_with_its_hash(run: RunConfig, tmp_path: Path) -> None:
    manifest = write_summary(run, tmp_path, {"sizes": [{"preset": "smoke"}]}, seconds=12.5)
    folder = tmp_path / paths.SCALE_DIR
    assert store.read_json(folder / "summary.json") == {"sizes": [{"preset": "smoke"}]}
    assert manifest == store.read_manifest(folder)
    assert manifest["config_hash"] == scale_config_hash(run) and manifest["timings_s"]["total"] == 12.5
    assert manifest["config"] == {"presets": ["smoke-s", "smoke-m", "smoke"]}
    assert store.manifest_is_current(folder, scale_config_hash(run), verify_files=True)
