"""The drift stage (notebook 04): decoder drift, formation times, trajectories and phases (paper Sec. 6, 4.1).

From the chain (notebook 02) and the formation stage (notebook 03):

* the cosine of every feature's decoder direction at every link with its final direction (Fig. 6a, 6b);
* each live feature's formation time (:func:`saetrack.analysis.drift.formed_mask` rule; strict, and tolerating a
  one-checkpoint flicker) — Fig. 7's colours; features whose index was interrupted (pattern "interrupted" of
  notebook 03: inactive or dead between active stretches, the index reused) are counted apart;
* 2-D PCA trajectories of features sampled per evolution pattern (Fig. 7) beside random walks with the same step
  sizes (:mod:`saetrack.stages.drift.trajectories`);
* the phases (:mod:`saetrack.stages.drift.phase_fits`) of (a) the median decoder cosine to final and (b) the median
  concept-level progress measure, against the checkpoint index, log10(step + 1) and the step, with 1 to
  ``drift.max_segments`` segments and the count BIC prefers; the three-segment boundaries and their agreement;
* the drift noise floor (:mod:`saetrack.stages.drift.noise_floor`): the decoder cosine to the final SAE of links
  retrained on the unchanged final checkpoint, and which checkpoints drift beyond it.

The decoders are read one link at a time (:mod:`saetrack.stages.drift.decoders`): the final link's and one other
link's ``W_dec`` in memory, compared a chunk of rows at a time in float64 on the run's device (on the CPU the numbers
of the former ``[T, F, d]`` stack, bit for bit), plus the decoder rows of Fig. 7's few features. Peak host memory
(:func:`drift_peak_bytes`; T links, F features of width d, n trajectory features, M noise-floor links, C = 4,096
rows): ``2 F d 4 + 3 C d 8 + 4 T F 8 + T n d 4 + 2 M F 8`` bytes, 0.71 GB at pythia-410m layer 4 and 2.5 GB at
pythia-1.4b layer 3, where the stack took 39 GB and 156 GB.

Written to ``run_dir/drift/`` (``arrays.npz``, ``manifest.json``); skipped when the manifest matches the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from saetrack import paths, store
from saetrack.analysis import drift as dr
from saetrack.analysis import phases as ph
from saetrack.analysis.formation import checkpoint_positions
from saetrack.config.analysis import drift_hash_fields
from saetrack.config.base import config_hash
from saetrack.config.run import RunConfig
from saetrack.pipeline.skeleton import StageRun, finished_manifest, run_stage
from saetrack.sae.weights import SAEWeights
from saetrack.stages.chain import load_chain
from saetrack.stages.chain.continuity import require_continuous
from saetrack.stages.drift.decoders import drift_peak_bytes, link_drift
from saetrack.stages.drift.noise_floor import kept_noise_floor, noise_floor_numbers
from saetrack.stages.drift.phase_fits import FIGURE_AXIS, fit_perspectives, fitted_curves, phase_records
from saetrack.stages.drift.trajectories import trajectory_arrays, trajectory_features, trajectory_numbers
from saetrack.stages.formation import FormationResult, formation_config_hash, load_formation

__all__ = [
    "ARRAYS_FILE",
    "DRIFT_QUANTILES",
    "FLICKER",
    "PHASE_PROGRESS_KEY",
    "DriftResult",
    "analyse_drift",
    "decoder_stack",
    "drift_config_hash",
    "drift_peak_bytes",
    "load_drift",
    "output_hashes",
    "phase_curves",
    "summary_numbers",
]


ARRAYS_FILE = "arrays.npz"
#: Quantiles of the decoder cosine to final drawn as bands in Fig. 6a.
DRIFT_QUANTILES: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)
#: The progress measure whose concept-level median gives the second perspective on the phases.
PHASE_PROGRESS_KEY = "activation_cosine"
#: The tolerant formation rule forgives unformed runs of at most this many checkpoints.
FLICKER = 1


def drift_config_hash(run: RunConfig) -> str:
    """Hash of the drift stage's inputs: the formation stage's hash (which covers the chain) and the drift section."""
    drift = drift_hash_fields(run.to_dict()["drift"])
    return config_hash({"formation": formation_config_hash(run), "drift": drift, "v": 3})


@dataclass(frozen=True)
class DriftResult:
    """The arrays of a finished drift stage (T checkpoints, F features, L live features, n trajectories)."""

    steps: np.ndarray  # [T]
    cosine: np.ndarray  # [T, F] decoder cosine to final, every feature
    live_features: np.ndarray  # [L]
    quantiles: np.ndarray  # [T, len(DRIFT_QUANTILES)] over live features
    formed: np.ndarray  # [T, L] formed_mask
    formation_time: np.ndarray  # [L] checkpoint index, -1: never formed (strict rule)
    formation_time_tolerant: np.ndarray  # [L] the same, a one-checkpoint flicker forgiven
    interrupted: np.ndarray  # [L] the feature's index was interrupted (notebook 03's pattern)
    final_types: np.ndarray  # [L] label at the final checkpoint ("token" / "concept" / "inactive")
    progress_curve: np.ndarray  # [T] median concept-level progress measure (phases, perspective b)
    drift_phases: dr.Phases | None  # three-segment fit on the checkpoint index; None: too few checkpoints
    progress_phases: dr.Phases | None
    drift_preferred_fit: np.ndarray  # [T] the BIC-preferred fit on the checkpoint index
    progress_preferred_fit: np.ndarray
    agreement: dict[str, Any] | None
    noise_cosine: np.ndarray  # [M, F] decoder cosine to final after m = 1..M noise-floor links
    noise_quantiles: np.ndarray  # [M, len(DRIFT_QUANTILES)] over live features
    beyond_noise: np.ndarray  # [T] median cosine to final below the floor's 5% quantile at the same distance
    histogram_positions: np.ndarray  # checkpoint indices of Fig. 6a's histograms
    sampled_features: np.ndarray  # Fig. 6b
    trajectory_features: np.ndarray  # [n] Fig. 7
    trajectory_patterns: np.ndarray  # [n]
    trajectory_coords: np.ndarray  # [n, T, 2]
    trajectory_variance: np.ndarray  # [n, 2] explained-variance share of PC1, PC2
    trajectory_straightness: np.ndarray  # [n]
    null_variance: np.ndarray  # [n, W, 2] the same for W random walks with the trajectory's step sizes
    null_straightness: np.ndarray  # [n, W]
    step_before: np.ndarray  # [n] mean step size of the direction before formation
    step_after: np.ndarray  # [n] and after it
    manifest: dict[str, Any]

    @property
    def median_cosine(self) -> np.ndarray:
        """Median decoder cosine to final over live features, per checkpoint (perspective a)."""
        return self.quantiles[:, DRIFT_QUANTILES.index(0.5)]

    @property
    def phase_notes(self) -> dict[str, str]:
        """Why the three phases could not be fitted on the figures' axis, per perspective; empty when they were."""
        phases = self.manifest["phases"]
        return {k: phases[k][FIGURE_AXIS]["note"] for k in ("drift", "progress") if phases[k][FIGURE_AXIS]["note"]}

    def formation_time_of(self, feature: int) -> int:
        """Formation time (checkpoint index, -1 never) of feature ``feature`` (an index into all F features)."""
        where = np.nonzero(self.live_features == feature)[0]
        if where.size == 0:
            raise KeyError(f"feature {feature} is not live")
        return int(self.formation_time[where[0]])


def decoder_stack(folders: dict[int, Path], progress: bool = True) -> np.ndarray:
    """``[T, F, d]`` decoder matrices of the chain's links in step order: every link in memory at once (T F d 4
    bytes, 7.8 GB at pythia-410m), for small chains and tests; the stage reads links one at a time
    (:func:`~saetrack.stages.drift.decoders.link_drift`)."""
    return np.stack(
        [
            SAEWeights.load(folders[step]).W_dec.numpy()
            for step in tqdm(sorted(folders), desc="decoders", disable=not progress)
        ]
    )


def _progress_matrix(formation: FormationResult) -> np.ndarray:
    """``[T, n]`` activation-space progress measure of the concept-level live features (all live when none)."""
    values = np.asarray(formation.progress[PHASE_PROGRESS_KEY], dtype=np.float64)
    concept = formation.final_types == "concept"
    return values[:, concept] if concept.any() else values


def phase_curves(formation: FormationResult, cosine: np.ndarray) -> dict[str, np.ndarray]:
    """The two phase curves of Sec. 4.1, ``[T]`` each: ``"drift"``, the median decoder cosine to final (``cosine``
    ``[T, F]``) over live features, and ``"progress"``, the median activation-space progress measure (Eq. 14) of the
    concept-level live features (all live ones when there are none)."""
    live = np.asarray(formation.live_features, dtype=np.int64)
    return {"drift": ph.median_curve(cosine[:, live]), "progress": ph.median_curve(_progress_matrix(formation))}


def _formation_arrays(run: RunConfig, formation: FormationResult, live: np.ndarray) -> dict[str, np.ndarray]:
    """Formed mask and formation times (strict and flicker-tolerant) of the live features, and which of them had
    their index interrupted."""
    progress_live = np.asarray(formation.progress[PHASE_PROGRESS_KEY], dtype=np.float64)
    formed = dr.formed_mask(formation.labels[:, live], formation.dominant[:, live], progress_live,
                            run.drift.formed_fraction)  # fmt: skip
    empty = np.zeros(0, dtype=np.int64)
    return {
        "formed": formed,
        "formation_time": dr.formation_times(formed) if live.size else empty,
        "formation_time_tolerant": dr.formation_times(formed, FLICKER) if live.size else empty,
        "interrupted": np.asarray(formation.patterns)[live] == "interrupted",
        "final_types": np.asarray(formation.final_types, dtype=str),
    }


def _noise_arrays(
    run: RunConfig, run_dir: Path, folders: dict[int, Path], live: np.ndarray, median: np.ndarray, device: str,
    progress: bool, force: bool,
) -> dict[str, Any]:  # fmt: skip
    """The drift noise floor (:func:`~saetrack.stages.drift.noise_floor.kept_noise_floor`: reused when kept for this
    chain, unless ``force``), its quantiles over live features and, per checkpoint, whether the median cosine to final
    lies below the floor's 5% quantile."""
    noise, record = kept_noise_floor(run, run_dir, folders, device=device, progress=progress, force=force)
    n_q = len(DRIFT_QUANTILES)
    with np.errstate(invalid="ignore"):
        quantiles = (
            np.nanquantile(noise[:, live], DRIFT_QUANTILES, axis=1).T
            if live.size and len(noise)
            else np.full((len(noise), n_q), np.nan)
        )
    beyond = dr.beyond_noise_floor(median, quantiles[:, DRIFT_QUANTILES.index(0.05)])
    return {"noise_cosine": noise.astype(np.float32), "noise_quantiles": quantiles, "beyond_noise": beyond,
            "record": record}  # fmt: skip


def _figure_choices(run: RunConfig, formation: FormationResult, steps: np.ndarray, times: np.ndarray) -> dict[str, Any]:
    """Fig. 6a's histogram checkpoints, Fig. 6b's sampled features and Fig. 7's trajectory features."""
    cfg = run.drift
    live = np.asarray(formation.live_features, dtype=np.int64)
    intermediate = steps[:-1] if len(steps) > cfg.n_histograms else steps
    positions = checkpoint_positions(intermediate, np.linspace(0.0, 1.0, cfg.n_histograms))
    features, kinds = trajectory_features(formation.patterns, live, times, cfg.trajectories_per_pattern,
                                          run.chain_seed)  # fmt: skip
    return {
        "histogram_positions": np.asarray(positions, dtype=np.int64),
        "sampled_features": dr.sample_features(live, cfg.n_sampled_features, run.chain_seed),
        "trajectory_features": np.asarray(features, dtype=np.int64),
        "trajectory_patterns": np.asarray(kinds, dtype=str),
    }


def _build_drift(run: RunConfig, run_dir: Path, stage: StageRun, progress: bool, device: str = "cpu") -> dict[str, Any]:
    """Compute the drift analyses over the chain and the formation stage, and write the stage folder atomically."""
    formation = load_formation(run_dir, run)
    folders = load_chain(run_dir, run)
    require_continuous(folders, "drift (notebook 04)")
    steps = np.asarray(sorted(folders))
    live = np.asarray(formation.live_features, dtype=np.int64)
    formed = _formation_arrays(run, formation, live)
    choices = _figure_choices(run, formation, steps, formed["formation_time"])
    chosen = choices["trajectory_features"].tolist()
    cosine, rows = link_drift(folders, chosen, device=device, progress=progress)
    quantiles = (np.nanquantile(cosine[:, live], DRIFT_QUANTILES, axis=1).T if live.size
                 else np.full((len(steps), len(DRIFT_QUANTILES)), np.nan))  # fmt: skip
    curves = phase_curves(formation, cosine)
    findings = fit_perspectives(run, steps, curves)
    for name, finding in ((n, f[FIGURE_AXIS]) for n, f in findings.items()):
        if finding.note:
            print(f"drift stage, phases from {'decoder drift' if name == 'drift' else 'the progress measure'}: "
                  f"{finding.note}", flush=True)  # fmt: skip
    median = quantiles[:, DRIFT_QUANTILES.index(0.5)]
    noise = _noise_arrays(run, run_dir, folders, live, median, device, progress, stage.force)
    time_of = dict(zip(live.tolist(), formed["formation_time"].tolist(), strict=True))
    trajectories = trajectory_arrays(rows, [time_of[f] for f in chosen], run.chain_seed)
    arrays = {"steps": steps, "cosine": cosine.astype(np.float32), "live_features": live, "quantiles": quantiles,
              "progress_curve": curves["progress"], **formed, **fitted_curves(findings, len(steps)),
              **{k: v for k, v in noise.items() if k != "record"}, **choices, **trajectories}  # fmt: skip
    with stage.atomic() as tmp:
        np.savez(tmp / ARRAYS_FILE, **arrays)
        return stage.finish(
            into=tmp,
            config=run.to_dict()["drift"],
            files={ARRAYS_FILE: store.file_sha256(tmp / ARRAYS_FILE)},
            phases=phase_records(findings, steps),
            noise_floor=noise["record"],
        )


def analyse_drift(
    run: RunConfig, run_dir: Path, *, force: bool = False, progress: bool = True, device: str = "cpu"
) -> dict[str, Any]:
    """Run the drift analyses (Sec. 6; Fig. 6a, 6b, 7; phases) over the chain and formation stage of ``run``.

    ``device`` compares the links' decoders (one link at a time), trains the noise-floor links (and, streamed, runs
    the final checkpoint's model). Returns the stage manifest; skipped when ``run_dir/drift`` is current with this
    config.
    """
    return run_stage(
        Path(run_dir) / paths.DRIFT_DIR,
        "drift",
        drift_config_hash(run),
        lambda stage: _build_drift(run, run_dir, stage, progress, device),
        force=force,
    )


def load_drift(run_dir: Path, run: RunConfig | None = None) -> DriftResult:
    """The arrays of a finished drift stage (checked against ``run`` when given)."""
    out = Path(run_dir) / paths.DRIFT_DIR
    manifest = finished_manifest(out, drift_config_hash(run) if run else None, "drift stage", "04")
    data = np.load(out / ARRAYS_FILE, allow_pickle=False)
    phases = manifest["phases"]
    arrays = {name: data[name] for name in data.files if name not in ("drift_fit", "progress_fit")}
    return DriftResult(
        **arrays,
        drift_phases=ph.phases_from_record(phases["drift"][FIGURE_AXIS], data["drift_fit"]),
        progress_phases=ph.phases_from_record(phases["progress"][FIGURE_AXIS], data["progress_fit"]),
        agreement=phases["agreement"],
        manifest=manifest,
    )


def _formation_numbers(result: DriftResult) -> dict[str, Any]:
    """Formation counts by the strict and the flicker-tolerant rule, interrupted identities counted apart."""
    steps, n = result.steps, len(result.steps)
    token = result.final_types == "token"
    out: dict[str, Any] = {"interrupted": int(result.interrupted.sum())}
    for name, times in (("strict", result.formation_time), ("tolerant", result.formation_time_tolerant)):
        kept = times[~result.interrupted]
        formed = kept >= 0
        out[name] = {
            "live": int(kept.size),
            "formed": int(formed.sum()),
            "never_formed": int((~formed).sum()),
            "formed_at_first_checkpoint": int((kept == 0).sum()),
            "formed_only_at_final_checkpoint": int((kept == n - 1).sum()),
            "median_formation_step": int(np.median(steps[kept[formed]])) if formed.any() else None,
        }
        tok = times[token & ~result.interrupted]
        out[name]["token_level_formed_at_first_share"] = float(np.mean(tok == 0)) if tok.size else None
    out["rule"] = (f"strict: formed from the first checkpoint after which it is formed at every checkpoint; tolerant: "
                   f"unformed runs of at most {FLICKER} checkpoint(s) between formed ones are forgiven; features "
                   "with an interrupted index are left out of both")  # fmt: skip
    return out


def summary_numbers(result: DriftResult) -> dict[str, Any]:
    """The numbers behind Sec. 6 and the phases (Sec. 4.1), for the run's results JSON.

    Median decoder cosine to final (live features) at every checkpoint and at the first, middle ((T-1)//2) and
    final-but-one checkpoints; the phase fits of both perspectives on every axis (segment counts, BIC, the preferred
    count, the three-segment boundaries) and their agreement; the drift noise floor; formation counts (strict and
    tolerant rule, interrupted identities apart); how far formed features are still from their final direction when
    they form (the paper: drift continues after formation); Fig. 7's trajectories against their random-walk null.
    """
    steps, median = result.steps, result.median_cosine
    n = len(steps)
    middle, but_one = (n - 1) // 2, max(n - 2, 0)
    times = result.formation_time
    live_cos = result.cosine[:, result.live_features]
    at_formation = np.array([live_cos[t, j] for j, t in enumerate(times) if t > 0 and not result.interrupted[j]],
                            dtype=np.float64)  # fmt: skip
    phases = result.manifest["phases"]
    traj = {k: getattr(result, k) for k in ("trajectory_variance", "null_variance", "trajectory_straightness",
                                            "null_straightness", "step_before", "step_after")}  # fmt: skip
    return {
        "steps": [int(s) for s in steps],
        "median_cosine_curve": [float(v) for v in median],
        "median_cosine_to_final": {
            "first": {"step": int(steps[0]), "value": float(median[0])},
            "middle": {"step": int(steps[middle]), "value": float(median[middle])},
            "final_but_one": {"step": int(steps[but_one]), "value": float(median[but_one])},
        },
        "phase_rule": phases["rule"],
        "phases_from_drift": phases["drift"],
        "phases_from_progress": phases["progress"],
        "phase_agreement": result.agreement,
        "noise_floor": noise_floor_numbers(
            result.manifest["noise_floor"],
            result.steps,
            result.median_cosine,
            result.noise_quantiles[:, [DRIFT_QUANTILES.index(q) for q in (0.05, 0.25, 0.5)]],
        ),
        "formation": _formation_numbers(result),
        "drift_after_formation": {
            "features": int(at_formation.size),
            "median_cosine_at_formation": float(np.nanmedian(at_formation)) if at_formation.size else None,
            "share_below_0.9_at_formation": float(np.mean(at_formation < 0.9)) if at_formation.size else None,
        },
        "trajectories": trajectory_numbers(traj),
    }


def output_hashes(run: RunConfig) -> dict[str, str]:
    """Output folder -> config hash of the drift stage."""
    return {paths.DRIFT_DIR: drift_config_hash(run)}
