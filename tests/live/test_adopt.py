"""Finished links of a shorter watched run are kept for a longer one only when their config is a true prefix."""

from __future__ import annotations

from pathlib import Path

from saetrack import store
from saetrack.config import get_preset
from saetrack.live.adopt import adopt_links, prefix_hashes
from saetrack.live.config import WatchSource, watched_config
from saetrack.stages.chain import chain_config_hash

SOURCE = WatchSource("local", "/tmp/a-run")
STEPS = [0, 10, 20, 40]


def _config(steps: list[int], **overrides: object):
    return watched_config(get_preset("smoke", overrides or None), SOURCE, steps, (2, 32), "w")


def _stamp(run_dir: Path, step: int, digest: str) -> None:
    store.write_manifest(run_dir / "chain" / f"step{step}", stage="chain-link", config={}, config_hash=digest)


def test_prefix_hashes_name_every_shorter_config() -> None:
    run = _config(STEPS)
    hashes = prefix_hashes(run, lambda j: _config(STEPS[:j]))
    assert sorted(hashes.values()) == [1, 2, 3] and chain_config_hash(_config(STEPS[:2])) in hashes


def test_links_made_for_a_prefix_are_restamped_others_are_left_to_retrain(tmp_path: Path) -> None:
    run = _config(STEPS)
    _stamp(tmp_path, 0, chain_config_hash(_config(STEPS[:1])))
    _stamp(tmp_path, 10, chain_config_hash(_config(STEPS[:3])))
    _stamp(tmp_path, 20, chain_config_hash(_config(STEPS[:2])))  # position 2 was not in a 2-checkpoint config
    _stamp(tmp_path, 40, chain_config_hash(_config(STEPS[:3], **{"chain.lr_link": 1.0})))  # another config
    store.write_json(tmp_path / "chain" / "calibration.json", {"config_hash": chain_config_hash(_config(STEPS[:1]))})
    kept = adopt_links(run, tmp_path, lambda j: _config(STEPS[:j]))
    assert kept == [0, 10]
    new = chain_config_hash(run)
    assert store.read_manifest(tmp_path / "chain" / "step0")["config_hash"] == new
    assert store.read_manifest(tmp_path / "chain" / "step0")["adopted_from"] == [chain_config_hash(_config(STEPS[:1]))]
    assert store.read_manifest(tmp_path / "chain" / "step20")["config_hash"] != new
    assert store.read_manifest(tmp_path / "chain" / "step40")["config_hash"] != new
    assert store.read_json(tmp_path / "chain" / "calibration.json")["config_hash"] == new


def test_nothing_to_adopt_without_a_chain(tmp_path: Path) -> None:
    assert adopt_links(_config(STEPS), tmp_path, lambda j: _config(STEPS[:j])) == []
