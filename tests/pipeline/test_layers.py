"""A run of several layers: inputs shared, every stage run for every layer in its own folder, stage by stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from saetrack import paths
from saetrack.config import RunConfig
from saetrack.pipeline import layers
from saetrack.pipeline.stages import run_stages


@pytest.fixture
def multi(smoke: RunConfig) -> RunConfig:
    return smoke.with_overrides({"cache.layers": [0, 1]})


def _recorder(calls: list[tuple[Any, ...]]) -> Any:
    def run_one(run: RunConfig, run_dir: Path, **options: Any) -> float:
        calls.append((run.cache.layer, run_dir.name, tuple(options["only"]), options["force"], options["rerun"]))
        return 1.0

    return run_one


def test_layer_folders_are_the_layers_single_layer_runs(multi: RunConfig, tmp_path: Path) -> None:
    folders = layers.layer_folders(multi, tmp_path)
    assert list(folders) == [0, 1]
    assert folders[1][1] == tmp_path / paths.layer_dir_name(1) == tmp_path / "layer1"
    assert folders[1][0] == multi.layer_runs()[1]


def test_every_stage_runs_for_every_layer_before_the_next_stage(multi: RunConfig, tmp_path: Path) -> None:
    calls: list[tuple[Any, ...]] = []
    said: list[str] = []
    layers.run_layers(multi, tmp_path, run_one=_recorder(calls), only=["chain", "scale", "drift"], log=said.append)
    assert calls == [
        (0, "layer0", ("chain",), False, False),
        (1, "layer1", ("chain",), False, False),
        (0, "layer0", ("drift",), False, False),
        (1, "layer1", ("drift",), False, False),
    ]
    assert any("scale] not run per layer" in line for line in said)


def test_the_cache_is_built_for_all_layers_at_once_then_each_notebook_only_draws(
    multi: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[tuple[str, bool]] = []
    monkeypatch.setattr(layers, "prepare_layers", lambda run, run_dir, progress: built.append(("inputs", False)))
    monkeypatch.setattr(layers, "cache_layers", lambda run, run_dir, **kw: built.append(("caches", kw["force"])))
    calls: list[tuple[Any, ...]] = []
    layers.run_layers(multi, tmp_path, run_one=_recorder(calls), only=["cache"], force=True, log=lambda _: None)
    assert built == [("inputs", False), ("caches", True)]
    # forced: the caches were rebuilt together above, so each layer's notebook 01 reruns to draw, never re-caches
    assert calls == [(0, "layer0", ("cache",), False, True), (1, "layer1", ("cache",), False, True)]


@pytest.mark.parametrize("echo", [True, False])
def test_quiet_hides_the_shared_preparations_progress_bars(
    multi: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, echo: bool
) -> None:
    bars: list[bool] = []
    monkeypatch.setattr(layers, "prepare_layers", lambda run, run_dir, progress: bars.append(progress))
    monkeypatch.setattr(layers, "cache_layers", lambda run, run_dir, **kw: bars.append(kw["progress"]))
    layers.run_layers(multi, tmp_path, run_one=_recorder([]), only=["cache"], log=lambda _: None, echo=echo)
    assert bars == [echo, echo]  # --quiet (echo False): no bars from the corpus, suite or caches


def test_run_stages_hands_a_several_layer_run_to_run_layers(
    multi: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []
    monkeypatch.setattr("saetrack.pipeline.stages.run_layers", lambda run, run_dir, **kw: seen.append(kw) or 2.5)
    assert run_stages(multi, tmp_path, only=["chain"]) == 2.5
    assert seen[0]["run_one"] is run_stages and seen[0]["only"] == ["chain"]
    with pytest.raises(KeyError, match="not stages"):
        run_stages(multi, tmp_path, only=["nope"])


@pytest.mark.parametrize(
    ("overrides", "caches_current", "side_by_side"),
    [
        ({"cache.mode": "streamed"}, True, True),
        ({"cache.mode": "streamed"}, False, False),  # no token plans yet: each layer's notebook 02 says so
        ({}, True, False),  # cached: the forwards were shared by the cache
        ({"cache.mode": "streamed", "cache.tf32": True}, True, False),
    ],
)
def test_streamed_layers_train_their_chains_side_by_side_before_the_notebooks(
    multi: RunConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    overrides: dict,
    caches_current: bool,
    side_by_side: bool,
) -> None:
    cache_stage = type("Stage", (), {"outputs_current": lambda self, run, run_dir: caches_current, "per_layer": True})()
    monkeypatch.setattr(layers, "get_stage", lambda name: cache_stage)
    events: list[Any] = []
    shared = {"seconds": 1.0, "forwards": 3}
    monkeypatch.setattr(
        layers, "train_layers_in_lockstep", lambda run, run_dir, **kw: events.append("lockstep") or shared
    )
    calls: list[tuple[Any, ...]] = []

    def run_one(run: RunConfig, run_dir: Path, **options: Any) -> float:
        events.append(run_dir.name)
        return _recorder(calls)(run, run_dir, **options)

    said: list[str] = []
    layers.run_layers(multi.with_overrides(overrides), tmp_path, run_one=run_one, only=["chain"], log=said.append)
    assert events == (["lockstep"] if side_by_side else []) + ["layer0", "layer1"]
    if overrides.get("cache.tf32"):
        assert any("one after the other" in line for line in said)
