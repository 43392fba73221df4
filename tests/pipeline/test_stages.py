"""The pipeline as data: stages in order with their notebooks and outputs, when a stage is current, run_stages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from saetrack import paths, store
from saetrack.config import RunConfig
from saetrack.notebooks import NotebookRun
from saetrack.pipeline import stages as pipeline_module
from saetrack.pipeline.stages import STAGES, get_stage, run_stages, stage_hashes
from saetrack.stages import cache, chain, crosscoder, drift, explorer, formation, scale
from saetrack.stages.chain import comparison
from saetrack.stages.crosscoder import method_comparison, statistics
from saetrack.stages.drift import density


def test_output_hashes_come_from_the_stage_modules(run: RunConfig) -> None:
    assert get_stage("chain").outputs(run) == (paths.CHAIN_DIR, paths.BASELINE_DIR, paths.COMPARISON_DIR)
    expected = {}
    for module in (cache, chain, comparison, formation, drift, density, scale, crosscoder, statistics,
                   method_comparison, explorer):  # fmt: skip
        expected.update(module.output_hashes(run))
    assert stage_hashes(run) == expected
    assert list(stage_hashes(run)) == ["corpus", "model", "cache", "chain", "baseline", "comparison", "formation",
                                       "drift", "density", "scale", "crosscoder", "statistics",
                                       "crosscoder_vs_chain", "explorer"]  # fmt: skip


def test_a_stage_that_is_off_is_skipped_with_its_switch_named(run: RunConfig, tmp_path: Path) -> None:
    off = run.with_overrides({"crosscoder.enabled": False})
    assert not get_stage("crosscoder").enabled(off) and get_stage("crosscoder").enabled(run)
    lines: list[str] = []
    seconds = run_stages(off, tmp_path, only=["crosscoder"], log=lines.append)
    assert lines == ["[smoke:crosscoder] off for this preset (crosscoder.enabled = False), skipped"]
    assert seconds < 5 and not (tmp_path / paths.CROSSCODER_DIR).exists()


def _write_outputs(stage_name: str, run: RunConfig, run_dir: Path) -> None:
    """Finished manifests for every output folder of the stage (what its notebook would leave)."""
    for folder, digest in get_stage(stage_name).output_hashes(run).items():
        store.write_manifest(run_dir / folder, stage=folder, config={}, config_hash=digest)


def test_current_needs_matching_outputs_and_the_notebook_marker(run: RunConfig, tmp_path: Path) -> None:
    stage = get_stage("formation")
    assert not stage.outputs_current(run, tmp_path) and not stage.is_current(run, tmp_path)
    _write_outputs("formation", run, tmp_path)
    assert stage.outputs_current(run, tmp_path) and not stage.is_current(run, tmp_path)  # figures not drawn yet
    stage.mark_done(run, tmp_path, 12.34)
    assert stage.marker(tmp_path) == tmp_path / paths.NOTEBOOKS_DIR / "03_feature_formation.done.json"
    assert store.read_json(stage.marker(tmp_path)) == {"outputs": stage.output_hashes(run), "seconds": 12.3}
    assert stage.is_current(run, tmp_path)
    other = run.with_overrides({"formation.top_k": 10})
    assert not stage.outputs_current(other, tmp_path) and not stage.is_current(other, tmp_path)
    stage.marker(tmp_path).write_text('{"outputs": {"formation"')  # a marker cut short by a kill: not current
    assert not stage.is_current(run, tmp_path)


def test_run_stages_skips_current_stages_and_runs_the_rest(
    run: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    executed: list[tuple[str, dict[str, Any]]] = []

    def fake_notebook(name: str, parameters: dict[str, Any], run_dir: Path, **kw: Any) -> NotebookRun:
        executed.append((name, parameters))
        _write_outputs(next(s.name for s in STAGES if s.notebook == name), run, Path(run_dir))
        return NotebookRun(name, Path(run_dir) / paths.NOTEBOOKS_DIR / name, 1.0)

    monkeypatch.setattr(pipeline_module, "run_notebook", fake_notebook)
    lines: list[str] = []
    run_stages(run, tmp_path, only=["formation", "drift"], log=lines.append)
    assert [name for name, _ in executed] == ["03_feature_formation.ipynb", "04_feature_drift.ipynb"]
    parameters = executed[0][1]
    assert (parameters["PRESET"], parameters["RUN_DIR"], parameters["FORCE"]) == ("smoke", str(tmp_path), False)
    assert lines[0].startswith("[smoke:formation] running 03_feature_formation.ipynb")
    assert lines[1].startswith("[smoke:formation] done in 1.0 s")
    run_stages(run, tmp_path, only=["formation", "drift"], log=lines.append)  # both current now
    assert len(executed) == 2 and lines[-1] == "[smoke:drift] up to date, nothing to do (outputs match the config)"
    run_stages(run, tmp_path, only=["formation", "drift"], skip=["drift"], rerun=True, log=lines.append)
    assert [name for name, _ in executed[2:]] == ["03_feature_formation.ipynb"]  # rerun: notebook again
    run_stages(run, tmp_path, only=["drift"], force=True, log=lines.append)
    assert executed[-1][1]["FORCE"] is True
    with pytest.raises(KeyError, match=r"\['train'\] are not stages"):
        run_stages(run, tmp_path, only=["train"], log=lines.append)


def test_last_executions_read_each_notebooks_marker(run: RunConfig, tmp_path: Path) -> None:
    # --plan prints these beside the projection: the wall time of each notebook's last execution in the run directory
    assert pipeline_module.last_executions(run, tmp_path) == []
    get_stage("chain").mark_done(run, tmp_path, 419.74)
    get_stage("cache").mark_done(run.with_overrides({"seed": 7}), tmp_path, 552.8)
    (tmp_path / paths.NOTEBOOKS_DIR / "03_feature_formation.done.json").write_text("not json")
    assert pipeline_module.last_executions(run, tmp_path) == [("cache", 552.8, False), ("chain", 419.7, True)]
