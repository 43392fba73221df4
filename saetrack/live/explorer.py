"""The explorer of a watched run, rebuilt from the chain so far (``saetrack watch --explorer-every N``).

Every ``N`` new links, and when the watch ends, the watcher runs the formation and drift stages (notebooks 03 and 04's
functions) and the explorer stage (07) over the links finished so far, into the run directory, so a reader can follow
any feature through the checkpoints seen so far (``<run_dir>/explorer/index.html``, linked from the live summary).
Each rebuild is an ordinary run of those stages over the watched config of that moment; a later rebuild replaces it.

Two parts of the pipeline are left out, as they need the finished run: the cross-snapshot crosscoder (it trains on
every checkpoint's cached activations at once) and the checkpoint-density study (it thins a finished schedule). Run
them afterwards with ``saetrack run --config <run_dir>/run_config.json``.

A rebuild that fails (too few links for a formation reading, say) is reported in one line and the watch goes on: the
chain is what the watcher must not lose.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from saetrack import paths
from saetrack.config.run import RunConfig
from saetrack.stages.drift import analyse_drift
from saetrack.stages.explorer import build_explorer
from saetrack.stages.formation import analyse_formation

__all__ = ["MIN_LINKS", "explorer_config", "refresh_explorer"]

#: Links the chain needs before the explorer is built (a formation reading compares a link with the ones around it).
MIN_LINKS = 3


def explorer_config(run: RunConfig) -> RunConfig:
    """The watched config ``run`` without the crosscoder and the density study (module doc); the chain, formation and
    drift hashes are unchanged, so these stages read the watched chain as it is."""
    return dataclasses.replace(
        run,
        crosscoder=dataclasses.replace(run.crosscoder, enabled=False),
        drift=dataclasses.replace(run.drift, density_strides=()),
    )


def refresh_explorer(run: RunConfig, run_dir: Path, *, device: str = "cpu", progress: bool = False) -> str:
    """Rebuild formation, drift and the explorer of the watched ``run`` in ``run_dir`` over its finished chain; return
    the line to print (where the explorer is, or why it was not built)."""
    if len(run.sae_steps) < MIN_LINKS:
        return f"[watch] explorer: waits for {MIN_LINKS} links ({len(run.sae_steps)} so far)"
    config, started = explorer_config(run), time.perf_counter()
    try:
        analyse_formation(config, run_dir, device=device, progress=progress)
        analyse_drift(config, run_dir, device=device, progress=progress)
        build_explorer(config, run_dir, device=device, progress=progress)
    except (ValueError, RuntimeError, FileNotFoundError) as error:
        return f"[watch] explorer not rebuilt at {len(run.sae_steps)} links: {error}"
    page = Path(run_dir) / paths.EXPLORER_DIR / "index.html"
    seconds = time.perf_counter() - started
    return f"[watch] explorer rebuilt over {len(run.sae_steps)} links in {seconds:.0f} s: {page}"
