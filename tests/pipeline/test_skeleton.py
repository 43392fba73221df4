"""The shared stage skeleton: skip when current, rebuild under force, resume finished parts, write atomically."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from saetrack import paths, store
from saetrack.pipeline.skeleton import StageRun, current_manifest, finished_manifest, run_stage


def _builder(calls: list[StageRun], seen: dict[str, Any] | None = None):
    """A build function that records its StageRun, writes one file and finishes the stage."""

    def build(stage: StageRun) -> dict[str, Any]:
        calls.append(stage)
        if seen is not None:
            seen["existing"] = sorted(p.name for p in stage.folder.iterdir()) if stage.folder.exists() else None
        stage.folder.mkdir(parents=True, exist_ok=True)
        digest = store.save_npy(stage.folder / "x.npy", np.arange(3))
        return stage.finish(config={"n": 3}, files={"x.npy": digest}, timings={"work": 0.25}, answer=42)

    return build


def test_current_stage_is_returned_without_building(tmp_path: Path) -> None:
    folder = tmp_path / "stage"
    calls: list[StageRun] = []
    first = run_stage(folder, "demo", "h1", _builder(calls))
    assert len(calls) == 1 and first["answer"] == 42 and first["config_hash"] == "h1"
    assert (calls[0].folder, calls[0].stage, calls[0].config_hash, calls[0].force) == (folder, "demo", "h1", False)
    assert run_stage(folder, "demo", "h1", _builder(calls)) == first  # current: nothing runs
    assert len(calls) == 1
    assert current_manifest(folder, "h1") == first and current_manifest(folder, "h2") is None
    assert current_manifest(tmp_path / "absent", "h1") is None
    run_stage(folder, "demo", "h2", _builder(calls))  # another config: rebuilt
    assert len(calls) == 2 and store.read_manifest(folder)["config_hash"] == "h2"


def test_force_rebuilds_and_clear_on_force_starts_from_an_empty_folder(tmp_path: Path) -> None:
    folder = tmp_path / "stage"
    calls: list[StageRun] = []
    run_stage(folder, "demo", "h1", _builder(calls))
    (folder / "stale.txt").write_text("old part")
    seen: dict[str, Any] = {}
    run_stage(folder, "demo", "h1", _builder(calls, seen), force=True)
    assert len(calls) == 2 and calls[-1].force
    assert "stale.txt" in seen["existing"]  # force alone keeps what is there (parts may be checked)
    run_stage(folder, "demo", "h1", _builder(calls, seen), force=True, clear_on_force=True)
    assert len(calls) == 3 and seen["existing"] is None  # the folder was deleted before build ran
    assert not (folder / "stale.txt").exists()


def test_finished_part_needs_the_same_hash_and_no_force(tmp_path: Path) -> None:
    stage = StageRun(tmp_path / "cache", "cache", "h1")
    with stage.part("step4") as tmp:
        written = stage.write_part_manifest(tmp, stage="cache-step", config={"step": 4}, timings={"total": 1.0})
    assert written["config_hash"] == "h1" and written["stage"] == "cache-step"
    assert stage.finished_part("step4") == store.read_manifest(tmp_path / "cache" / "step4")
    assert stage.finished_part("step8") is None  # never written
    assert StageRun(tmp_path / "cache", "cache", "h2").finished_part("step4") is None  # another config
    assert StageRun(tmp_path / "cache", "cache", "h1", force=True).finished_part("step4") is None


def test_part_and_atomic_leave_nothing_when_the_block_raises(tmp_path: Path) -> None:
    stage = StageRun(tmp_path / "chain", "chain", "h1")
    with pytest.raises(RuntimeError), stage.part("step2") as tmp:
        (tmp / "sae_weights.safetensors").write_bytes(b"half")
        raise RuntimeError("killed")
    assert not (tmp_path / "chain" / "step2").exists()
    assert [p for p in (tmp_path / "chain").iterdir()] == []  # no temporary folder either
    with pytest.raises(RuntimeError), StageRun(tmp_path / "whole", "formation", "h1").atomic() as tmp:
        (tmp / "arrays.npz").write_bytes(b"half")
        raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chain"]
    with stage.part("step2") as tmp:
        (tmp / "a.txt").write_text("done")
    assert (tmp_path / "chain" / "step2" / "a.txt").read_text() == "done"


def test_finish_records_the_total_time_into_the_folder_asked(tmp_path: Path) -> None:
    stage = StageRun(tmp_path / "formation", "formation", "h1", started=time.perf_counter() - 2.0)
    with stage.atomic() as tmp:
        (tmp / "a.txt").write_text("x")
        manifest = stage.finish(into=tmp, config={"k": 1}, files={"a.txt": "d"}, timings={"umap": 0.5}, extra=[1])
    assert manifest["timings_s"]["total"] >= 2.0 and manifest["timings_s"]["umap"] == 0.5
    assert manifest["stage"] == "formation" and manifest["extra"] == [1] and manifest["config"] == {"k": 1}
    assert store.read_manifest(tmp_path / "formation") == manifest
    assert sorted(p.name for p in (tmp_path / "formation").iterdir()) == ["a.txt", paths.MANIFEST]
    given = StageRun(tmp_path / "other", "other", "h1").finish(config={}, timings={"total": 7.0})
    assert given["timings_s"]["total"] == 7.0  # a given total wins


def test_finished_manifest_names_the_folder_and_the_notebook_to_run(tmp_path: Path) -> None:
    folder = tmp_path / "drift"
    with pytest.raises(store.StaleArtifactError, match=r"no finished drift stage at .*drift; run notebook 04 first"):
        finished_manifest(folder, "h1", "drift stage", "04")
    store.write_manifest(folder, stage="drift", config={}, config_hash="h1")
    assert finished_manifest(folder, "h1", "drift stage", "04")["config_hash"] == "h1"
    assert finished_manifest(folder, None, "drift stage", "04")["stage"] == "drift"  # no config to check against
    with pytest.raises(store.StaleArtifactError, match=r"another config \(hash h1, expected h2\); rerun notebook 04"):
        finished_manifest(folder, "h2", "drift stage", "04")
