"""The crosscoder stage's training part (notebook 06): the aligned activations, the trained crosscoder in ``model/``
and its control crosscoders in ``controls/``, reused while their training hashes hold.

:func:`train_crosscoders` is the headless function: the notebook's stage calls the same pieces, and a ``torchrun``
job (:mod:`saetrack.pipeline.ranked`) calls it on every rank, so each crosscoder trains data-parallel
(:func:`saetrack.crosscoder.training.train_crosscoder` with ``ranks``): the writer (rank 0) builds the aligned
activations alone (one model forward per snapshot; the other ranks wait, then read them from the shared run
directory), every rank trains its share of each batch, and the writer measures and writes each part. Afterwards
rank 0's notebook finds them current and only evaluates and draws.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import numpy as np

from saetrack import paths, store
from saetrack.analysis import emergence_controls as ec
from saetrack.config.base import config_hash
from saetrack.config.run import RunConfig
from saetrack.crosscoder.activations import build_aligned_activations, snapshot_scales
from saetrack.crosscoder.io import save_crosscoder
from saetrack.crosscoder.training import TrainedCrosscoder, train_crosscoder
from saetrack.data.activations import open_activations
from saetrack.data.cache_plan import cache_config_hash, plan_tokens
from saetrack.data.checkpoints import open_source
from saetrack.data.corpus import load_corpus
from saetrack.distributed.ranks import SINGLE, Ranks, barrier
from saetrack.distributed.stages import written_manifest
from saetrack.stages.crosscoder import controls

__all__ = [
    "ANALYSIS_FIELDS",
    "EVAL_TOKENS",
    "AlignedActivations",
    "crosscoder_d_sae",
    "heldout_activations",
    "train_crosscoders",
    "train_or_reuse",
    "training_config_hash",
]

#: Crosscoder fields that leave the trained model (and its hash) alone: the analyses' thresholds and the switch.
ANALYSIS_FIELDS: tuple[str, ...] = (
    "emergence_fraction",
    "decay_fraction",
    "enabled",
    "controls",
    "dropped_early_max_step",
    "null_permutations",
    "dip_steps",
)
#: At most this many held-out tokens enter the quality metrics (all of nano's 16k; bounds memory at paper scale).
EVAL_TOKENS = 65_536


def crosscoder_d_sae(run: RunConfig) -> int:
    """Dictionary size: ``crosscoder.expansion_factor`` (else the chain's) times ``d_model``."""
    if run.model.d_model is None:
        raise ValueError(f"preset {run.preset!r} does not state model.d_model; the crosscoder's size needs it.")
    return (run.crosscoder.expansion_factor or run.chain.expansion_factor) * run.model.d_model


def training_config_hash(run: RunConfig) -> str:
    """Hash of what the trained crosscoder depends on: the cache's inputs, the snapshots and the training fields."""
    section = {k: v for k, v in run.to_dict()["crosscoder"].items() if k not in ANALYSIS_FIELDS}
    return config_hash(
        {
            "cache": cache_config_hash(run),
            "crosscoder": section,
            "steps": list(run.crosscoder_steps),
            "d_sae": crosscoder_d_sae(run),
            "v": 2,  # 2: the sparse step with fused Adam, decoder norms recorded for the settling rule
        }
    )


def _activations_hash(run: RunConfig) -> str:
    return config_hash(
        {
            "cache": cache_config_hash(run),
            "steps": list(run.crosscoder_steps),
            "n": run.crosscoder.train_contexts,
            "layout": "snapshot-major",
        }
    )


class AlignedActivations:
    """The aligned activations ``[T, N, d]`` (:mod:`saetrack.crosscoder.activations`), built (or finished) on first
    use only: a reused model and reused controls never open the checkpoints. With several ``ranks`` every rank calls
    it alike; the writer builds them while the others wait, then they read the finished file."""

    def __init__(self, run: RunConfig, run_dir: Path, device: str, progress: bool, ranks: Ranks = SINGLE) -> None:
        self.run, self.run_dir, self.device, self.progress, self.ranks = run, run_dir, device, progress, ranks
        self.data: np.ndarray | None = None
        self.seconds = 0.0

    def _build(self) -> np.ndarray:
        run = self.run
        _, train_stream, _ = load_corpus(self.run_dir)
        # the first contexts of the training plan (the chain's first SAE reads them too), over the whole stream
        tokens = plan_tokens(run).contexts(train_stream, (0, run.crosscoder.train_contexts))
        checkpoints = open_source(run.model, self.run_dir)
        return build_aligned_activations(
            run, self.run_dir / paths.CROSSCODER_DIR / "activations", tokens, run.crosscoder_steps,
            lambda step: checkpoints.load_hooked(step, device=self.device), key=_activations_hash(run),
            device=self.device, progress=self.progress and self.ranks.writer,
        )  # fmt: skip

    def __call__(self) -> np.ndarray:
        if self.data is None:
            t0 = time.perf_counter()
            if self.ranks.writer:
                self.data = self._build()
            barrier(self.ranks)
            if self.data is None:  # the writer built every snapshot: this only opens the file
                self.data = self._build()
            self.seconds = time.perf_counter() - t0
        return self.data


def heldout_activations(run: RunConfig, run_dir: Path, steps: tuple[int, ...], device: str) -> np.ndarray:
    """The cache's held-out tokens (at most :data:`EVAL_TOKENS`) at every snapshot of ``steps``, ``[n, T, d]``."""
    source = open_activations(run, run_dir, device=device)
    columns = [np.asarray(source.heldout(step)[:EVAL_TOKENS], dtype=np.float32) for step in steps]
    return np.stack(columns, axis=1)


def _model_manifest(
    run: RunConfig,
    data: np.ndarray,
    trained: TrainedCrosscoder,
    key: str,
    tmp: Path,
    seconds: float,
    scales: np.ndarray,
) -> dict[str, Any]:
    """Write the trained crosscoder, its loss curve and its manifest (settling, emergence during training) to
    ``tmp``."""
    metadata = {
        "hook_name": run.cache.hook_name,
        "layer": run.cache.layer,
        "model": run.model.repo_id or run.model.source,
        "preset": run.preset,
        "training": run.to_dict()["crosscoder"],
        "train_tokens": int(data.shape[1]) * run.crosscoder.epochs,
        "unique_train_tokens": int(data.shape[1]),
    }
    files = save_crosscoder(trained.model, tmp, snapshot_steps=run.crosscoder_steps, input_scale=scales,
                            metadata=metadata)  # fmt: skip
    store.write_json(tmp / "curve.json", trained.curve)
    return store.write_manifest(
        tmp,
        stage="crosscoder-model",
        config=metadata,
        config_hash=key,
        files=files,
        timings={"activations": seconds, "training": trained.seconds},
        train_steps=trained.steps,
        unique_train_tokens=int(data.shape[1]),
        train_tokens=int(data.shape[1]) * run.crosscoder.epochs,
        settling=ec.settling(trained.norm_steps, trained.norm_records, trained.steps).to_dict(),
        emergence_during_training={
            "step": trained.norm_steps.tolist(),
            "emerged_at_first": ec.emergence_during_training(
                trained.norm_records, run.crosscoder.emergence_fraction, trained.live
            ),
            "alive": "fired within the last crosscoder.dead_window_tokens training tokens",
        },
    )


def train_or_reuse(
    run: RunConfig, stage_folder: Path, activations: AlignedActivations, *, force: bool = False, ranks: Ranks = SINGLE
) -> dict[str, Any]:
    """The model part ``stage_folder/model``: reused when trained with this training hash (unless ``force``), else
    trained (building the activations) and written; its manifest. With several ``ranks`` all train, the writer
    writes and every rank returns its manifest."""
    model_dir = stage_folder / paths.CROSSCODER_MODEL_DIR
    key = training_config_hash(run)
    existing = store.read_manifest(model_dir)
    if existing is not None and existing.get("config_hash") == key and not force:
        return existing
    data = activations()
    scales = snapshot_scales(data)
    trained = train_crosscoder(
        data, scales, run.crosscoder, crosscoder_d_sae(run), seed=run.chain_seed, state_dir=stage_folder / "training",
        key=key, device=activations.device, progress=activations.progress, ranks=ranks,
    )  # fmt: skip
    if ranks.writer:
        with store.atomic_dir(model_dir) as tmp:
            _model_manifest(run, data, trained, key, tmp, activations.seconds, scales)
        (stage_folder / "training" / "state.pt").unlink(missing_ok=True)
    return written_manifest(model_dir, ranks)


def train_crosscoders(
    run: RunConfig,
    run_dir: Path,
    *,
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
    ranks: Ranks = SINGLE,
) -> dict[str, Any]:
    """Train (or reuse) the crosscoder of ``run`` and its controls into ``run_dir/crosscoder`` (module doc); return
    ``{"model": manifest, "controls": {name: manifest}}``. Nothing is evaluated or drawn here beyond each control's
    own metrics: notebook 06 does the rest. Every rank of ``ranks`` calls this alike."""
    folder = Path(run_dir) / paths.CROSSCODER_DIR
    folder.mkdir(parents=True, exist_ok=True)
    activations = AlignedActivations(run, Path(run_dir), device, progress, ranks)
    model = train_or_reuse(run, folder, activations, force=force, ranks=ranks)
    heldout = functools.cache(lambda: heldout_activations(run, Path(run_dir), run.crosscoder_steps, device))
    trained = controls.train_controls(
        run, folder, activations, heldout,
        training_hash=training_config_hash(run), d_sae=crosscoder_d_sae(run), device=device, progress=progress,
        force=force, ranks=ranks,
    )  # fmt: skip
    return {"model": model, "controls": trained}
