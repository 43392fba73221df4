"""The chain's sparsity penalty calibrated to a target L0 on its first checkpoint (``chain.target_l0``).

With ``chain.target_l0`` set, the L1 coefficient λ of Eq. 3 is not taken as given: before the first link trains,
:func:`calibrate_first_link` searches the λ whose short run (a fresh SAE from the first link's seed, on the first
checkpoint's training tokens) reaches the target L0 on held-out tokens (:mod:`saetrack.sae.calibration`). That λ
then holds for every link, baseline and noise-floor link, like a λ set by hand: a penalty recalibrated at each link
would change the objective along the chain, and drift would mix what the model learns with what the penalty moved.
With ``chain.l1_scale="activation_norm"`` each link still scales λ by its own activations (Eq. 3), as without
calibration.

The search and its result are saved in ``chain/calibration.json`` before the first link trains, with the chain's
config hash, so an interrupted chain resumes with the same λ and the baselines read it from there
(:func:`calibrated_run`). Each short run is printed as it ends (λ, its L0, seconds) and kept in
``chain/calibration_runs.json`` (:func:`remembered_runs`): a short run is a deterministic function of λ, so a search
interrupted at a 768-wide model's fifth run of minutes resumes at its sixth, with the same answer.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from saetrack import paths, store
from saetrack.config.run import RunConfig
from saetrack.data.activations import ActivationSource
from saetrack.sae.calibration import calibrate_coefficient, short_run_l0
from saetrack.stages.chain.links import ACTIVATION_SCALE_ROWS, activation_scale, link_l1_coefficient, link_seed

__all__ = [
    "CALIBRATION_FILE",
    "CALIBRATION_RUNS_FILE",
    "CALIBRATION_TOLERANCE",
    "calibrate_first_link",
    "calibrated_run",
    "remembered_runs",
    "with_coefficient",
]

#: The calibration's record in the chain's folder.
CALIBRATION_FILE = "calibration.json"
#: The short runs of a search so far (λ -> L0), for a search that is interrupted.
CALIBRATION_RUNS_FILE = "calibration_runs.json"
#: A calibration run's L0 must lie within this share of the target.
CALIBRATION_TOLERANCE = 0.1
#: Held-out rows the calibration runs' L0 is measured on.
HELDOUT_ROWS = 16_384


def with_coefficient(run: RunConfig, coefficient: float) -> RunConfig:
    """``run`` with the chain's L1 coefficient λ replaced (everything else, ``target_l0`` included, kept)."""
    return dataclasses.replace(run, chain=dataclasses.replace(run.chain, l1_coefficient=float(coefficient)))


def remembered_runs(
    l0_at: Callable[[float], float], path: Path, chain_hash: str, say: Callable[[str], None] | None
) -> Callable[[float], float]:
    """``l0_at`` whose answers are kept in ``path`` (with ``chain_hash``) as each short run ends, and read back instead
    of training again for a λ already run (the same float) under the same hash; ``say`` gets one line per run."""
    record = store.read_json(path) if path.is_file() else {}
    runs: dict[str, float] = record.get("runs", {}) if record.get("config_hash") == chain_hash else {}

    def l0(coefficient: float) -> float:
        key = repr(float(coefficient))
        if key not in runs:
            started = time.perf_counter()
            runs[key] = float(l0_at(coefficient))
            store.write_json(path, {"config_hash": chain_hash, "runs": runs})
            if say is not None:
                say(f"chain: calibration run {len(runs)}: λ = {coefficient:.4g} gives L0 {runs[key]:.1f} "
                    f"({time.perf_counter() - started:.0f} s)")  # fmt: skip
        return runs[key]

    return l0


def calibrate_first_link(
    run: RunConfig, folder: Path, activations: ActivationSource, chain_hash: str, device: str, progress: bool
) -> dict[str, Any]:
    """The calibrated λ of ``run``'s chain and its search (:class:`saetrack.sae.calibration.Calibration` as a dict),
    read from ``folder/calibration.json`` when it was made for ``chain_hash``, else computed on the first checkpoint
    and written there first."""
    path = Path(folder) / CALIBRATION_FILE
    if path.is_file():
        record = store.read_json(path)
        if record.get("config_hash") == chain_hash:
            return record
    started, chain, step = time.perf_counter(), run.chain, run.sae_steps[0]
    n_tokens = min(chain.calibration_tokens, chain.first_tokens)
    x_train = np.asarray(activations.train_head(step, n_tokens), dtype=np.float32)
    heldout = np.asarray(activations.heldout(step)[:HELDOUT_ROWS], dtype=np.float32)
    scale = activation_scale(activations.train_head(step, ACTIVATION_SCALE_ROWS))
    l0_at = short_run_l0(
        x_train, heldout, chain, lambda c: link_l1_coefficient(with_coefficient(run, c), scale, activations.d_model),
        n_tokens=n_tokens, seed=link_seed(run, "chain", 0), device=device,
    )  # fmt: skip
    assert chain.target_l0 is not None
    if progress:
        print(f"chain: calibrating λ to L0 {chain.target_l0:g} on step {step}: short runs of {x_train.shape[0]:,} "
              "tokens, bracketing then bisecting", flush=True)  # fmt: skip
    say = (lambda line: print(line, flush=True)) if progress else None
    l0_at = remembered_runs(l0_at, Path(folder) / CALIBRATION_RUNS_FILE, chain_hash, say)
    found = calibrate_coefficient(l0_at, chain.target_l0, start=chain.l1_coefficient, tolerance=CALIBRATION_TOLERANCE)
    record = {"config_hash": chain_hash, "step": int(step), "tokens_per_run": int(x_train.shape[0]),
              **found.to_dict(), "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    store.write_json(path, record)
    if progress:
        print(f"chain: λ = {found.coefficient:.4g} gives L0 {found.l0:.1f} (target {chain.target_l0:g}) on step "
              f"{step}, {len(found.runs)} short runs of {x_train.shape[0]:,} tokens", flush=True)  # fmt: skip
    return record


def calibrated_run(run: RunConfig, run_dir: Path) -> RunConfig:
    """``run`` with the chain's calibrated λ (``chain/calibration.json``) when ``chain.target_l0`` is searched for, else
    ``run`` itself; raises ``FileNotFoundError`` naming the stage to run when the calibration is missing."""
    if not run.chain.searches_coefficient:  # no target, or TopK/BatchTopK whose k is the target itself
        return run
    path = Path(run_dir) / paths.CHAIN_DIR / CALIBRATION_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"chain.target_l0 is set but {path} does not exist: run the chain stage (notebook 02) first."
        )
    return with_coefficient(run, store.read_json(path)["coefficient"])
