"""Config recovery and the missing-stage errors of the run API."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from saetrack import paths, store
from saetrack.api.artifacts import (
    RunConfigError,
    StageNotRunError,
    StepNotInChainError,
    loaded,
    notebook_configs,
    recover_config,
    run_command,
)
from saetrack.config import get_preset
from saetrack.stages.chain import chain_config_hash


def test_run_command_names_the_stage() -> None:
    assert run_command("nano", "drift") == "saetrack run --preset nano --only drift"
    assert run_command("smoke", "crosscoder", " --set x=1").endswith("--only crosscoder --set x=1")


def test_loaded_turns_a_missing_stage_into_one_error_naming_the_command(tmp_path: Path) -> None:
    def stale() -> None:
        raise store.StaleArtifactError("no finished drift stage; run notebook 04 first.")

    with pytest.raises(StageNotRunError, match=r"run `saetrack run --preset nano --only drift` first") as caught:
        loaded(stale, tmp_path, paths.DRIFT_DIR, get_preset("nano"))
    assert isinstance(caught.value, FileNotFoundError)
    assert loaded(lambda: 3, tmp_path, paths.DRIFT_DIR, get_preset("nano")) == 3
    with pytest.raises(ZeroDivisionError):  # other errors pass through
        loaded(lambda: 1 / 0, tmp_path, paths.DRIFT_DIR, get_preset("nano"))


def test_step_error_is_a_key_error_with_a_plain_message() -> None:
    error = StepNotInChainError("step 3 is not a checkpoint of the chain; steps: [0, 1]")
    assert isinstance(error, KeyError)
    assert str(error) == "step 3 is not a checkpoint of the chain; steps: [0, 1]"


def test_a_folder_without_a_chain_asks_for_the_chain_stage(tmp_path: Path) -> None:
    with pytest.raises(StageNotRunError, match="--only chain"):
        recover_config(tmp_path)


def test_a_run_of_several_layers_names_its_layers_folders(tmp_path: Path) -> None:
    for layer in (1, 3):
        store.write_json(tmp_path / f"layer{layer}" / paths.CHAIN_DIR / paths.MANIFEST, {"config_hash": "x"})
    with pytest.raises(StageNotRunError, match="run of several layers") as raised:
        recover_config(tmp_path)
    assert str(tmp_path / "layer1") in str(raised.value) and str(tmp_path / "layer3") in str(raised.value)


@pytest.mark.slow
def test_the_config_comes_back_from_the_stage_manifests(api_run_dir: Path) -> None:
    run = recover_config(api_run_dir)
    assert run.to_dict() == get_preset("smoke").to_dict()


@pytest.mark.slow
def test_overrides_no_manifest_records_come_back_from_the_executed_notebooks(
    run_copy: Callable[..., Path],
) -> None:
    run_dir = run_copy()
    chain = json.loads((run_dir / paths.CHAIN_DIR / paths.MANIFEST).read_text())
    seeded = get_preset("smoke").with_overrides({"seed": 7})  # as if the run had been made with --set seed=7
    chain["config_hash"] = chain_config_hash(seeded)
    (run_dir / paths.CHAIN_DIR / paths.MANIFEST).write_text(json.dumps(chain))
    notebook = run_dir / paths.NOTEBOOKS_DIR / "02_train_chain.ipynb"
    notebook.write_text(notebook.read_text().replace('\\\\\\"seed\\\\\\": 0', '\\\\\\"seed\\\\\\": 7', 1))
    assert [c.seed for c in notebook_configs(run_dir)].count(7) == 1
    assert recover_config(run_dir).seed == 7
    shutil.rmtree(run_dir / paths.NOTEBOOKS_DIR)
    with pytest.raises(RunConfigError, match="cannot recover the config"):
        recover_config(run_dir)
