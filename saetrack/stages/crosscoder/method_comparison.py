"""SAE-Track beside the crosscoder on the same checkpoints and tokens (notebook 06; issue 14, item 5).

Reads the chain (notebook 02), the drift stage's formation times and phases (notebook 04), the crosscoder stage and
the statistical-learning stage, and writes ``run_dir/crosscoder_vs_chain/`` (``arrays.npz`` + ``manifest.json``):

* matched decoder cosines, crosscoder vs chain, at every snapshot both have
  (:func:`saetrack.analysis.method_comparison.match_per_snapshot`; at most :data:`MAX_MATCH_FEATURES` per side,
  a seeded sample above that, since the Hungarian algorithm is cubic);
* the chance level of that matching: the same crosscoder directions matched to as many random unit vectors
  (:func:`saetrack.analysis.method_comparison.random_matching_baseline`), per snapshot;
* crosscoder emergence against chain formation for matched features: Kendall's tau-b (ties handled) with a
  permutation null (:func:`saetrack.analysis.method_comparison.rank_agreement`), and Spearman's rho;
* the phase boundaries from four perspectives on one timeline — chain decoder drift and progress measure (drift
  stage), crosscoder emergence (the same change-point rule, :func:`saetrack.analysis.phases.find_phases`, on the
  median normalised decoder norm of alive crosscoder features), statistical learning (the step where the unigram KL
  has fallen below its threshold share of the first checkpoint's, and the step of the smallest bigram KL) — and their
  agreement;
* the cost of each method: tokens, activation forwards, wall time, parameters and activation storage, and how each
  grows with the number of checkpoints ``T``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from saetrack import paths, store
from saetrack.analysis import method_comparison as mc
from saetrack.analysis import phases as ph
from saetrack.analysis.evolution import present_mask
from saetrack.config.base import config_hash
from saetrack.config.run import RunConfig
from saetrack.crosscoder.io import load_crosscoder
from saetrack.data.cache_plan import NUMPY_DTYPES
from saetrack.pipeline.skeleton import StageRun, finished_manifest, run_stage
from saetrack.sae.weights import SAEWeights
from saetrack.stages import crosscoder as cc_stage
from saetrack.stages.chain import load_chain, read_link_manifests
from saetrack.stages.crosscoder import statistics as stat_stage
from saetrack.stages.drift import drift_config_hash, load_drift

__all__ = [
    "ARRAYS_FILE",
    "MATCH_THRESHOLD",
    "MAX_MATCH_FEATURES",
    "compare_methods",
    "comparison_config_hash",
    "load_method_comparison",
    "output_hashes",
]


ARRAYS_FILE = "arrays.npz"
#: Largest dictionary side matched with the Hungarian algorithm at each snapshot (a seeded sample above).
MAX_MATCH_FEATURES = 4096
#: Matched pairs with a decoder cosine below this are not the same feature (the chain's agreement threshold).
MATCH_THRESHOLD = mc.MATCH_THRESHOLD


def comparison_config_hash(run: RunConfig) -> str:
    """Hash of the comparison's inputs: the crosscoder, drift and statistics stages' hashes."""
    return config_hash(
        {
            "crosscoder": cc_stage.crosscoder_config_hash(run),
            "drift": drift_config_hash(run),
            "statistics": stat_stage.output_hashes(run)[paths.STATISTICS_DIR],
            "v": 4,
        }
    )


def _sample(indices: np.ndarray, seed: int) -> np.ndarray:
    if indices.size <= MAX_MATCH_FEATURES:
        return indices
    return np.sort(np.random.default_rng(seed).choice(indices, MAX_MATCH_FEATURES, replace=False))


def _statistical_boundaries(stats: stat_stage.StatisticsResult) -> list[int]:
    """Two boundaries of statistical learning: the unigram statistics learned (the unigram KL below its settled
    share of the first checkpoint's), and the bigram statistics learned (the checkpoint of the smallest bigram KL,
    after which the model moves away from them); fewer when a curve gives none."""
    numbers = stat_stage.summary_numbers(stats)
    bounds = [numbers["unigram_kl_settled_step"], numbers["bigram_kl_min_step"]]
    return [int(b) for b in bounds if b is not None]


def _phase_steps(phases: ph.Phases | None, steps: np.ndarray) -> list[int]:
    """The steps of the three-segment fit's two boundaries (none when three segments could not be fitted)."""
    return [] if phases is None else [int(steps[phases.emergent]), int(steps[phases.convergent])]


def _costs(run: RunConfig, run_dir: Path, cc_manifest: dict[str, Any], d_model: int) -> dict[str, Any]:
    links = read_link_manifests(run_dir)
    chain_manifest = store.read_manifest(Path(run_dir) / paths.CHAIN_DIR) or {}
    chain_tokens = sum(int(m["link"]["training"]["n_tokens"]) for m in links.values())
    t, d_sae = len(cc_manifest["steps"]), cc_manifest["d_sae"]
    itemsize = NUMPY_DTYPES[run.cache.dtype].itemsize
    chain_sae = run.chain.expansion_factor * d_model
    timings = cc_manifest["timings_s"]
    return {
        "checkpoints": {"chain": len(links), "crosscoder": t},
        "training_tokens": {"chain": chain_tokens, "crosscoder": cc_manifest["train_tokens"]},
        "activation_vectors_read": {"chain": chain_tokens, "crosscoder": cc_manifest["train_tokens"] * t},
        "model_forwards_per_token": {"chain": 1, "crosscoder": t},
        "wall_seconds": {
            "chain": round(float(chain_manifest.get("timings_s", {}).get("total", float("nan"))), 1),
            "crosscoder_activations": round(timings.get("activations", 0.0), 1),
            "crosscoder_training": round(timings.get("training", 0.0), 1),
        },
        "parameters": {"chain_per_link": 2 * chain_sae * d_model, "crosscoder": 2 * d_sae * t * d_model},
        "activation_bytes": {
            "crosscoder_cache": cc_manifest["unique_train_tokens"] * t * d_model * itemsize,
            "chain_cache_per_link_tokens": run.chain.link_tokens * d_model * itemsize,
        },
        "growth_with_T": {
            "chain": "compute linear in T (one link of fixed budget per new checkpoint); memory one SAE at a time, "
            "constant in T",
            "crosscoder": "compute linear in T at a fixed token budget and dictionary size (T encoder and decoder "
            "blocks and T forwards per token), but all checkpoints at once: parameters, optimiser state, activation "
            "storage and memory linear in T; quadratic if the dictionary grows with T to keep features per checkpoint",
        },
    }


def _timeline(
    run: RunConfig, cc: cc_stage.CrosscoderResult, drift: Any, stats: Any, chain_steps: np.ndarray
) -> tuple[dict[str, dict[str, Any]], dict[str, Any], ph.PhaseFinding]:
    """The four perspectives' boundaries (steps), their pairwise agreement, and the crosscoder's own phase fit."""
    normalised = cc.norms[cc.alive] / np.maximum(cc.norms[cc.alive].max(axis=1, keepdims=True), 1e-12)
    finding = ph.find_phases(
        np.arange(len(cc.steps)),
        ph.median_curve(normalised.T),
        min_phase=run.drift.min_phase_checkpoints,
        max_segments=run.drift.max_segments,
    )
    timeline: dict[str, dict[str, Any]] = {}
    for name, phases, grid in (
        ("chain decoder drift", drift.drift_phases, chain_steps),
        ("progress measure", drift.progress_phases, chain_steps),
        ("crosscoder emergence", finding.phases, cc.steps),
    ):
        timeline[name] = {"boundaries": _phase_steps(phases, np.asarray(grid))}
    timeline["statistical learning"] = {"boundaries": _statistical_boundaries(stats)}
    grid_union = sorted(set(chain_steps.tolist()) | set(cc.steps.tolist()) | set(stats.steps.tolist()))
    both = {k: v["boundaries"] for k, v in timeline.items() if len(v["boundaries"]) == 2}
    first = {k: v["boundaries"][:1] for k, v in timeline.items() if v["boundaries"]}
    agreement = {
        "both_boundaries": mc.boundary_agreement(both, grid_union),
        "first_boundary": mc.boundary_agreement(first, grid_union),
    }
    return timeline, agreement, finding


def _random_baselines(
    w_dec: np.ndarray, present: np.ndarray, steps: list[int], matched: dict[int, np.ndarray], n_chain: int, seed: int
) -> dict[int, float]:
    """Median matched cosine of each matched snapshot's crosscoder directions against ``n_chain`` random unit
    vectors (seeded per snapshot): the chance level of Fig. X08."""
    out = {}
    for step in matched:
        t = steps.index(step)
        cosines = mc.random_matching_baseline(w_dec[np.flatnonzero(present[:, t]), t], n_chain, seed + t)
        out[step] = float(np.median(cosines))
    return out


def _matchings(
    run: RunConfig, cc: cc_stage.CrosscoderResult, w_dec: np.ndarray, drift: Any, folders: dict[int, Path]
) -> tuple[dict[int, np.ndarray], dict[int, float], mc.EmergenceFormation, int]:
    """Matched cosines per common step with their chance level, and the emergence-vs-formation pairs at the last
    common step."""
    f_chain = int(drift.cosine.shape[1])
    live_sample = np.zeros(f_chain, dtype=bool)
    live_sample[_sample(drift.live_features, run.chain_seed)] = True
    present = present_mask(cc.norms, run.crosscoder.emergence_fraction) & cc.alive[:, None]
    present_sample = np.zeros_like(present)
    present_sample[_sample(np.flatnonzero(cc.alive), run.chain_seed + 1)] = True
    present_sample &= present
    steps = cc.steps.tolist()
    chain_dec = {s: SAEWeights.load(folders[s]).W_dec.numpy() for s in folders if s in set(steps)}
    matched = mc.match_per_snapshot(w_dec, present_sample, steps, chain_dec, {s: live_sample for s in chain_dec})
    chance = _random_baselines(w_dec, present_sample, steps, matched, int(live_sample.sum()), run.chain_seed + 2)
    final = int(max(set(steps) & set(folders)))
    chain_steps = np.asarray(sorted(folders))
    formation_step = np.full(f_chain, -1, dtype=np.int64)
    formed = drift.formation_time >= 0
    formation_step[drift.live_features[formed]] = chain_steps[drift.formation_time[formed]]
    emergence_step = np.where(cc.emergence >= 0, cc.steps[np.maximum(cc.emergence, 0)], -1)
    pairs = mc.emergence_vs_formation(
        w_dec[:, steps.index(final)],
        cc.alive,
        emergence_step,
        chain_dec[final],
        live_sample,
        formation_step,
        threshold=MATCH_THRESHOLD,
    )
    return matched, chance, pairs, final


def _emergence_vs_formation(run: RunConfig, pairs: mc.EmergenceFormation, first_step: int) -> dict[str, Any]:
    """Spearman's rho (as before) and Kendall's tau-b with its permutation null, and the share of pairs tied at the
    crosscoder's first snapshot."""
    ranks = mc.rank_agreement(
        pairs.emergence_step, pairs.formation_step, permutations=run.crosscoder.null_permutations, seed=run.chain_seed
    )
    tied = float(np.mean(pairs.emergence_step == first_step)) if pairs.emergence_step.size else None
    return {**pairs.to_dict(), **ranks, "tied_at_first_share": tied}


def _build(run: RunConfig, run_dir: Path, stage: StageRun) -> dict[str, Any]:
    cc = cc_stage.load_crosscoder_result(run_dir, run)
    saved = load_crosscoder(run_dir / paths.CROSSCODER_DIR / paths.CROSSCODER_MODEL_DIR)
    w_dec = saved.model.W_dec.detach().cpu().numpy()
    drift = load_drift(run_dir, run)
    stats = stat_stage.load_statistics(run_dir, run)
    folders = load_chain(run_dir, run)
    matched, chance, pairs, final = _matchings(run, cc, w_dec, drift, folders)
    timeline, agreement, finding = _timeline(run, cc, drift, stats, np.asarray(sorted(folders)))
    match_steps = np.asarray(sorted(matched), dtype=np.int64)
    with stage.atomic() as tmp:
        np.savez(
            tmp / ARRAYS_FILE,
            match_steps=match_steps,
            match_cosines=np.concatenate([matched[s] for s in match_steps]) if matched else np.zeros(0),
            match_offsets=np.cumsum([0] + [matched[s].size for s in match_steps]),
            random_match_median=np.asarray([chance[s] for s in match_steps]),
            pair_crosscoder=pairs.crosscoder_features,
            pair_chain=pairs.chain_features,
            pair_cosine=pairs.cosines,
            pair_emergence_step=pairs.emergence_step,
            pair_formation_step=pairs.formation_step,
            crosscoder_phase_fit=finding.fits[max(finding.fits)].fit if finding.fits else np.zeros(0),
        )
        matching = {
            str(s): {
                "pairs": int(matched[s].size),
                "median_cosine": float(np.median(matched[s])),
                "above_threshold": float((matched[s] >= MATCH_THRESHOLD).mean()),
                "random_baseline_median": chance[s],
            }
            for s in match_steps
        }
        baseline = float(np.median(list(chance.values()))) if chance else None
        return stage.finish(
            into=tmp,
            config={"match_threshold": MATCH_THRESHOLD, "max_match_features": MAX_MATCH_FEATURES},
            files={ARRAYS_FILE: store.file_sha256(tmp / ARRAYS_FILE)},
            final_step=final,
            matching=matching,
            random_baseline_median=baseline,
            emergence_vs_formation=_emergence_vs_formation(run, pairs, int(cc.steps[0])),
            crosscoder_phases=ph.finding_record(finding, cc.steps.tolist()),
            timeline=timeline,
            agreement=agreement,
            costs=_costs(run, run_dir, cc.manifest, w_dec.shape[-1]),
        )


def compare_methods(run: RunConfig, run_dir: Path, *, force: bool = False) -> dict[str, Any]:
    """Set the crosscoder beside the chain (matching, emergence vs formation, phase timeline, cost); the manifest."""
    return run_stage(
        Path(run_dir) / paths.CROSSCODER_COMPARISON_DIR,
        "crosscoder-vs-chain",
        comparison_config_hash(run),
        lambda stage: _build(run, Path(run_dir), stage),
        force=force,
    )


def load_method_comparison(run_dir: Path, run: RunConfig | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The manifest and arrays of a finished comparison (checked against ``run`` when given)."""
    out = Path(run_dir) / paths.CROSSCODER_COMPARISON_DIR
    manifest = finished_manifest(out, comparison_config_hash(run) if run else None, "crosscoder comparison", "06")
    data = np.load(out / ARRAYS_FILE, allow_pickle=False)
    return manifest, {name: data[name] for name in data.files}


def output_hashes(run: RunConfig) -> dict[str, str]:
    """The comparison's output folder and the config hash its manifest must carry."""
    return {paths.CROSSCODER_COMPARISON_DIR: comparison_config_hash(run)}
