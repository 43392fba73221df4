"""The seed-to-seed control of feature agreement (Fig. S5): a second from-scratch SAE at baseline checkpoints.

Chain and from-scratch SAEs agree only as far as two from-scratch SAEs do. At the baseline checkpoints named by
``chain.seed_control`` (:attr:`~saetrack.config.chain.ChainConfig.seed_control_indices`) a second independent SAE is
trained exactly as the baseline is - the same L1 coefficient (the baseline's, as recorded), rows ``[0, budget)`` of
the checkpoint's training tokens, ``baseline_token_budget`` tokens, ``lr_first`` and its warmup, fresh Adam - with
one difference: its seed (initialisation and the shuffle of those rows), derived from the run seed and distinct from
the baseline's. The comparison stage matches it to the first one as it matches the chain link.

Each SAE is saved as ``comparison/seed_control/step{N}/`` (SAELens format) with its manifest written last, under
its own config hash (the baselines' inputs), so an interrupted comparison resumes with the finished ones and a
change of ``chain.seed_control`` keeps them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from saetrack import paths, store
from saetrack.config.base import config_hash
from saetrack.config.run import RunConfig
from saetrack.data.activations import ActivationSource, open_activations
from saetrack.data.checkpoints import CheckpointSource, open_source
from saetrack.sae.io import save_sae
from saetrack.stages.chain import baseline_config_hash, read_link_manifests
from saetrack.stages.chain.links import evaluate_link, link_seed, subsample_curve, train_from_scratch

__all__ = [
    "SEED_CONTROL_DIR",
    "seed_control_config_hash",
    "seed_control_folder",
    "seed_control_seed",
    "seed_control_steps",
    "train_seed_controls",
]


#: Subfolder of ``comparison/`` holding the second-seed SAEs.
SEED_CONTROL_DIR = "seed_control"


def seed_control_steps(run: RunConfig) -> tuple[int, ...]:
    """Training steps of the baseline checkpoints that get a second-seed SAE (``chain.seed_control``)."""
    return tuple(run.model.checkpoint_steps[i] for i in run.chain.seed_control_indices)


def seed_control_seed(run: RunConfig, position: int) -> int:
    """Seed of the second from-scratch SAE at schedule ``position``: derived from the run seed (through the baseline's
    seed), and not the baseline's."""
    seed = int(np.random.SeedSequence([link_seed(run, "baseline", position), 1]).generate_state(1)[0])
    return seed if seed != link_seed(run, "baseline", position) else seed + 1


def seed_control_config_hash(run: RunConfig) -> str:
    """Hash of what a second-seed SAE depends on: the baselines' inputs (not which checkpoints get one)."""
    return config_hash({"baseline": baseline_config_hash(run), "kind": "seed-control", "v": 1})


def seed_control_folder(run_dir: Path, step: int) -> Path:
    """Folder of the second-seed SAE at ``step``."""
    return Path(run_dir) / paths.COMPARISON_DIR / SEED_CONTROL_DIR / paths.step_dir_name(step)


def _train_at(
    run: RunConfig,
    run_dir: Path,
    activations: ActivationSource,
    checkpoints: CheckpointSource,
    step: int,
    baseline: dict[str, Any],
    device: str,
    progress: bool,
) -> dict[str, Any]:
    """Train, evaluate and save the second-seed SAE at ``step`` with the settings of ``baseline`` (its record)."""
    position = run.sae_steps.index(step)
    seed = seed_control_seed(run, position)
    result = train_from_scratch(
        run,
        activations,
        step,
        l1_coefficient=baseline["l1_coefficient"],
        seed=seed,
        device=device,
        desc=f"seed control at step {step}",
        progress=progress,
    )
    quality = evaluate_link(run, result.sae, activations, step, checkpoints, device)
    folder = seed_control_folder(run_dir, step)
    files = save_sae(result.sae, folder, feature_sparsity=result.feature_frequency)
    record = {
        "step": step,
        "position": position,
        "seed": seed,
        "baseline_seed": link_seed(run, "baseline", position),
        "l1_coefficient": result.l1_coefficient,
        "training": result.summary(),
        "metrics": quality,
    }
    store.write_manifest(  # last: the SAE counts as finished only from here on
        folder,
        stage="seed-control-sae",
        config={"chain": run.to_dict()["chain"], "step": step},
        config_hash=seed_control_config_hash(run),
        files=files,
        timings={"train": result.wall_time_s},
        seed_control=record,
        loss_curve=subsample_curve(result.loss_curve),
    )
    return record


def train_seed_controls(
    run: RunConfig,
    run_dir: Path,
    *,
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train (or reuse) the second-seed SAE at each of :func:`seed_control_steps`; return their records.

    A finished SAE made with the current :func:`seed_control_config_hash` is reused unless ``force``. Each record
    holds the step, both seeds, the L1 coefficient, the training summary (``wall_time_s``) and held-out metrics.
    """
    steps = seed_control_steps(run)
    if not steps:
        return []
    baselines = read_link_manifests(run_dir, paths.BASELINE_DIR)
    missing = [s for s in steps if s not in baselines]
    if missing:
        raise store.StaleArtifactError(f"no baseline SAE at steps {missing}; run train_baselines first.")
    records, sources = [], None
    for step in steps:
        done = store.read_manifest(seed_control_folder(run_dir, step))
        if not force and done is not None and done.get("config_hash") == seed_control_config_hash(run):
            records.append(done["seed_control"])
            continue
        if sources is None:
            checkpoints = open_source(run.model, Path(run_dir))
            sources = (open_activations(run, run_dir, checkpoints, device), checkpoints)
        records.append(_train_at(run, run_dir, *sources, step, baselines[step]["baseline"], device, progress))
    return records
