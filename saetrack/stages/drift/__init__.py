"""The drift stage (notebook 04): decoder drift, formation times, trajectories and phases (paper Sec. 6, 4.1).

From the chain (notebook 02) and the formation stage (notebook 03):

* the cosine of every feature's decoder direction at every link with its final direction (Fig. 6a, 6b);
* each live feature's formation time (:func:`saetrack.drift.formed_mask` rule) — Fig. 7's colours;
* 2-D PCA trajectories of features sampled per evolution pattern (Fig. 7);
* the phase boundaries detected on (a) the median decoder cosine to final and (b) the median concept-level
  progress measure, both against the checkpoint index (:data:`PHASE_RULE`), with the fits of one and two segments
  beside three and the count BIC prefers, a bootstrap interval over features for each boundary, and their
  agreement; with too few checkpoints for three segments, as many as the curve allows, and the reason;
* the drift noise floor (:mod:`saetrack.stages.drift.noise_floor`): the decoder cosine to the final SAE of links
  retrained on the unchanged final checkpoint, and which checkpoints drift beyond it.

Written to ``run_dir/drift/`` (``arrays.npz``, ``manifest.json``); skipped when the manifest matches the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from saetrack import paths, store
from saetrack.analysis import drift as dr
from saetrack.analysis import phases as ph
from saetrack.analysis.features import PATTERNS
from saetrack.analysis.formation import checkpoint_positions
from saetrack.config.base import config_hash
from saetrack.config.run import RunConfig
from saetrack.pipeline.skeleton import StageRun, finished_manifest, run_stage
from saetrack.sae.weights import SAEWeights
from saetrack.stages.chain import load_chain
from saetrack.stages.drift.noise_floor import noise_floor_numbers, run_noise_floor
from saetrack.stages.formation import FormationResult, formation_config_hash, load_formation

__all__ = [
    "ARRAYS_FILE",
    "DRIFT_QUANTILES",
    "PHASE_PROGRESS_KEY",
    "PHASE_RULE",
    "TRAJECTORY_PATTERNS",
    "DriftResult",
    "analyse_drift",
    "decoder_stack",
    "drift_config_hash",
    "load_drift",
    "output_hashes",
    "summary_numbers",
]


ARRAYS_FILE = "arrays.npz"
#: The change-point rule, as written into the manifest and results.
PHASE_RULE = (
    "boundaries = the two knots of the least-squares continuous three-segment linear fit of the curve against the "
    "checkpoint index (each phase >= drift.min_phase_checkpoints checkpoints); curves: (a) median decoder cosine to "
    "final over live features, (b) median activation-space progress measure of concept-level features; one and two "
    "segments are fitted beside three and compared by BIC = n ln(SSE/n) + 2s ln n (n finite points, s segments: "
    "intercept, slope, s-1 slope changes, s-1 knot positions); each boundary's 5-95% interval comes from "
    "drift.bootstrap_samples resamples of the features behind the curve (seeded from the run seed)"
)
#: Quantiles of the decoder cosine to final drawn as bands in Fig. 6a.
DRIFT_QUANTILES: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)
#: The progress measure whose concept-level median gives the second perspective on the phases.
PHASE_PROGRESS_KEY = "activation_cosine"
#: Evolution patterns whose features get a trajectory in Fig. 7.
TRAJECTORY_PATTERNS: tuple[str, ...] = tuple(p for p in PATTERNS if p != "other")


def drift_config_hash(run: RunConfig) -> str:
    """Hash of the drift stage's inputs: the formation stage's hash (which covers the chain) and the drift section."""
    return config_hash({"formation": formation_config_hash(run), "drift": run.to_dict()["drift"], "v": 2})


@dataclass(frozen=True)
class DriftResult:
    """The arrays of a finished drift stage (T checkpoints, F features, L live features)."""

    steps: np.ndarray  # [T]
    cosine: np.ndarray  # [T, F] decoder cosine to final, every feature
    live_features: np.ndarray  # [L]
    quantiles: np.ndarray  # [T, len(DRIFT_QUANTILES)] over live features
    formed: np.ndarray  # [T, L] formed_mask
    formation_time: np.ndarray  # [L] checkpoint index, -1: never formed
    progress_curve: np.ndarray  # [T] median concept-level progress measure (phases, perspective b)
    drift_phases: dr.Phases | None  # None: too few checkpoints for three phases (see the manifest's note)
    progress_phases: dr.Phases | None
    agreement: dict[str, Any] | None
    drift_bootstrap: np.ndarray  # [B, k] bootstrap knots (k = 2 when three segments were fitted)
    progress_bootstrap: np.ndarray
    noise_cosine: np.ndarray  # [M, F] decoder cosine to final after m = 1..M noise-floor links
    noise_quantiles: np.ndarray  # [M, len(DRIFT_QUANTILES)] over live features
    beyond_noise: np.ndarray  # [T] median cosine to final below the floor's 5% quantile at the same distance
    histogram_positions: np.ndarray  # checkpoint indices of Fig. 6a's histograms
    sampled_features: np.ndarray  # Fig. 6b
    trajectory_features: np.ndarray  # [n] Fig. 7
    trajectory_patterns: np.ndarray  # [n]
    trajectory_coords: np.ndarray  # [n, T, 2]
    trajectory_variance: np.ndarray  # [n, 2] explained-variance share of PC1, PC2
    manifest: dict[str, Any]

    @property
    def median_cosine(self) -> np.ndarray:
        """Median decoder cosine to final over live features, per checkpoint (perspective a)."""
        return self.quantiles[:, DRIFT_QUANTILES.index(0.5)]

    @property
    def phase_notes(self) -> dict[str, str]:
        """Why the phases could not be fitted, per perspective ("drift", "progress"); empty when they were."""
        phases = self.manifest["phases"]
        return {k: phases[k]["note"] for k in ("drift", "progress") if phases[k]["note"]}

    def formation_time_of(self, feature: int) -> int:
        """Formation time (checkpoint index, -1 never) of feature ``feature`` (an index into all F features)."""
        where = np.nonzero(self.live_features == feature)[0]
        if where.size == 0:
            raise KeyError(f"feature {feature} is not live")
        return int(self.formation_time[where[0]])


def decoder_stack(folders: dict[int, Path], progress: bool = True) -> np.ndarray:
    """``[T, F, d]`` decoder matrices of the chain's links in step order."""
    return np.stack(
        [
            SAEWeights.load(folders[step]).W_dec.numpy()
            for step in tqdm(sorted(folders), desc="decoders", disable=not progress)
        ]
    )


def _trajectory_features(
    formation: FormationResult, formation_time: np.ndarray, per_pattern: int, seed: int
) -> tuple[list[int], list[str]]:
    """Features per pattern for Fig. 7, drawn reproducibly among those that formed (preferring later formation).

    Shifting and grouping features are drawn among those formed after the first checkpoint when there are any, so
    the figure shows the unformed-to-formed transition the paper describes; maintaining ones among all formed.
    """
    live_patterns = formation.patterns[formation.live_features]
    chosen: list[int] = []
    kinds: list[str] = []
    for offset, pattern in enumerate(TRAJECTORY_PATTERNS):
        of_pattern = (live_patterns == pattern) & (formation_time >= 0)
        later = of_pattern & (formation_time > 0)
        pool = np.nonzero(later if pattern != "maintaining" and later.any() else of_pattern)[0]
        picks = dr.sample_features(pool, per_pattern, seed + offset)
        chosen += [int(formation.live_features[j]) for j in picks]
        kinds += [pattern] * len(picks)
    return chosen, kinds


def _progress_matrix(formation: FormationResult) -> np.ndarray:
    """``[T, n]`` activation-space progress measure of the concept-level live features (all live when none)."""
    values = np.asarray(formation.progress[PHASE_PROGRESS_KEY], dtype=np.float64)
    concept = formation.final_types == "concept"
    return values[:, concept] if concept.any() else values


def _drift_arrays(
    run: RunConfig, formation: FormationResult, decoders: np.ndarray, steps: np.ndarray
) -> dict[str, Any]:
    """Decoder cosine to final (Fig. 6a/6b), formation times and the phases from drift and progress (Sec. 4.1, 6)."""
    cfg = run.drift
    cosine = dr.cosine_to_final(decoders)
    live = np.asarray(formation.live_features, dtype=np.int64)
    live_cos = cosine[:, live]
    quantiles = np.nanquantile(live_cos, DRIFT_QUANTILES, axis=1).T if live.size else np.full((len(steps), 5), np.nan)

    progress_live = np.asarray(formation.progress[PHASE_PROGRESS_KEY], dtype=np.float64)
    formed = dr.formed_mask(formation.labels[:, live], formation.dominant[:, live], progress_live, cfg.formed_fraction)
    formation_time = dr.formation_times(formed) if live.size else np.zeros(0, dtype=np.int64)

    # phases are fitted against the checkpoint index, the x axis of the paper's Fig. 4 and 6 (Pythia's schedule,
    # like the nano suite's, is log-spaced early and evenly spaced later); each curve is the median over the
    # columns of its matrix, which the bootstrap resamples
    x = np.arange(len(steps), dtype=np.float64)
    progress_matrix = _progress_matrix(formation)
    findings = {
        name: ph.find_phases(
            x, matrix, min_phase=cfg.min_phase_checkpoints, n_boot=cfg.bootstrap_samples, seed=run.chain_seed + offset
        )
        for offset, (name, matrix) in enumerate((("drift", live_cos), ("progress", progress_matrix)))
    }
    return {
        "cosine": cosine,
        "live": live,
        "quantiles": quantiles,
        "formed": formed,
        "formation_time": formation_time,
        "progress_curve": ph.median_curve(progress_matrix),
        "findings": findings,
    }


def _noise_arrays(
    run: RunConfig, run_dir: Path, folders: dict[int, Path], a: dict[str, Any], device: str, progress: bool
) -> dict[str, Any]:
    """The drift noise floor (:func:`~saetrack.stages.drift.noise_floor.run_noise_floor`), its quantiles over live
    features and, per checkpoint, whether the median cosine to final lies below the floor's 5% quantile."""
    noise, record = run_noise_floor(run, run_dir, folders, device=device, progress=progress)
    live = a["live"]
    n_q = len(DRIFT_QUANTILES)
    with np.errstate(invalid="ignore"):
        quantiles = (
            np.nanquantile(noise[:, live], DRIFT_QUANTILES, axis=1).T
            if live.size and len(noise)
            else np.full((len(noise), n_q), np.nan)
        )
    median = a["quantiles"][:, DRIFT_QUANTILES.index(0.5)]
    beyond = dr.beyond_noise_floor(median, quantiles[:, DRIFT_QUANTILES.index(0.05)])
    return {"noise_cosine": noise, "noise_quantiles": quantiles, "beyond_noise": beyond, "record": record}


def _fit_curve(finding: ph.PhaseFinding, n: int) -> np.ndarray:
    """The fitted curve drawn with the phases: three segments, else the largest count fitted (NaN: none)."""
    if finding.phases is not None:
        return finding.phases.fit
    return finding.fits[max(finding.fits)].fit if finding.fits else np.full(n, np.nan)


def _build_drift(run: RunConfig, run_dir: Path, stage: StageRun, progress: bool, device: str = "cpu") -> dict[str, Any]:
    """Compute the drift analyses over the chain and the formation stage, and write the stage folder atomically."""
    cfg = run.drift
    formation = load_formation(run_dir, run)
    folders = load_chain(run_dir, run)
    steps = np.asarray(sorted(folders))
    decoders = decoder_stack(folders, progress)
    a = _drift_arrays(run, formation, decoders, steps)
    findings = a["findings"]
    for name, finding in findings.items():
        if finding.note:
            print(f"drift stage, phases from {'decoder drift' if name == 'drift' else 'the progress measure'}: "
                  f"{finding.note}", flush=True)  # fmt: skip
    d, p = findings["drift"].phases, findings["progress"].phases
    agreement = dr.phase_agreement(d, p, steps.tolist()) if d is not None and p is not None else None
    noise = _noise_arrays(run, run_dir, folders, a, device, progress)

    fractions = np.linspace(0.0, 1.0, cfg.n_histograms)
    intermediate = steps[:-1] if len(steps) > cfg.n_histograms else steps
    hist_positions = np.asarray(checkpoint_positions(intermediate, fractions), dtype=np.int64)
    sampled = dr.sample_features(a["live"], cfg.n_sampled_features, run.chain_seed)
    traj_features, traj_patterns = _trajectory_features(
        formation, a["formation_time"], cfg.trajectories_per_pattern, run.chain_seed
    )
    projections = [dr.trajectory_projection(decoders[:, f]) for f in traj_features] if len(steps) > 1 else []
    coords = np.stack([c for c, _ in projections]) if projections else np.zeros((0, len(steps), 2))
    variance = np.stack([v for _, v in projections]) if projections else np.zeros((0, 2))

    with stage.atomic() as tmp:
        np.savez(
            tmp / ARRAYS_FILE,
            steps=steps,
            cosine=a["cosine"].astype(np.float32),
            live_features=a["live"],
            quantiles=a["quantiles"],
            formed=a["formed"],
            formation_time=a["formation_time"],
            progress_curve=a["progress_curve"],
            drift_fit=_fit_curve(findings["drift"], len(steps)),
            progress_fit=_fit_curve(findings["progress"], len(steps)),
            drift_bootstrap=findings["drift"].bootstrap,
            progress_bootstrap=findings["progress"].bootstrap,
            noise_cosine=noise["noise_cosine"].astype(np.float32),
            noise_quantiles=noise["noise_quantiles"],
            beyond_noise=noise["beyond_noise"],
            histogram_positions=hist_positions,
            sampled_features=sampled,
            trajectory_features=np.asarray(traj_features, dtype=np.int64),
            trajectory_patterns=np.asarray(traj_patterns, dtype=str),
            trajectory_coords=coords,
            trajectory_variance=variance,
        )
        manifest = stage.finish(
            into=tmp,
            config=run.to_dict()["drift"],
            files={ARRAYS_FILE: store.file_sha256(tmp / ARRAYS_FILE)},
            phases={
                "rule": PHASE_RULE,
                "drift": ph.finding_record(findings["drift"], steps),
                "progress": ph.finding_record(findings["progress"], steps),
                "agreement": agreement,
            },
            noise_floor=noise["record"],
        )
    return manifest


def analyse_drift(
    run: RunConfig, run_dir: Path, *, force: bool = False, progress: bool = True, device: str = "cpu"
) -> dict[str, Any]:
    """Run the drift analyses (Sec. 6; Fig. 6a, 6b, 7; phases) over the chain and formation stage of ``run``.

    ``device`` trains the noise-floor links (and, streamed, runs the final checkpoint's model). Returns the stage
    manifest; skipped when ``run_dir/drift`` is current with this config.
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
        drift_phases=ph.phases_from_record(phases["drift"], data["drift_fit"]),
        progress_phases=ph.phases_from_record(phases["progress"], data["progress_fit"]),
        agreement=phases["agreement"],
        manifest=manifest,
    )


def summary_numbers(result: DriftResult) -> dict[str, Any]:
    """The numbers behind Sec. 6 and the phases (issue 5), for the run's results JSON.

    Median decoder cosine to final (live features) at the first, middle ((T-1)//2) and final-but-one checkpoints;
    phase boundaries from both perspectives with their bootstrap intervals, the SSE/BIC of one, two and three
    segments and the preferred count, and their agreement; the drift noise floor; formation counts; and how far
    formed features are still from their final direction when they form (the paper: drift continues after
    formation).
    """
    steps, median = result.steps, result.median_cosine
    n = len(steps)
    middle, but_one = (n - 1) // 2, max(n - 2, 0)
    times = result.formation_time
    formed = times >= 0
    live_cos = result.cosine[:, result.live_features]
    at_formation = np.array([live_cos[t, j] for j, t in enumerate(times) if t > 0], dtype=np.float64)
    phases = result.manifest["phases"]
    return {
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
        "formation": {
            "live": int(times.size),
            "formed": int(formed.sum()),
            "never_formed": int((~formed).sum()),
            "formed_at_first_checkpoint": int((times == 0).sum()),
            "formed_only_at_final_checkpoint": int((times == n - 1).sum()),
            "median_formation_step": int(np.median(steps[times[formed]])) if formed.any() else None,
        },
        "drift_after_formation": {
            "features": int(at_formation.size),
            "median_cosine_at_formation": float(np.nanmedian(at_formation)) if at_formation.size else None,
            "share_below_0.9_at_formation": float(np.mean(at_formation < 0.9)) if at_formation.size else None,
        },
    }


def output_hashes(run: RunConfig) -> dict[str, str]:
    """Output folder -> config hash of the drift stage."""
    return {paths.DRIFT_DIR: drift_config_hash(run)}
