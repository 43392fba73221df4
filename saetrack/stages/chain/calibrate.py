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
(:func:`calibrated_run`). Each run is printed as it ends (λ, its L0, seconds) and kept in
``chain/calibration_runs.json`` (:func:`remembered_runs`): a run is a deterministic function of λ, so a search
interrupted at a 768-wide model's fifth run of minutes resumes at its sixth, with the same answer.

Short runs do not predict the first link's own L0: L1 keeps sparsifying as training goes on, and on a 768-wide
GPT-NeoX the λ of L0 35 after 262k tokens gave the first link (1M tokens) L0 12. So when ``calibration_tokens`` is
below the first link's budget, up to ``chain.calibration_full_runs`` runs of the first link itself correct λ
(:func:`~saetrack.sae.calibration.refine_coefficient`); the last of them, trained with the λ chosen, is the first link,
handed to the chain stage rather than trained again.
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
from saetrack.data.checkpoints import CheckpointSource
from saetrack.sae.calibration import Calibration, calibrate_coefficient, log_slope, refine_coefficient, short_run_l0
from saetrack.stages.chain.links import (
    ACTIVATION_SCALE_ROWS,
    TrainedLink,
    activation_scale,
    link_l1_coefficient,
    link_seed,
    train_and_evaluate_link,
)

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
#: Every run of a search so far (λ -> L0: short runs, and runs at the first link's budget), to resume it.
CALIBRATION_RUNS_FILE = "calibration_runs.json"
#: A calibration run's L0 must lie within this share of the target.
CALIBRATION_TOLERANCE = 0.1
#: Held-out rows the calibration runs' L0 is measured on.
HELDOUT_ROWS = 16_384


def with_coefficient(run: RunConfig, coefficient: float) -> RunConfig:
    """``run`` with the chain's L1 coefficient λ replaced (everything else, ``target_l0`` included, kept)."""
    return dataclasses.replace(run, chain=dataclasses.replace(run.chain, l1_coefficient=float(coefficient)))


def remembered_runs(
    l0_at: Callable[[float], float],
    path: Path,
    chain_hash: str,
    say: Callable[[str], None] | None,
    kind: str = "short",
) -> Callable[[float], float]:
    """``l0_at`` whose answers are kept in ``path`` (under ``kind``, with ``chain_hash``) as each run ends, and read
    back instead of training again for a λ already run (the same float) under the same hash; ``say`` gets one line per
    run."""

    def stored() -> dict[str, Any]:
        record = store.read_json(path) if path.is_file() else {}
        return record if record.get("config_hash") == chain_hash else {"config_hash": chain_hash}

    runs: dict[str, float] = dict(stored().get(kind, {}))

    def l0(coefficient: float) -> float:
        key = repr(float(coefficient))
        if key not in runs:
            started = time.perf_counter()
            runs[key] = float(l0_at(coefficient))
            store.write_json(path, {**stored(), kind: runs})
            if say is not None:
                say(f"chain: calibration run {len(runs)} ({kind}): λ = {coefficient:.4g} gives L0 {runs[key]:.1f} "
                    f"({time.perf_counter() - started:.0f} s)")  # fmt: skip
        return runs[key]

    return l0


def _refine_at_full_budget(
    run: RunConfig, activations: ActivationSource, checkpoints: CheckpointSource, short: Calibration,
    remember: Callable[[Callable[[float], float]], Callable[[float], float]], device: str, progress: bool,
) -> tuple[Calibration, TrainedLink | None]:  # fmt: skip
    """Correct the short runs' λ with runs of the first link itself (:func:`train_and_evaluate_link` at position 0, its
    held-out L0: the metric the link reports); return the refinement and, when the λ chosen was trained in this call,
    that run, which is the first link (same function, seed, rows and λ)."""
    latest: dict[float, TrainedLink] = {}

    def full_l0(coefficient: float) -> float:
        trained = train_and_evaluate_link(
            with_coefficient(run, coefficient), activations, checkpoints, 0, None, None,
            desc=f"calibration at λ = {coefficient:.4g}, the first link's budget", device=device, progress=progress,
        )  # fmt: skip
        latest.clear()  # one SAE kept in memory: the latest
        latest[coefficient] = trained
        return float(trained.quality["l0"])

    assert run.chain.target_l0 is not None
    refined = refine_coefficient(
        remember(full_l0), run.chain.target_l0, short.coefficient, log_slope(short.runs, run.chain.target_l0),
        tolerance=CALIBRATION_TOLERANCE, max_runs=run.chain.calibration_full_runs,
    )  # fmt: skip
    return refined, latest.get(refined.coefficient)


def calibrate_first_link(
    run: RunConfig,
    folder: Path,
    activations: ActivationSource,
    checkpoints: CheckpointSource,
    chain_hash: str,
    device: str,
    progress: bool,
) -> tuple[dict[str, Any], TrainedLink | None]:
    """The calibrated λ of ``run``'s chain and its search (:class:`saetrack.sae.calibration.Calibration` as a dict),
    read from ``folder/calibration.json`` when it was made for ``chain_hash``, else computed on the first checkpoint
    (short runs, then :func:`~saetrack.sae.calibration.refine_coefficient` at the first link's budget when the short
    runs are shorter) and written there first. Also returns the first link when the refinement trained it here."""
    path, chain, step = Path(folder) / CALIBRATION_FILE, run.chain, run.sae_steps[0]
    n_tokens = min(chain.calibration_tokens, chain.first_tokens)
    refines = bool(chain.calibration_full_runs) and n_tokens < chain.first_tokens
    if path.is_file():
        record = store.read_json(path)
        if record.get("config_hash") == chain_hash and ("full_runs" in record) == refines:  # not one of short runs only
            return record, None
    started = time.perf_counter()
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
    runs_file = Path(folder) / CALIBRATION_RUNS_FILE
    l0_at = remembered_runs(l0_at, runs_file, chain_hash, say)
    found = calibrate_coefficient(l0_at, chain.target_l0, start=chain.l1_coefficient, tolerance=CALIBRATION_TOLERANCE)
    record = {"config_hash": chain_hash, "step": int(step), "tokens_per_run": int(x_train.shape[0]), **found.to_dict()}
    first = None
    if refines:
        refined, first = _refine_at_full_budget(
            run, activations, checkpoints, found, lambda f: remembered_runs(f, runs_file, chain_hash, say, "full"),
            device, progress,
        )  # fmt: skip
        record.update(coefficient=refined.coefficient, l0=refined.l0, short_coefficient=found.coefficient,
                      full_tokens_per_run=chain.first_tokens, full_runs=[list(r) for r in refined.runs])  # fmt: skip
    record["seconds"] = round(time.perf_counter() - started, 1)
    store.write_json(path, record)
    if progress:
        print(f"chain: λ = {record['coefficient']:.4g} gives L0 {record['l0']:.1f} (target {chain.target_l0:g}) on "
              f"step {step}: {len(found.runs)} short runs of {x_train.shape[0]:,} tokens"
              + (f", {len(record['full_runs'])} of the first link's {chain.first_tokens:,}" if "full_runs" in record
                 else ""), flush=True)  # fmt: skip
    return record, first


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
