"""The crosscoder stage (notebook 06): aligned activations, a trained cross-snapshot crosscoder, its quality and the
feature evolution it measures (Ge et al. 2025; issue 14, items 1-3), with the controls of that reading (issue 20).

Written to ``run_dir/crosscoder/``:

* ``activations/`` — the first ``crosscoder.train_contexts`` training contexts at every snapshot, ``[T, N, d]``
  (:mod:`saetrack.crosscoder.activations`; built one snapshot at a time, resumable);
* ``training/state.pt`` — the training state every ``crosscoder.save_every`` steps (resumable);
* ``model/`` — the crosscoder in its documented format (:mod:`saetrack.crosscoder.io`), with its own manifest (the
  settling of its decoder norms, :func:`saetrack.analysis.emergence_controls.settling`, and the share emerging at the
  first snapshot at every norm record); it is reused while the training config is unchanged, so changing an analysis
  field (:data:`ANALYSIS_FIELDS`) does not retrain;
* ``controls/<name>/`` — the control crosscoders, trained exactly like it (:mod:`.controls`: one snapshot repeated,
  the early snapshots dropped, centred inputs), each reused while its own training hash holds;
* ``arrays.npz`` + ``manifest.json`` — decoder norms ``[F, T]``, emergence, decaying initialisation features,
  cosines to the final direction, the adjacent-snapshot median cosine (directional turning point), the per-snapshot
  quality on the cache's held-out tokens, the loss curve; emergence at every fraction of
  :data:`~saetrack.analysis.emergence_controls.EMERGENCE_FRACTIONS`, the dip of the median normalised norm, and the
  nulls (:func:`.controls.nulls_summary`); timings of every part.

The activations, ``model/`` and ``controls/`` are the training part (:mod:`.training`), which a ``torchrun`` job or
a spread unit runs headless (:func:`.training.train_crosscoders`) before this stage only evaluates them.

The crosscoder reads the chain's hook (``cache.layer``) on the run's checkpoints: ``run.crosscoder_steps``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from saetrack import paths, store
from saetrack.analysis import emergence_controls as ec
from saetrack.analysis import evolution as ev
from saetrack.config.base import config_hash
from saetrack.config.run import RunConfig
from saetrack.crosscoder.io import SavedCrosscoder, load_crosscoder
from saetrack.crosscoder.quality import crosscoder_metrics
from saetrack.pipeline.skeleton import StageRun, finished_manifest, run_stage
from saetrack.stages.crosscoder import controls
from saetrack.stages.crosscoder.training import (
    ANALYSIS_FIELDS,
    EVAL_TOKENS,
    AlignedActivations,
    crosscoder_d_sae,
    heldout_activations,
    train_or_reuse,
    training_config_hash,
)

__all__ = [
    "ANALYSIS_FIELDS",
    "ARRAYS_FILE",
    "EVAL_TOKENS",
    "CrosscoderResult",
    "analyse_crosscoder",
    "crosscoder_config_hash",
    "crosscoder_d_sae",
    "load_crosscoder_result",
    "output_hashes",
    "summary_numbers",
    "training_config_hash",
]


ARRAYS_FILE = "arrays.npz"


def crosscoder_config_hash(run: RunConfig) -> str:
    """Hash of the whole stage: the trained model's hash and the analysis fields."""
    return config_hash({"training": training_config_hash(run), "crosscoder": run.to_dict()["crosscoder"], "v": 2})


@dataclass(frozen=True)
class CrosscoderResult:
    """The arrays of a finished crosscoder stage (F features, T snapshots)."""

    steps: np.ndarray  # [T] training steps of the snapshots
    norms: np.ndarray  # [F, T] decoder norms
    alive: np.ndarray  # [F] fired on some held-out token
    emergence: np.ndarray  # [F] snapshot index, -1: dead
    decaying: np.ndarray  # [F] initialisation features that decay
    cosine_to_final: np.ndarray  # [F, T] decoder direction vs the last snapshot's, NaN where absent
    adjacent_median: np.ndarray  # [T-1] median cosine between consecutive snapshots
    explained_variance: np.ndarray  # [T]
    l0_present: np.ndarray  # [T]
    absent_fraction: np.ndarray  # [T]
    curve_step: np.ndarray
    curve_mse: np.ndarray
    curve_l0: np.ndarray
    manifest: dict[str, Any]

    @property
    def turning_point(self) -> int:
        """Snapshot index of the directional turning point (lowest median adjacent cosine)."""
        return int(self.manifest["turning_point"]["index"])


def _evolution(saved: SavedCrosscoder, alive: np.ndarray, run: RunConfig) -> dict[str, Any]:
    w_dec = saved.model.W_dec.detach().cpu().numpy()
    norms = ev.decoder_norm_matrix(w_dec)
    emergence = ev.emergence_index(norms, run.crosscoder.emergence_fraction, alive)
    present = ev.present_mask(norms, run.crosscoder.emergence_fraction) & alive[:, None]
    adjacent = ev.adjacent_cosine(w_dec, present)
    turn, adjacent_median = ev.turning_point(adjacent) if adjacent.size else (0, np.zeros(0))
    return {
        "norms": norms.astype(np.float32),
        "emergence": emergence,
        "decaying": ev.decaying_initial_features(norms, emergence, run.crosscoder.decay_fraction) & alive,
        "cosine_to_final": ev.cosine_to_final(w_dec, present).astype(np.float32),
        "adjacent_median": adjacent_median,
        "turning_point": turn,
    }


def _controls(
    run: RunConfig, stage: StageRun, activations: AlignedActivations, heldout: np.ndarray, main: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, float]]:
    """Train (or reuse) the control crosscoders and summarise every null; the ``nulls`` section and timings."""
    manifests = controls.train_controls(
        run, stage.folder, activations, lambda: heldout, training_hash=training_config_hash(run),
        d_sae=crosscoder_d_sae(run),
        device=activations.device, progress=activations.progress, force=stage.force,
    )  # fmt: skip
    t0 = time.perf_counter()
    nulls = controls.nulls_summary(run, main, controls.load_controls(stage.folder, run), manifests)
    timings = {
        f"{part}_{name}": m["timings_s"][part] for name, m in manifests.items() for part in ("training", "evaluation")
    }
    return nulls, {**timings, "nulls": time.perf_counter() - t0}


def _build(run: RunConfig, run_dir: Path, stage: StageRun, device: str, progress: bool) -> dict[str, Any]:
    stage.folder.mkdir(parents=True, exist_ok=True)
    activations = AlignedActivations(run, run_dir, device, progress)
    model_manifest = train_or_reuse(run, stage.folder, activations, force=stage.force)
    saved = load_crosscoder(stage.folder / paths.CROSSCODER_MODEL_DIR, device=device)
    steps = saved.snapshot_steps
    t0 = time.perf_counter()
    heldout = heldout_activations(run, run_dir, steps, device)
    metrics = crosscoder_metrics(
        saved.model,
        heldout,
        saved.input_scale,
        present_fraction=run.crosscoder.emergence_fraction,
        batch_size=run.crosscoder.batch_size,
        device=device,
    )
    alive = metrics.pop("fire_counts") > 0
    evo = _evolution(saved, alive, run)
    curve = store.read_json(stage.folder / paths.CROSSCODER_MODEL_DIR / "curve.json")
    t_eval = time.perf_counter() - t0
    main = {"steps": np.asarray(steps), "norms": evo["norms"], "alive": alive, "emergence": evo["emergence"],
            "w_dec_last": saved.model.W_dec.detach().cpu().numpy()[:, -1]}  # fmt: skip
    nulls, control_timings = _controls(run, stage, activations, heldout, main)
    path = stage.folder / ARRAYS_FILE
    with store.atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(
                handle,
                steps=np.asarray(steps),
                alive=alive,
                explained_variance=np.asarray(metrics["explained_variance"]),
                l0_present=np.asarray(metrics["l0_present"]),
                absent_fraction=np.asarray(metrics["absent_fraction"]),
                curve_step=np.asarray(curve["step"]),
                curve_mse=np.asarray(curve["mse"]),
                curve_l0=np.asarray(curve["l0"]),
                **{k: v for k, v in evo.items() if k != "turning_point"},
            )
    turn = evo["turning_point"]
    return stage.finish(
        config=run.to_dict()["crosscoder"],
        files={ARRAYS_FILE: store.file_sha256(path)},
        timings={**model_manifest["timings_s"], "evaluation": t_eval, **control_timings},
        steps=list(steps),
        d_sae=saved.model.shape.d_sae,
        train_tokens=model_manifest["train_tokens"],
        unique_train_tokens=model_manifest["unique_train_tokens"],
        train_steps=model_manifest["train_steps"],
        metrics=metrics,
        turning_point={"index": turn, "step": int(steps[turn]) if len(steps) else None},
        settling=model_manifest["settling"],
        emergence_during_training=model_manifest["emergence_during_training"],
        emergence=controls.emergence_numbers(evo["norms"], alive, np.asarray(steps), run.crosscoder.emergence_fraction),
        median_norm_dip=ec.median_norm_dip(evo["norms"], alive, steps, run.crosscoder.dip_steps),
        nulls=nulls,
    )


def analyse_crosscoder(
    run: RunConfig, run_dir: Path, *, force: bool = False, progress: bool = True, device: str = "cpu"
) -> dict[str, Any]:
    """Train (or reuse) the crosscoder of ``run`` and measure its quality and feature evolution; return the manifest.

    Skipped when ``run_dir/crosscoder`` is current; ``force`` retrains (the cached activations are reused when they
    were made for the same tokens and snapshots).
    """
    return run_stage(
        Path(run_dir) / paths.CROSSCODER_DIR,
        "crosscoder",
        crosscoder_config_hash(run),
        lambda stage: _build(run, Path(run_dir), stage, device, progress),
        force=force,
    )


def load_crosscoder_result(run_dir: Path, run: RunConfig | None = None) -> CrosscoderResult:
    """The arrays of a finished crosscoder stage (checked against ``run`` when given)."""
    out = Path(run_dir) / paths.CROSSCODER_DIR
    manifest = finished_manifest(out, crosscoder_config_hash(run) if run else None, "crosscoder stage", "06")
    data = np.load(out / ARRAYS_FILE, allow_pickle=False)
    return CrosscoderResult(**{name: data[name] for name in data.files}, manifest=manifest)


def summary_numbers(result: CrosscoderResult) -> dict[str, Any]:
    """The crosscoder's numbers for ``results.json``: size, budget and settling, quality, emergence at every fraction
    with its nulls and controls, the norm dip and the turning point."""
    m = result.manifest
    steps = result.steps.tolist()
    alive = result.emergence >= 0
    counts = np.bincount(result.emergence[alive], minlength=len(steps))
    dip = m["median_norm_dip"]
    settling = m["settling"]
    return {
        "snapshots": len(steps),
        "d_sae": m["d_sae"],
        "train_tokens": m["train_tokens"],
        "unique_train_tokens": m["unique_train_tokens"],
        "training": {
            **{k: settling[k] for k in ("steps", "criterion", "settled", "final_relative_change", "window_steps")},
            "epochs": m["train_tokens"] / m["unique_train_tokens"],
            "relative_change_curve": settling["curve"],
            "final_absolute_change": settling["final_absolute_change"],
            "emerged_at_first_during_training": m["emergence_during_training"],
        },
        "seconds": {k: round(v, 1) for k, v in m["timings_s"].items()},
        "explained_variance": {
            "first": result.explained_variance[0],
            "min": float(result.explained_variance.min()),
            "final": result.explained_variance[-1],
        },
        "l0": m["metrics"]["l0"],
        "dead_fraction": m["metrics"]["dead_fraction"],
        "alive_features": int(alive.sum()),
        "emerged_at_first_snapshot": float(counts[0] / max(1, alive.sum())),
        "emergence_counts": {str(s): int(c) for s, c in zip(steps, counts, strict=True)},
        "emergence_at_first": m["emergence"]["emerged_at_first"],
        "emergence_histogram": m["emergence"]["emergence_histogram"],
        "median_norm_dip": dip["dip"],
        "median_norm_dip_step": dip["step"],
        "median_norm_dip_window": dip["window"],
        "median_norm_dip_definition": "1 - min over snapshots in the window of m / m at the first snapshot, m the "
        "median over alive features of the decoder norm divided by the feature's maximum",
        "nulls": m["nulls"],
        "median_emergence_step": int(np.asarray(steps)[int(np.median(result.emergence[alive]))])
        if alive.any()
        else None,
        "initialisation_features_decaying": int(result.decaying.sum()),
        "turning_point_step": m["turning_point"]["step"],
        "min_adjacent_median_cosine": float(np.nanmin(result.adjacent_median)) if result.adjacent_median.size else None,
    }


def output_hashes(run: RunConfig) -> dict[str, str]:
    """The crosscoder stage's output folder and the config hash its manifest must carry."""
    return {paths.CROSSCODER_DIR: crosscoder_config_hash(run)}
