"""The explorer stage (notebook 07) on the session's smoke run: what it writes, that it is skipped when current, that
its data say what the run API says, and that it refuses a formation stage that no longer matches the chain."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from saetrack import paths
from saetrack.api import open_run
from saetrack.config import get_preset
from saetrack.results import read_results
from saetrack.stages.explorer import (
    build_explorer,
    explorer_config_hash,
    load_explorer_manifest,
    output_hashes,
    publish_explorer,
    summary_numbers,
)
from saetrack.stages.explorer.site import checkpoint_file, feature_file

pytestmark = pytest.mark.slow


def _payload(path: Path) -> tuple[str, object]:
    """The key and payload of a data script ``saetrack.receive("key",{...});``."""
    text = path.read_text(encoding="utf-8")
    assert text.startswith("saetrack.receive(") and text.endswith(");\n")
    key, _, body = text[len("saetrack.receive(") : -3].partition(",")
    return json.loads(key), json.loads(body)


@pytest.fixture(scope="module")
def smoke_run_copy(smoke_pipeline: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the finished smoke run (so these tests may rebuild and break it)."""
    target = tmp_path_factory.mktemp("explorer_run") / "smoke"
    shutil.copytree(smoke_pipeline[0], target, ignore=shutil.ignore_patterns("seeds", "notebooks"))
    return target


def test_the_pipeline_built_and_recorded_the_explorer(smoke_pipeline: tuple[Path, str]) -> None:
    run_dir, printed = smoke_pipeline
    run = get_preset("smoke")
    manifest = load_explorer_manifest(run_dir, run)
    assert manifest["config_hash"] == explorer_config_hash(run)
    assert output_hashes(run) == {paths.EXPLORER_DIR: explorer_config_hash(run)}
    assert read_results(run_dir)["explorer"] == summary_numbers(manifest)
    assert "smoke:explorer" in printed
    site = run_dir / paths.EXPLORER_DIR
    assert manifest["sizes"]["files"] == sum(1 for p in site.rglob("*") if p.is_file()) - 1  # all but the manifest
    assert (site / "vendor" / "plotly-basic.min.js").is_file() and (site / "vendor" / "plotly-basic.LICENSE").is_file()


def test_data_files_say_what_the_run_api_says(smoke_pipeline: tuple[Path, str]) -> None:
    run_dir = smoke_pipeline[0]
    api, site = open_run(run_dir), run_dir / paths.EXPLORER_DIR
    key, index = _payload(site / "data" / "index.js")
    assert key == "index" and index["feature"] == list(range(api.n_features))
    matches = api.crosscoder_matches()
    for f in (0, api.n_features // 2, api.n_features - 1):
        key, page = _payload(site / feature_file(f))
        feature = api.feature(f)
        assert key == f"feature/{f}" and page["pattern"] == feature.pattern
        assert page["formation_step"] == feature.formation_step == index["formation_step"][f]
        drift = feature.drift()
        np.testing.assert_allclose(page["to_final"], drift.to_final, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(page["adjacent"], drift.adjacent, rtol=1e-3, atol=1e-4)
        assert index["crosscoder_feature"][f] == matches.get(f)
        for t, step in enumerate(api.steps):
            shown = [row for row, _, _ in page["contexts"][t]]
            expected = [len(c.text) for c in feature.top_contexts(step, k=api.config.explorer.contexts_per_checkpoint)]
            assert len(shown) == len(expected)
            assert page["labels"][t] == feature.activation_stats(step).label[0]
    for step in api.steps:
        key, checkpoint = _payload(site / checkpoint_file(step))
        assert key == f"checkpoint/{step}" and checkpoint["step"] == step
        assert sum(checkpoint["labels"].values()) == api.n_features


def test_current_explorer_is_skipped_and_a_changed_one_rebuilt(
    smoke_run_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(paths.FIGURES_ENV, str(tmp_path / "figures"))  # not the session's published smoke explorer
    run = get_preset("smoke")
    first = load_explorer_manifest(smoke_run_copy, run)
    marker = smoke_run_copy / paths.EXPLORER_DIR / "data" / "index.js"
    before = marker.stat().st_mtime_ns
    assert build_explorer(run, smoke_run_copy, progress=False) == first
    assert marker.stat().st_mtime_ns == before
    fewer = run.with_overrides({"explorer.contexts_per_checkpoint": 2})
    assert explorer_config_hash(fewer) != explorer_config_hash(run)
    manifest = build_explorer(fewer, smoke_run_copy, progress=False)
    assert manifest["config_hash"] == explorer_config_hash(fewer)
    _, page = _payload(smoke_run_copy / paths.EXPLORER_DIR / feature_file(0))
    assert max(len(contexts) for contexts in page["contexts"]) <= 2
    index_html = publish_explorer(fewer, smoke_run_copy)
    assert index_html == paths.figures_dir("smoke") / paths.EXPLORER_DIR / "index.html" and index_html.is_file()
    assert not (index_html.parent / paths.MANIFEST).exists()


def test_a_formation_stage_that_no_longer_matches_the_links_is_refused(smoke_run_copy: Path) -> None:
    # the formation stage's stored top activations are the ones the explorer recomputes from the links: altered
    # (as if the links had changed under it), the stage stops with the notebook to rerun instead of shading wrongly
    run = get_preset("smoke")
    arrays = smoke_run_copy / paths.FORMATION_DIR / "arrays.npz"
    data = dict(np.load(arrays, allow_pickle=False))
    data["top_values"] = data["top_values"] * 1.5
    np.savez(arrays, **data)
    with pytest.raises(RuntimeError, match="rerun notebook 03"):
        build_explorer(run, smoke_run_copy, progress=False, force=True)
