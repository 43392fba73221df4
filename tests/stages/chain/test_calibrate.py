"""The chain calibrated to a target L0 on the smoke run: the λ found, kept along the chain and for the baselines, saved
before the first link so a resumed chain reuses it, and the config hash of a chain without a target unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from saetrack import paths, store
from saetrack.config import RunConfig
from saetrack.config.chain import training_fields
from saetrack.stages.chain import chain_config_hash, read_link_manifests, train_baselines, train_chain
from saetrack.stages.chain.calibrate import (
    CALIBRATION_FILE,
    CALIBRATION_RUNS_FILE,
    CALIBRATION_TOLERANCE,
    calibrated_run,
    remembered_runs,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def calibrated(smoke: RunConfig) -> RunConfig:
    """The smoke preset with a target L0 (its default λ gives about 27 on the first link)."""
    return smoke.with_overrides({"chain.target_l0": 12.0, "chain.calibration_tokens": 16384})


def test_a_chain_without_a_target_keeps_its_config_hash(smoke: RunConfig) -> None:
    fields = training_fields(smoke.to_dict()["chain"])
    assert "target_l0" not in fields and "calibration_tokens" not in fields
    assert chain_config_hash(smoke) != chain_config_hash(smoke.with_overrides({"chain.target_l0": 12.0}))


def test_the_chain_trains_at_the_calibrated_penalty(
    calibrated: RunConfig, smoke_run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "run"
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR, paths.CACHE_DIR):
        shutil.copytree(smoke_run_dir / folder, work / folder)
    manifest = train_chain(calibrated, work, progress=True)
    record = store.read_json(work / paths.CHAIN_DIR / CALIBRATION_FILE)
    assert abs(record["l0"] / 12.0 - 1) <= CALIBRATION_TOLERANCE and record["target_l0"] == 12.0
    assert manifest["calibration"] == record and "gives L0" in capsys.readouterr().out
    assert manifest["config"]["chain"]["l1_coefficient"] == calibrated.chain.l1_coefficient  # the config as given
    links = read_link_manifests(work)
    for link in (m["link"] for m in links.values()):  # one λ for every link, scaled by its own activations (Eq. 3)
        expected = record["coefficient"] * calibrated.model.d_model * link["activation_scale"]
        assert link["l1_coefficient"] == pytest.approx(expected, rel=1e-9)
    first = links[calibrated.sae_steps[0]]["link"]["metrics"]["l0"]
    assert first < 27  # the first link, trained longer than the short runs, is sparser than at the default λ
    # the short runs (16k tokens) were refined by runs of the first link itself (32k), the one chosen kept as link 1
    assert record["full_tokens_per_run"] == calibrated.chain.first_tokens and 1 <= len(record["full_runs"]) <= 4
    assert first == record["l0"] and [record["coefficient"], first] in record["full_runs"]
    assert calibrated_run(calibrated, work).chain.l1_coefficient == record["coefficient"]
    baselines = train_baselines(calibrated, work, progress=False)
    assert baselines["config"]["chain"]["l1_coefficient"] == calibrated.chain.l1_coefficient
    # resumed with links gone, the first among them: the saved calibration is reused, not searched again, and the
    # first link trained anew equals the calibration's run that stood in for it, byte for byte
    before = (work / paths.CHAIN_DIR / CALIBRATION_FILE).stat().st_mtime_ns
    weights = work / paths.CHAIN_DIR / paths.step_dir_name(calibrated.sae_steps[0]) / "sae_weights.safetensors"
    kept = weights.read_bytes()
    (work / paths.CHAIN_DIR / paths.MANIFEST).unlink()
    for step in (calibrated.sae_steps[0], calibrated.sae_steps[-1]):
        shutil.rmtree(work / paths.CHAIN_DIR / paths.step_dir_name(step))
    again = train_chain(calibrated, work, progress=False)
    assert (work / paths.CHAIN_DIR / CALIBRATION_FILE).stat().st_mtime_ns == before
    assert again["calibration"] == record and weights.read_bytes() == kept


def test_baselines_of_a_calibrated_chain_need_its_calibration(calibrated: RunConfig, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run the chain stage"):
        calibrated_run(calibrated, tmp_path)


def test_short_runs_are_kept_as_they_end_and_a_resumed_search_does_not_repeat_them(tmp_path: Path) -> None:
    calls: list[float] = []

    def l0_at(coefficient: float) -> float:
        calls.append(coefficient)
        return 10.0 / coefficient

    lines: list[str] = []
    path = tmp_path / CALIBRATION_RUNS_FILE
    first = remembered_runs(l0_at, path, "hash-a", lines.append)
    assert first(0.5) == 20.0 and first(0.5) == 20.0 and first(2.0) == 5.0
    assert calls == [0.5, 2.0] and len(lines) == 2
    assert lines[0].startswith("chain: calibration run 1 (short): λ = 0.5 gives L0 20.0 (")
    assert store.read_json(path) == {"config_hash": "hash-a", "short": {"0.5": 20.0, "2.0": 5.0}}
    full = remembered_runs(lambda c: 1.0, path, "hash-a", None, kind="full")  # the full-budget runs beside them
    assert full(0.5) == 1.0 and store.read_json(path)["short"] == {"0.5": 20.0, "2.0": 5.0}
    resumed = remembered_runs(l0_at, path, "hash-a", None)  # an interrupted search, restarted
    assert resumed(2.0) == 5.0 and resumed(0.5) == 20.0 and calls == [0.5, 2.0]
    assert resumed(0.1 + 0.2) == pytest.approx(10 / 0.3) and calls[-1] == 0.1 + 0.2  # a new λ trains
    other = remembered_runs(l0_at, path, "hash-b", None)  # another config: nothing is reused
    assert other(0.5) == 20.0 and calls[-1] == 0.5 and len(calls) == 4
    assert store.read_json(path) == {"config_hash": "hash-b", "short": {"0.5": 20.0}}
