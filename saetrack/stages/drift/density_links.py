"""The sparse chains of the checkpoint-density study: the chain over every ``s``-th checkpoint, trained link by link.

Each sparse chain starts from the dense chain's first link - the same SAE, read from ``chain/step{N}/``, never
retrained - and trains its later links with the chain stage's own function
(:func:`~saetrack.stages.chain.links.train_and_evaluate_link`): recurrently initialised from the previous link of its
own chain (:func:`~saetrack.sae.recurrent.recurrent_init`), with the chain's λ (calibrated to ``chain.target_l0``
when set, :func:`~saetrack.stages.chain.calibrate.calibrated_run`) scaled by the link's own activations
(:func:`~saetrack.stages.chain.links.link_l1_coefficient`), the link lr, warm-up and budget ``chain.link_tokens``,
and the same rows and seed as the dense link at that checkpoint (:func:`~saetrack.stages.chain.links.link_seed` of
its schedule position, rows ``[0, link_tokens)``), so the only difference from the dense link is the SAE it starts
from. A sparse link that dies or saturates (:func:`~saetrack.stages.chain.health.link_health`) is recorded, not
raised as the chain does: a density that breaks the chain is a result of the study. With
``chain.optimizer_policy="carry"`` Adam's moments pass along the sparse chain, from the first link's.

Each link is saved as ``density/stride{s}/step{N}/`` (SAELens format, with its firing frequency) and counts as
finished once its ``manifest.json`` is written, last, with :func:`density_link_hash`: an interrupted study resumes at
the first unfinished link of each chain and keeps every finished one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from saetrack import paths, store
from saetrack.config.base import config_hash
from saetrack.config.run import RunConfig
from saetrack.data.activations import ActivationSource
from saetrack.data.checkpoints import CheckpointSource
from saetrack.sae.io import load_training_sae
from saetrack.sae.model import SAETrackSAE
from saetrack.stages.chain import chain_config_hash, load_chain, read_link_manifests
from saetrack.stages.chain.calibrate import calibrated_run
from saetrack.stages.chain.health import link_health
from saetrack.stages.chain.links import OPTIMIZER_FILE, save_link, subsample_curve, train_and_evaluate_link
from saetrack.stages.drift.density_rules import density_positions

__all__ = ["ChainLinks", "dense_chain", "density_link_hash", "stride_dir_name", "train_sparse_chain"]


@dataclass(frozen=True)
class ChainLinks:
    """One chain of the study: its stride, and per link (in step order) the step, folder, record and loss curve."""

    stride: int
    steps: list[int]
    folders: list[Path]
    records: list[dict[str, Any]]
    curves: list[dict[str, list[float]] | None]


def density_link_hash(run: RunConfig) -> str:
    """Config hash a finished sparse link carries: the chain's hash (what every link depends on) and this kind."""
    return config_hash({"chain": chain_config_hash(run), "kind": "density-link", "v": 1})


def stride_dir_name(stride: int) -> str:
    """Folder (inside ``density/``) of the chain over every ``stride``-th checkpoint."""
    return f"stride{stride}"


def dense_chain(run: RunConfig, run_dir: Path) -> ChainLinks:
    """The run's own chain as stride 1 of the study: its finished links, records and logged loss curves (reused)."""
    folders = load_chain(run_dir, run)
    manifests = read_link_manifests(run_dir)
    steps = sorted(folders)
    return ChainLinks(1, steps, [folders[s] for s in steps], [manifests.get(s, {}).get("link", {}) for s in steps],
                      [manifests.get(s, {}).get("loss_curve") for s in steps])  # fmt: skip


def _load_state(folder: Path, run: RunConfig) -> dict[str, Any] | None:
    """Adam's state saved with a link (``carry`` policy only; None otherwise or when the link saved none)."""
    path = folder / OPTIMIZER_FILE
    if run.chain.optimizer_policy != "carry" or not path.is_file():
        return None
    return torch.load(path, weights_only=False)


def _train_sparse_link(
    run: RunConfig, folder: Path, activations: ActivationSource, checkpoints: CheckpointSource, position: int,
    previous: SAETrackSAE, state: dict[str, Any] | None, link: tuple[int, int, int], digest: str, device: str,
    progress: bool, previous_l0: float,
) -> tuple[dict[str, Any], SAETrackSAE, dict[str, Any] | None]:  # fmt: skip
    """Train, evaluate and save the sparse link at schedule ``position`` (``link``: stride, index in its chain, the
    previous link's step) as the chain stage trains a later link, its manifest carrying ``digest``
    (:func:`density_link_hash` of the configured run, not of ``run``, whose λ may be the calibrated one); return its
    record, SAE and Adam state. ``previous_l0``: the previous sparse link's recorded held-out L0 (the outcome rule's
    reference, :mod:`saetrack.stages.chain.continuity`)."""
    step, (stride, index, previous_step) = run.sae_steps[position], link
    desc = f"density stride {stride}: link {index + 1} (step {step})"
    trained = train_and_evaluate_link(run, activations, checkpoints, position, previous, state, desc=desc,
                                      device=device, progress=progress, previous_l0=previous_l0)  # fmt: skip
    result, quality, scale = trained.result, trained.quality, trained.scale
    health = link_health(quality, activations.d_model)  # recorded, not raised: a sparse chain that breaks is a result
    files = save_link(run, result, folder)
    carry = run.chain.optimizer_policy == "carry"
    record = {"stride": stride, "index": index, "position": position, "step": step,
              "initialised_from": None if trained.first else previous_step, "lr": trained.lr, "activation_scale": scale,
              "l1_coefficient": result.l1_coefficient, "training": result.summary(), "metrics": quality,
              "health": health, "restarted": trained.restarted}  # fmt: skip  # restarted: the continuity rule
    store.write_manifest(  # last: the link counts as finished only from here on
        folder, stage="density-link", config={"chain": run.to_dict()["chain"], "stride": stride, "step": step},
        config_hash=digest, files=files, timings={"train": result.wall_time_s}, link=record,
        loss_curve=subsample_curve(result.loss_curve),
    )  # fmt: skip
    if progress:
        print(f"{desc}: explained variance {quality['explained_variance']:.3f}, L0 {quality['l0']:.1f}"
              + (f" ({health})" if health else ""), flush=True)  # fmt: skip
    return record, result.sae, result.optimizer_state if carry else None


def train_sparse_chain(
    run: RunConfig, run_dir: Path, out: Path, stride: int, activations: ActivationSource,
    checkpoints: CheckpointSource, *, device: str = "cpu", progress: bool = True, force: bool = False,
    after_link: Callable[[int, int], None] | None = None,
) -> ChainLinks:  # fmt: skip
    """Train (or resume) the chain over every ``stride``-th checkpoint of ``run``'s schedule into
    ``out/stride{stride}/`` (module doc); return its links, the first being the dense chain's own first link.

    Finished links (manifest with :func:`density_link_hash`) are kept unless ``force``; ``after_link(stride, step)``
    runs after each newly trained link (tests use it to interrupt).
    """
    dense = dense_chain(run, run_dir)
    calibrated, digest = calibrated_run(run, run_dir), density_link_hash(run)
    positions = density_positions(len(run.sae_steps), stride)
    first = dense.folders[0]
    l1_first = dense.records[0].get("l1_coefficient")
    previous = load_training_sae(first, calibrated.chain, l1_coefficient=l1_first, device=device)
    state = _load_state(first, run)
    chain = ChainLinks(stride, [dense.steps[0]], [first], [{**dense.records[0], "reused": "chain"}], [dense.curves[0]])
    for index, position in enumerate(positions[1:], start=1):
        step = run.sae_steps[position]
        folder = out / stride_dir_name(stride) / paths.step_dir_name(step)
        done = None if force else store.read_manifest(folder)
        if done is not None and done.get("config_hash") == digest:
            previous = load_training_sae(folder, calibrated.chain, l1_coefficient=done["link"]["l1_coefficient"],
                                         device=device)  # fmt: skip
            state, record, curve = _load_state(folder, run), done["link"], done.get("loss_curve")
        else:
            link = (stride, index, chain.steps[-1])
            record, previous, state = _train_sparse_link(calibrated, folder, activations, checkpoints, position,
                                                         previous, state, link, digest, device, progress,
                                                         chain.records[-1]["metrics"]["l0"])  # fmt: skip
            curve = store.read_manifest(folder)["loss_curve"]  # type: ignore[index]
            if after_link is not None:
                after_link(stride, step)
        chain.steps.append(step)
        chain.folders.append(folder)
        chain.records.append(record)
        chain.curves.append(curve)
    return chain
