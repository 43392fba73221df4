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
from saetrack.crosscoder.activations import build_aligned_activations, snapshot_scales
from saetrack.crosscoder.io import SavedCrosscoder, load_crosscoder, save_crosscoder
from saetrack.crosscoder.quality import crosscoder_metrics
from saetrack.crosscoder.training import train_crosscoder
from saetrack.data.activations import open_activations
from saetrack.data.cache_plan import cache_config_hash, plan_tokens
from saetrack.data.checkpoints import open_source
from saetrack.data.corpus import load_corpus
from saetrack.pipeline.skeleton import StageRun, finished_manifest, run_stage
from saetrack.stages.crosscoder import controls

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


def crosscoder_config_hash(run: RunConfig) -> str:
    """Hash of the whole stage: the trained model's hash and the analysis fields."""
    return config_hash({"training": training_config_hash(run), "crosscoder": run.to_dict()["crosscoder"], "v": 2})


def _activations_hash(run: RunConfig) -> str:
    return config_hash(
        {
            "cache": cache_config_hash(run),
            "steps": list(run.crosscoder_steps),
            "n": run.crosscoder.train_contexts,
            "layout": "snapshot-major",
        }
    )


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


class _Activations:
    """The aligned activations, built (or finished) on first use only: a reused model and reused controls never
    open the checkpoints."""

    def __init__(self, run: RunConfig, run_dir: Path, stage: StageRun, device: str, progress: bool) -> None:
        self.run, self.run_dir, self.stage, self.device, self.progress = run, run_dir, stage, device, progress
        self.data: np.ndarray | None = None
        self.seconds = 0.0

    def __call__(self) -> np.ndarray:
        if self.data is None:
            run = self.run
            _, train_stream, _ = load_corpus(self.run_dir)
            # the first contexts of the training plan (the chain's first SAE reads them too), over the whole stream
            tokens = plan_tokens(run).contexts(train_stream, (0, run.crosscoder.train_contexts))
            checkpoints = open_source(run.model, self.run_dir)
            t0 = time.perf_counter()
            self.data = build_aligned_activations(
                run, self.stage.folder / "activations", tokens, run.crosscoder_steps,
                lambda step: checkpoints.load_hooked(step, device=self.device), key=_activations_hash(run),
                device=self.device, progress=self.progress,
            )  # fmt: skip
            self.seconds = time.perf_counter() - t0
        return self.data


def _train_or_reuse(run: RunConfig, stage: StageRun, activations: _Activations) -> dict[str, Any]:
    """The model part: reuse ``model/`` when trained with this training hash, else train (building activations)."""
    model_dir = stage.folder / paths.CROSSCODER_MODEL_DIR
    key = training_config_hash(run)
    existing = store.read_manifest(model_dir)
    if existing is not None and existing.get("config_hash") == key and not stage.force:
        return existing
    data = activations()
    scales = snapshot_scales(data)
    trained = train_crosscoder(
        data, scales, run.crosscoder, crosscoder_d_sae(run), seed=run.chain_seed, state_dir=stage.folder / "training",
        key=key, device=activations.device, progress=activations.progress,
    )  # fmt: skip
    metadata = {
        "hook_name": run.cache.hook_name,
        "layer": run.cache.layer,
        "model": run.model.repo_id or run.model.source,
        "preset": run.preset,
        "training": run.to_dict()["crosscoder"],
        "train_tokens": int(data.shape[1]) * run.crosscoder.epochs,
        "unique_train_tokens": int(data.shape[1]),
    }
    with stage.part(paths.CROSSCODER_MODEL_DIR) as tmp:
        files = save_crosscoder(trained.model, tmp, snapshot_steps=run.crosscoder_steps, input_scale=scales,
                                metadata=metadata)  # fmt: skip
        store.write_json(tmp / "curve.json", trained.curve)
        manifest = store.write_manifest(
            tmp,
            stage="crosscoder-model",
            config=metadata,
            config_hash=key,
            files=files,
            timings={"activations": activations.seconds, "training": trained.seconds},
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
    (stage.folder / "training" / "state.pt").unlink(missing_ok=True)
    return manifest


def _heldout(run: RunConfig, run_dir: Path, steps: tuple[int, ...], device: str) -> np.ndarray:
    source = open_activations(run, run_dir, device=device)
    columns = [np.asarray(source.heldout(step)[:EVAL_TOKENS], dtype=np.float32) for step in steps]
    return np.stack(columns, axis=1)


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
    run: RunConfig, stage: StageRun, activations: _Activations, heldout: np.ndarray, main: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, float]]:
    """Train (or reuse) the control crosscoders and summarise every null; the ``nulls`` section and timings."""
    manifests = controls.train_controls(
        run, stage.folder, activations, heldout, training_hash=training_config_hash(run), d_sae=crosscoder_d_sae(run),
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
    activations = _Activations(run, run_dir, stage, device, progress)
    model_manifest = _train_or_reuse(run, stage, activations)
    saved = load_crosscoder(stage.folder / paths.CROSSCODER_MODEL_DIR, device=device)
    steps = saved.snapshot_steps
    t0 = time.perf_counter()
    heldout = _heldout(run, run_dir, steps, device)
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
