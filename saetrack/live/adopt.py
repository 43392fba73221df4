"""Keeping a watched run's finished links as it gains checkpoints.

Every stage part (a chain link) carries the config hash of the run it was made for, and a run with one more
checkpoint has another hash, so without this step each new checkpoint would retrain the whole chain. A link trained
for the config of the first ``j`` checkpoints is kept for the config of ``k > j`` checkpoints only when
:func:`saetrack.live.config.prefix_agrees` holds for the two configs (same settings, same steps up to it, same token
slices): then training it again would give the same weights, so its manifest is re-stamped with the new hash, with the
hash it was trained under kept in ``adopted_from``. Anything else keeps its old hash and is retrained by the stage, as
in any run. The chain's calibration record (``chain/calibration.json``) is kept the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from saetrack import paths, store
from saetrack.config.run import RunConfig
from saetrack.live.config import prefix_agrees
from saetrack.stages.chain import chain_config_hash
from saetrack.stages.chain.calibrate import CALIBRATION_FILE

__all__ = ["adopt_links", "prefix_hashes"]


def prefix_hashes(
    run: RunConfig, config_for: Callable[[int], RunConfig], hasher: Callable[[RunConfig], str] = chain_config_hash
) -> dict[str, int]:
    """Chain hash -> number of checkpoints, for every prefix config ``config_for(j)`` (``j`` = 1 .. all but the last
    of ``run``'s checkpoints) whose links are ``run``'s first links unchanged (:func:`prefix_agrees`)."""
    out: dict[str, int] = {}
    for j in range(1, len(run.model.checkpoint_steps)):
        short = config_for(j)
        if prefix_agrees(short, run):
            out[hasher(short)] = j
    return out


def _restamp(path: Path, manifest: dict[str, Any], new_hash: str) -> None:
    """Rewrite the JSON record at ``path`` with ``new_hash``, the hash it had kept in ``adopted_from``."""
    history = [*manifest.get("adopted_from", []), manifest["config_hash"]]
    store.write_json(path, {**manifest, "config_hash": new_hash, "adopted_from": history})


def adopt_links(run: RunConfig, run_dir: Path, config_for: Callable[[int], RunConfig]) -> list[int]:
    """Re-stamp the chain links (and the calibration) of ``run_dir`` made for a prefix config of ``run`` with ``run``'s
    chain hash (module doc); return the steps of the links kept this way."""
    chain_dir = Path(run_dir) / paths.CHAIN_DIR
    if not chain_dir.is_dir():
        return []
    new_hash = chain_config_hash(run)
    prefixes = prefix_hashes(run, config_for)
    kept = []
    for position, step in enumerate(run.sae_steps):
        folder = chain_dir / paths.step_dir_name(step)
        manifest = store.read_manifest(folder)
        if manifest is None or manifest.get("config_hash") == new_hash:
            continue
        trained_with = prefixes.get(str(manifest.get("config_hash")))
        if trained_with is None or position >= trained_with:  # made for another config: the stage retrains it
            continue
        _restamp(folder / paths.MANIFEST, manifest, new_hash)
        kept.append(step)
    calibration = chain_dir / CALIBRATION_FILE
    if calibration.is_file():
        record = store.read_json(calibration)
        if record.get("config_hash") in prefixes:
            _restamp(calibration, record, new_hash)
    return kept
