"""The SAE-Track chain (Sec. 3.2.2, App. C.1) and the independent from-scratch baseline.

SAE[1] is randomly initialised and trained on the first scheduled checkpoint's activations with the first-SAE budget;
SAE[k] starts from SAE[k-1]'s weights and trains on checkpoint k's own activations with the link budget — forward in
training time. Every link is trained with its own hyperparameters (rebuilt from the config on reload, so SAELens' L1
reset cannot leak in), saved as ``chain/step{N}/`` in SAELens format, and evaluated on its checkpoint's held-out data.

A link counts as finished only once its ``manifest.json`` is written (after the SAE files, each step atomic), so an
interrupted run resumes at the first unfinished link and never loads a half-written one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from saetrack import paths, store
from saetrack.config.base import config_hash
from saetrack.config.chain import training_fields
from saetrack.config.run import RunConfig
from saetrack.data.activations import ActivationSource, open_activations
from saetrack.data.cache_plan import cache_config_hash
from saetrack.data.checkpoints import CheckpointSource, checkpoint_architecture, open_source
from saetrack.distributed.ranks import SINGLE, Ranks, barrier
from saetrack.distributed.stages import writer_finishes
from saetrack.pipeline.skeleton import StageRun, finished_manifest, run_stage
from saetrack.sae.io import load_training_sae, save_sae
from saetrack.sae.model import SAETrackSAE
from saetrack.sae.training import TrainResult
from saetrack.stages.chain.calibrate import CALIBRATION_FILE, calibrate_first_link, calibrated_run, with_coefficient
from saetrack.stages.chain.continuity import restart_note
from saetrack.stages.chain.health import check_link_health
from saetrack.stages.chain.links import (
    ACTIVATION_SCALE_ROWS,
    OPTIMIZER_FILE,
    TrainedLink,
    activation_scale,
    evaluate_link,
    link_l1_coefficient,
    link_seed,
    save_link,
    subsample_curve,
    train_and_evaluate_link,
    train_from_scratch,
)

__all__ = [
    "OPTIMIZER_FILE",
    "baseline_config_hash",
    "chain_config_hash",
    "chain_installed",
    "load_chain",
    "output_hashes",
    "read_link_manifests",
    "train_baselines",
    "train_chain",
]


def chain_config_hash(run: RunConfig) -> str:
    """Hash of what the chain depends on: the activation cache's hash, the chain section and the shuffle buffer."""
    payload = {"cache": cache_config_hash(run), "chain": training_fields(run.to_dict()["chain"]), "seed": run.seed}
    if run.cache.buffer_tokens is not None:
        payload["buffer_tokens"] = run.cache.buffer_tokens
    return config_hash(payload)


def baseline_config_hash(run: RunConfig) -> str:
    """Hash of what the baselines depend on (the same inputs as the chain; they also read chain links)."""
    return config_hash({"chain": chain_config_hash(run), "kind": "baseline"})


def _link_record(run: RunConfig, position: int, step: int, trained: TrainedLink) -> dict[str, Any]:
    record = {
        "position": position,
        "step": step,
        "initialised_from": None if trained.first else run.sae_steps[position - 1],
        "lr": trained.lr,
        "activation_scale": trained.scale,
        "l1_coefficient": trained.result.l1_coefficient,
        "training": trained.result.summary(),
        "metrics": trained.quality,
    }
    if run.chain.may_restart:  # the continuity rules' readings (stages.chain.continuity)
        record.update(restarted=trained.restarted, restart_cause=trained.restart_cause,
                      carried_explained_variance=trained.carried_explained_variance,
                      previous_l0=trained.previous_l0, continued_l0=trained.continued_l0,
                      continued_tokens=trained.continued_tokens)  # fmt: skip
    return record


def _train_link_at(
    run: RunConfig,
    stage: StageRun,
    activations: ActivationSource,
    checkpoints: CheckpointSource,
    position: int,
    previous: SAETrackSAE | None,
    optimizer_state: dict[str, Any] | None,
    device: str,
    progress: bool,
    trained: TrainedLink | None = None,
    ranks: Ranks = SINGLE,
    previous_l0: float | None = None,
) -> tuple[dict[str, Any], TrainResult]:
    """Train (:func:`~saetrack.stages.chain.links.train_and_evaluate_link`, given the previous link's recorded L0),
    evaluate and save link ``position``, or save ``trained`` when the calibration trained it; a dead or saturated link
    stops the chain unsaved. With several ``ranks`` all train it and the writer saves it while the others wait."""
    step = run.sae_steps[position]
    desc = f"link {position + 1}/{len(run.sae_steps)} (step {step})"
    if trained is None:
        trained = train_and_evaluate_link(run, activations, checkpoints, position, previous, optimizer_state,
                                          desc=desc, device=device, progress=progress, ranks=ranks,
                                          previous_l0=previous_l0)  # fmt: skip
    result, quality = trained.result, trained.quality
    check_link_health(run, quality, activations.d_model, desc)
    record = _link_record(run, position, step, trained)
    if ranks.writer:
        _save_link_part(run, stage, checkpoints, position, result, record)
    barrier(ranks)
    if progress and ranks.writer:
        print(
            f"{desc}: explained variance {quality['explained_variance']:.3f}, L0 {quality['l0']:.1f}, "
            f"dead {quality['dead_fraction']:.1%}, CE recovered {quality['ce_recovered']:.3f}{restart_note(record)}",
            flush=True,
        )
    return record, result


def _save_link_part(
    run: RunConfig,
    stage: StageRun,
    checkpoints: CheckpointSource,
    position: int,
    result: TrainResult,
    record: dict[str, Any],
) -> None:
    """Save a trained link as part ``chain/step{N}`` (SAE files first, its manifest last)."""
    step = run.sae_steps[position]
    link_dir = stage.folder / paths.step_dir_name(step)
    files = save_link(run, result, link_dir)
    stage.write_part_manifest(  # last: the link counts as finished only from here on
        link_dir,
        stage="chain-link",
        config={
            "chain": run.to_dict()["chain"],
            "position": position,
            "step": step,
            "hook_name": run.cache.hook_name,
            "model_architecture": checkpoint_architecture(checkpoints.checkpoint_dir(step)),
        },
        files=files,
        timings={"train": result.wall_time_s},
        link=record,
        loss_curve=subsample_curve(result.loss_curve),
    )


def _calibration(
    run: RunConfig,
    run_dir: Path,
    stage: StageRun,
    activations: ActivationSource,
    checkpoints: CheckpointSource,
    device: str,
    progress: bool,
    ranks: Ranks,
) -> tuple[dict[str, Any], TrainedLink | None]:
    """λ for the target L0 (:func:`calibrate_first_link`) and the first link when the search trained it. With several
    ranks the writer searches alone, on a source of its own, while the others wait and then read its record; the
    first link is then trained again by all (data-parallel), not handed over from one rank."""
    if not ranks.distributed:
        return calibrate_first_link(run, stage.folder, activations, checkpoints, stage.config_hash, device, progress)
    if ranks.writer:
        alone = open_activations(run, run_dir, checkpoints, device)
        calibrate_first_link(run, stage.folder, alone, checkpoints, stage.config_hash, device, progress)
    barrier(ranks)
    return store.read_json(stage.folder / CALIBRATION_FILE), None


def _build_chain(
    run: RunConfig,
    run_dir: Path,
    stage: StageRun,
    checkpoints: CheckpointSource | None,
    device: str,
    progress: bool,
    after_link: Callable[[int], None] | None,
    ranks: Ranks = SINGLE,
    activations: ActivationSource | None = None,
) -> dict[str, Any]:
    checkpoints = checkpoints if checkpoints is not None else open_source(run.model, Path(run_dir))
    if activations is None:
        activations = open_activations(run, run_dir, checkpoints, device, ranks=ranks)
    configured, calibration, first = run, None, None
    if run.chain.searches_coefficient:  # λ for a target L0, found before the first link and kept along the chain
        calibration, first = _calibration(run, run_dir, stage, activations, checkpoints, device, progress, ranks)
        run = with_coefficient(run, calibration["coefficient"])
    links: list[dict[str, Any]] = []
    previous: SAETrackSAE | None = None
    optimizer_state: dict[str, Any] | None = None
    for position, step in enumerate(run.sae_steps):
        name = paths.step_dir_name(step)
        done = stage.finished_part(name)
        if done is not None:
            l1 = done["link"]["l1_coefficient"]
            previous = load_training_sae(stage.folder / name, run.chain, l1_coefficient=l1, device=device)
            if run.chain.optimizer_policy == "carry":
                optimizer_state = torch.load(stage.folder / name / OPTIMIZER_FILE, weights_only=False)
            links.append(done["link"])
            continue
        record, result = _train_link_at(run, stage, activations, checkpoints, position, previous, optimizer_state,
                                        device, progress, trained=first if position == 0 else None, ranks=ranks,
                                        previous_l0=links[-1]["metrics"]["l0"] if links else None)  # fmt: skip
        links.append(record)
        previous, optimizer_state = result.sae, result.optimizer_state
        if after_link is not None:
            after_link(step)
    extra = {"calibration": calibration} if calibration is not None else {}
    config = {"chain": configured.to_dict()["chain"], "hook_name": run.cache.hook_name}
    return writer_finishes(stage, ranks, config=config, preset=run.preset, steps=list(run.sae_steps), links=links,
                           **extra)  # fmt: skip


def train_chain(
    run: RunConfig,
    run_dir: Path,
    *,
    source: Any | None = None,
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
    after_link: Callable[[int], None] | None = None,
    ranks: Ranks = SINGLE,
    activations: ActivationSource | None = None,
) -> dict[str, Any]:
    """Train (or resume) the SAE-Track chain of ``run`` (Sec. 3.2.2) into ``run_dir/chain``; return its manifest.

    Link ``p`` at checkpoint ``step``: position 0 is built with :func:`~saetrack.sae.model.build_sae` and trained
    for ``chain.first_tokens`` at ``lr_first``; later links start from the previous link's weights
    (:func:`~saetrack.sae.recurrent.recurrent_init`) and train for ``chain.link_tokens`` at ``lr_link``. With
    ``optimizer_policy="carry"`` Adam's moments pass from link to link (saved with each link so a resumed
    run carries them too). ``source`` is the checkpoint source (default: the run's model) used for the CE-loss
    metric; ``after_link(step)`` runs after each finished link (tests use it to interrupt).

    With several ``ranks`` (a ``torchrun`` job, :mod:`saetrack.distributed`) every rank calls this alike: each link
    trains data-parallel and the writer (rank 0) saves it while the others wait, so a job killed and started again
    resumes, on every rank, at the first link the writer had not finished. ``activations`` replaces the run's own
    source (:func:`~saetrack.data.activations.open_activations`; the layers of ``cache.layers`` pass a source
    sharing their forwards, :mod:`saetrack.stages.chain.lockstep`).
    """
    barrier(ranks)  # every rank sees the same finished links
    return run_stage(
        Path(run_dir) / paths.CHAIN_DIR,
        "chain",
        chain_config_hash(run),
        lambda stage: _build_chain(
            run, run_dir, stage, source, device, progress and ranks.writer, after_link, ranks, activations
        ),
        force=force,
    )


def chain_installed(run: RunConfig, run_dir: Path) -> bool:
    """Whether ``run_dir`` holds the finished chain of ``run`` (trained here, or installed from the Hub)."""
    return store.manifest_is_current(Path(run_dir) / paths.CHAIN_DIR, chain_config_hash(run))


def load_chain(run_dir: Path, run: RunConfig | None = None) -> dict[int, Path]:
    """Step -> folder of every link of a finished chain, in chain order (checked against ``run`` when given)."""
    chain_dir = Path(run_dir) / paths.CHAIN_DIR
    manifest = finished_manifest(chain_dir, chain_config_hash(run) if run else None, "chain", "02")
    return {step: chain_dir / paths.step_dir_name(step) for step in manifest["steps"]}


def read_link_manifests(run_dir: Path, folder: str = paths.CHAIN_DIR) -> dict[int, dict[str, Any]]:
    """Step -> manifest (record, metrics and loss curve) of every finished SAE under ``run_dir/folder``."""
    base = Path(run_dir) / folder
    manifests = {}
    for sub in sorted(base.glob("step*")):
        manifest = store.read_manifest(sub)
        if manifest is not None:
            manifests[int(sub.name.removeprefix("step"))] = manifest
    return dict(sorted(manifests.items()))


def _train_baseline_at(
    run: RunConfig,
    stage: StageRun,
    activations: ActivationSource,
    checkpoints: CheckpointSource,
    step: int,
    device: str,
    progress: bool,
    ranks: Ranks = SINGLE,
) -> dict[str, Any]:
    """Train, evaluate and save the independent from-scratch SAE at ``step`` (with several ``ranks``: trained by all,
    data-parallel, saved by the writer while the others wait)."""
    position = run.sae_steps.index(step)
    scale = activation_scale(activations.train_head(step, ACTIVATION_SCALE_ROWS))
    l1 = link_l1_coefficient(run, scale, activations.d_model)
    result = train_from_scratch(
        run,
        activations,
        step,
        l1_coefficient=l1,
        seed=link_seed(run, "baseline", position),
        device=device,
        desc=f"baseline at step {step}",
        progress=progress,
        ranks=ranks,
    )
    quality = evaluate_link(run, result.sae, activations, step, checkpoints, device)
    check_link_health(run, quality, activations.d_model, f"the baseline at step {step}")
    record = {
        "step": step,
        "position": position,
        "activation_scale": scale,
        "l1_coefficient": result.l1_coefficient,
        "training": result.summary(),
        "metrics": quality,
    }
    if ranks.writer:
        folder = stage.folder / paths.step_dir_name(step)
        files = save_sae(result.sae, folder, feature_sparsity=result.feature_frequency)
        stage.write_part_manifest(
            folder,
            stage="baseline-sae",
            config={"chain": run.to_dict()["chain"], "step": step},
            files=files,
            timings={"train": result.wall_time_s},
            baseline=record,
            loss_curve=result.loss_curve,
        )
    barrier(ranks)
    return record


def _build_baselines(
    run: RunConfig,
    run_dir: Path,
    stage: StageRun,
    checkpoints: Any,
    device: str,
    progress: bool,
    ranks: Ranks,
    activations: ActivationSource | None = None,
) -> dict[str, Any]:
    checkpoints = checkpoints if checkpoints is not None else open_source(run.model, Path(run_dir))
    if activations is None:
        activations = open_activations(run, run_dir, checkpoints, device, ranks=ranks)
    configured, run = run, calibrated_run(run, run_dir)  # the chain's λ (calibrated when chain.target_l0 is set)
    records = []
    for step in run.baseline_steps:
        done = stage.finished_part(paths.step_dir_name(step))
        if done is not None:
            records.append(done["baseline"])
            continue
        records.append(_train_baseline_at(run, stage, activations, checkpoints, step, device, progress, ranks))
    chain = configured.to_dict()["chain"]
    return writer_finishes(stage, ranks, config={"chain": chain}, steps=list(run.baseline_steps), baselines=records)


def train_baselines(
    run: RunConfig,
    run_dir: Path,
    *,
    source: Any | None = None,
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
    ranks: Ranks = SINGLE,
    activations: ActivationSource | None = None,
) -> dict[str, Any]:
    """Train the independent from-scratch SAEs at ``chain.baseline`` checkpoints into ``run_dir/baseline``.

    Each baseline is randomly initialised and trained with the first-SAE hyperparameters for
    ``chain.baseline_token_budget`` tokens on its checkpoint's training tokens (the chain link at that checkpoint
    uses the first ``link_tokens`` of the same rows). Finished baselines are kept when the run is resumed. With
    several ``ranks`` each baseline trains data-parallel, as the chain's links do (:func:`train_chain`); ``activations``
    is :func:`train_chain`'s.
    """
    barrier(ranks)
    return run_stage(
        Path(run_dir) / paths.BASELINE_DIR,
        "baseline",
        baseline_config_hash(run),
        lambda stage: _build_baselines(
            run, run_dir, stage, source, device, progress and ranks.writer, ranks, activations
        ),
        force=force,
    )


def output_hashes(run: RunConfig) -> dict[str, str]:
    """Output folder -> config hash of the chain and the from-scratch baselines (notebook 02)."""
    return {paths.CHAIN_DIR: chain_config_hash(run), paths.BASELINE_DIR: baseline_config_hash(run)}
