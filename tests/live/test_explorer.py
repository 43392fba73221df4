"""The explorer of a watched run, rebuilt from the chain so far, and when the watcher rebuilds it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from saetrack import store
from saetrack.live import follow
from saetrack.live.explorer import MIN_LINKS, explorer_config, refresh_explorer
from saetrack.stages.chain import chain_config_hash
from saetrack.stages.drift import drift_config_hash
from saetrack.stages.explorer import explorer_config_hash
from saetrack.stages.formation import formation_config_hash
from tests.live.conftest import live_chain


def test_the_explorer_config_drops_the_crosscoder_and_density_and_keeps_the_chains_hashes(watched_smoke: dict) -> None:
    run = watched_smoke["run"]
    config = explorer_config(run)
    assert run.crosscoder.enabled and not config.crosscoder.enabled and config.drift.density_strides == ()
    assert chain_config_hash(config) == chain_config_hash(run)
    assert formation_config_hash(config) == formation_config_hash(run)
    assert drift_config_hash(config) == drift_config_hash(run)


def test_the_explorer_is_built_over_the_watched_chain_so_far(watched_smoke_continued: dict, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(watched_smoke_continued["run_dir"], run_dir)
    run = watched_smoke_continued["run"]
    assert not run.chain.may_restart
    line = refresh_explorer(run, run_dir)
    assert line.startswith(f"[watch] explorer rebuilt over {len(run.sae_steps)} links in ") and line.endswith(
        str(run_dir / "explorer" / "index.html")
    )
    manifest = store.read_manifest(run_dir / "explorer")
    assert manifest["config_hash"] == explorer_config_hash(explorer_config(run)) and manifest["steps"] == [
        0,
        1,
        2,
        4,
        8,
    ]
    assert (run_dir / "explorer" / "index.html").is_file()
    early = run.with_overrides({"model.checkpoint_steps": [0, 1], "chain.schedule": [0, 1]})
    assert refresh_explorer(early, run_dir) == f"[watch] explorer: waits for {MIN_LINKS} links (2 so far)"


def test_the_watcher_rebuilds_every_n_links_and_once_more_at_the_end(
    watched_smoke: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(follow, "refresh_explorer", lambda run, run_dir, **_: calls.append(len(run.sae_steps)) or "x")
    monkeypatch.setattr(follow, "write_report", lambda *args: None)
    monkeypatch.setattr(follow, "drift_so_far", lambda *args: {})
    lines: list[str] = []
    chain = live_chain(tmp_path / "model", tmp_path / "run", lines)
    chain.explorer_every = 2
    chain.refresh_explorer(final=True)  # nothing watched yet: nothing to build
    assert calls == []
    chain._run = watched_smoke["run"]
    chain._new_links = 1
    chain.refresh_explorer(final=True)  # the watch ends with a link not yet in the explorer
    assert calls == [5] and lines == ["x"] and chain._new_links == 0
    (tmp_path / "run" / "explorer").mkdir(parents=True)
    (tmp_path / "run" / "explorer" / "index.html").write_text("")
    chain.refresh_explorer(final=True)  # built, and no link since: not again
    assert calls == [5]


def test_no_explorer_across_a_restart_of_the_chain(watched_smoke: dict, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(watched_smoke["run_dir"], run_dir)
    run = watched_smoke["run"]
    restarts = [s for s in run.sae_steps if store.read_manifest(run_dir / "chain" / f"step{s}")["link"]["restarted"]]
    assert restarts  # the shared watched run restarts (the outcome rule at step 8 of the smoke suite)
    line = refresh_explorer(run, run_dir)
    assert line.startswith(f"[watch] explorer not rebuilt at {len(run.sae_steps)} links: formation (notebook 03)")
    assert f"the chain restarted at step {', '.join(map(str, restarts))}" in line
    assert not (run_dir / "explorer" / "index.html").exists() and not (run_dir / "formation").exists()
