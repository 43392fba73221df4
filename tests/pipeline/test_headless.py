"""Headless runs (the seed study's variants): lending finished corpus and model folders by hard link when their
config hash matches, the stages of notebooks 01-04 without figures, and the command line."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from saetrack import paths, store
from saetrack.config import RunConfig, get_preset
from saetrack.data import corpus, suite
from saetrack.pipeline import headless
from saetrack.pipeline.headless import adopt, adoptable_hashes, main, run_headless
from saetrack.stages.chain import chain_config_hash
from saetrack.stages.drift import drift_config_hash
from saetrack.stages.formation import formation_config_hash
from saetrack.stages.scale.seeds import LIGHT_OVERRIDES


def _finished(folder: Path, digest: str, files: dict[str, str]) -> Path:
    """A finished stage folder holding ``files`` (relative path -> text) under a manifest with ``digest``."""
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    store.write_manifest(folder, stage=folder.name, config={}, config_hash=digest,
                         files={n: store.file_sha256(folder / n) for n in files})  # fmt: skip
    return folder


def _lender(root: Path, run: RunConfig, *, corpus_hash: str | None = None, model_hash: str | None = None) -> Path:
    hashes = adoptable_hashes(run)
    _finished(
        root / paths.CORPUS_DIR, corpus_hash or hashes[paths.CORPUS_DIR], {"tokens.npy": f"corpus of {root.name}"}
    )
    _finished(root / paths.MODEL_DIR, model_hash or hashes[paths.MODEL_DIR],
              {"step0/model.safetensors": f"weights of {root.name}", "tokenizer/tokenizer.json": "{}"})  # fmt: skip
    return root


def test_adoptable_folders_are_the_corpus_and_a_trained_suite(run: RunConfig) -> None:
    assert adoptable_hashes(run) == {
        paths.CORPUS_DIR: corpus.corpus_config_hash(run),
        paths.MODEL_DIR: suite.suite_config_hash(run),
    }
    hub = get_preset("pythia-160m-l4")
    assert list(adoptable_hashes(hub)) == [paths.CORPUS_DIR]  # a Hub model is not trained here: nothing to lend
    # what the seed study shares: another chain seed keeps both; another model seed or warm-up keeps the corpus only
    same = adoptable_hashes(run.with_overrides({"chain.seed": 7, **LIGHT_OVERRIDES}))
    assert same == adoptable_hashes(run)
    for change in ({"seed": 1}, {"suite.warmup_steps": 12}):
        other = adoptable_hashes(run.with_overrides(change))
        assert other[paths.CORPUS_DIR] == same[paths.CORPUS_DIR] and other[paths.MODEL_DIR] != same[paths.MODEL_DIR]


def test_adopt_hard_links_from_the_first_lender_with_the_expected_hash(run: RunConfig, tmp_path: Path) -> None:
    stale = _lender(tmp_path / "stale", run, corpus_hash="not-this-config", model_hash="nor-this")
    first = _lender(tmp_path / "first", run)
    second = _lender(tmp_path / "second", run)
    target = tmp_path / "variant"
    assert adopt(run, target, [tmp_path / "absent", stale, first, second]) == [paths.CORPUS_DIR, paths.MODEL_DIR]
    for folder, name in ((paths.CORPUS_DIR, "tokens.npy"), (paths.MODEL_DIR, "step0/model.safetensors"),
                         (paths.MODEL_DIR, store.MANIFEST)):  # fmt: skip
        linked, origin = target / folder / name, first / folder / name
        assert os.stat(linked).st_ino == os.stat(origin).st_ino  # a hard link, not a copy
        assert os.stat(linked).st_nlink == 2
    assert (target / paths.MODEL_DIR / "step0" / "model.safetensors").read_text() == "weights of first"
    assert store.manifest_is_current(target / paths.MODEL_DIR, suite.suite_config_hash(run), verify_files=True)
    assert adopt(run, target, [second]) == []  # already current: nothing adopted, nothing replaced
    assert (target / paths.CORPUS_DIR / "tokens.npy").read_text() == "corpus of first"


def test_adopt_replaces_a_stale_folder_and_leaves_it_without_a_lender(run: RunConfig, tmp_path: Path) -> None:
    target = tmp_path / "variant"
    _finished(target / paths.CORPUS_DIR, "an-old-config", {"tokens.npy": "old", "leftover.txt": "old"})
    assert adopt(run, target, [tmp_path / "nothing-here"]) == []
    assert (target / paths.CORPUS_DIR / "leftover.txt").exists()  # no lender: left for the stage to rebuild
    other = run.with_overrides({"seed": 1})  # another model seed: the corpus may be lent, the model may not
    lender = _lender(tmp_path / "lender", other)
    assert adopt(run, target, [lender]) == [paths.CORPUS_DIR]
    assert not (target / paths.CORPUS_DIR / "leftover.txt").exists()  # the stale folder is gone, not merged
    assert (target / paths.CORPUS_DIR / "tokens.npy").read_text() == "corpus of lender"
    assert not (target / paths.MODEL_DIR).exists()


def test_main_adopts_then_runs_the_config_it_is_given(
    run: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[RunConfig, Path, dict[str, Any]]] = []

    def fake_run(config: RunConfig, run_dir: Path, **kw: Any) -> float:
        calls.append((config, run_dir, kw))
        return 1.5

    monkeypatch.setattr(headless, "run_headless", fake_run)
    variant = run.with_overrides({"chain.seed": 3, **LIGHT_OVERRIDES})
    config = tmp_path / "config.json"
    store.write_json(config, variant.to_dict())
    lender = _lender(tmp_path / "lender", variant)
    target = tmp_path / "variant"
    argv = ["--config", str(config), "--run-dir", str(target), "--device", "cpu", "--adopt", str(lender)]
    assert main(argv) == 0
    assert calls == [(variant, target, {"device": "cpu"})]  # the config round-trips through JSON unchanged
    out = capsys.readouterr().out
    assert f"[smoke] adopted ['corpus', 'model'] from ['{lender}']" in out
    assert f"headless run of smoke in {target} finished in 1.5 s" in out
    assert main(["--config", str(config), "--run-dir", str(target)]) == 0  # nothing to adopt: no adoption line
    assert "adopted" not in capsys.readouterr().out and calls[-1][2] == {"device": "cpu"}


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_run_headless_runs_the_missing_stages_of_a_smoke_run(
    run: RunConfig, smoke_run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    light = run.with_overrides(LIGHT_OVERRIDES)  # what a seed variant leaves out
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR, paths.CACHE_DIR):
        shutil.copytree(smoke_run_dir / folder, tmp_path / folder)
    before = {f: store.read_manifest(tmp_path / f) for f in (paths.CORPUS_DIR, paths.MODEL_DIR, paths.CACHE_DIR)}
    seconds = run_headless(light, tmp_path)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[smoke:")]
    steps = ("corpus", "model", "cache", "chain", "baselines", "formation", "drift")
    assert [line.split("]")[0] for line in lines] == [f"[smoke:{s}" for s in steps]
    assert seconds > 0
    assert {f: store.read_manifest(tmp_path / f) for f in before} == before  # current: skipped, not rebuilt
    for folder, digest in ((paths.CHAIN_DIR, chain_config_hash(light)), (paths.FORMATION_DIR,
                           formation_config_hash(light)), (paths.DRIFT_DIR, drift_config_hash(light))):  # fmt: skip
        assert store.manifest_is_current(tmp_path / folder, digest), folder
    drift = store.read_manifest(tmp_path / paths.DRIFT_DIR)
    assert drift is not None and drift["phases"]["drift"]["index"]["preferred_segments"] >= 1
    run_headless(light, tmp_path)  # all current: nothing is redone
    assert store.read_manifest(tmp_path / paths.DRIFT_DIR) == drift
