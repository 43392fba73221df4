"""The scale study: its sizes, per-size figure keys, parameter counts, the stage hash, running sizes, its summary."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from saetrack import paths, store
from saetrack.config import PRESETS, RunConfig, get_preset
from saetrack.pipeline.parallel import SIZE_STAGES
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
    write_summary,
)


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


def test_ensure_sizes_runs_other_sizes_in_their_own_folders(
    run: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(paths.RUNS_ENV, str(tmp_path / "runs"))
    calls: list[tuple[str, Path, dict[str, Any]]] = []

    def run_pipeline(size: RunConfig, folder: Path, **kw: Any) -> float:
        calls.append((size.preset, folder, kw))
        return 0.5

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
    assert lines[-1] == "[scale] size smoke-m: pipeline current after 0.5 s"


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
