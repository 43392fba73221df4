"""Chain against independent SAEs: convergence speed (the paper's "about 1/20 of the tokens") and feature agreement.

*Convergence.* At each baseline checkpoint the target is the from-scratch SAE's final loss (Eq. 3,
the trailing mean over its last :data:`SMOOTHING_STEPS` optimizer steps). A **probe** starts from the
previous chain link (recurrent initialisation, link hyperparameters) and trains on the same
checkpoint's tokens until its smoothed loss reaches that target, or the from-scratch budget runs out.
Reported: the tokens the probe needed, the tokens the from-scratch SAE needed to reach the same loss,
and their ratio. Training losses are measured on batches seen for the first time, so they estimate
the held-out loss.

Probes on target within their first smoothing window are *trivial*
(:data:`~saetrack.analysis.convergence.TRIVIAL_RULE`) and left out of the non-trivial median; probes that hit the
budget are reported as not reached. Beside it, the **quality gap**: held-out explained variance, L0 and MSE of the
chain link and of the from-scratch SAE at each baseline checkpoint, with the seed-to-seed spread of the from-scratch
SAE where the seed control ran.

*Agreement.* Active (not dead, App. A.1) features of the chain link and of the independent SAE at the same
checkpoint are matched by decoder-direction cosine with the Hungarian algorithm; a second from-scratch SAE with another
seed (:mod:`saetrack.stages.chain.seed_control`) is matched to the first the same way, as the ceiling of that agreement;
consecutive chain links are matched to see how far "feature i" stays feature i along the chain.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from saetrack import paths, store
from saetrack.analysis.convergence import (
    TRIVIAL_RULE,
    is_trivial_probe,
    smoothed,
    smoothed_at,
    summarise_convergence,
    tokens_to_reach,
)
from saetrack.analysis.features import active_features
from saetrack.analysis.matching import index_stability, match_features
from saetrack.config.base import config_hash
from saetrack.config.run import RunConfig
from saetrack.data.activations import ActivationSource, open_activations
from saetrack.pipeline.skeleton import StageRun, finished_manifest, run_stage
from saetrack.sae.io import load_training_sae
from saetrack.sae.recurrent import recurrent_init
from saetrack.sae.weights import SAEWeights
from saetrack.stages.chain import baseline_config_hash, read_link_manifests
from saetrack.stages.chain.links import link_seed, train_link
from saetrack.stages.chain.seed_control import seed_control_folder, seed_control_steps, train_seed_controls

__all__ = [
    "AGREEMENT_THRESHOLD",
    "QUALITY_KEYS",
    "SMOOTHING_STEPS",
    "compare_chain_and_baselines",
    "comparison_config_hash",
    "load_comparison",
    "output_hashes",
]


#: Optimizer steps averaged when smoothing a loss curve (the target is the smoothed from-scratch final loss).
SMOOTHING_STEPS = 10
#: Matched decoder cosine above which two features count as the same (reported as a fraction).
AGREEMENT_THRESHOLD = 0.7
#: Held-out metrics of the chain link and the from-scratch SAE set side by side (the quality gap).
QUALITY_KEYS = ("explained_variance", "l0", "mse")


def comparison_config_hash(run: RunConfig) -> str:
    """Hash of the comparison's inputs (chain and baselines)."""
    payload = {"baseline": baseline_config_hash(run), "kind": "comparison", "v": 4}
    return config_hash({**payload, "seed_control": list(seed_control_steps(run))})


def _probe_to_target(
    run: RunConfig,
    start: Any,
    source: ActivationSource,
    target: float,
    budget: int,
    position: int,
    device: str,
    progress: bool,
    window_tokens: int,
    l1_coefficient: float,
) -> dict[str, list[float]]:
    """Train a recurrently initialised SAE in segments until its smoothed loss reaches ``target`` or ``budget``."""
    chain = run.chain
    segment = max(chain.link_tokens, budget // 20)
    sae = recurrent_init(start, chain, l1_coefficient=l1_coefficient, device=device)
    curve: dict[str, list[float]] = {"tokens": [], "loss": []}
    optimizer_state = None
    seen = 0
    while seen < budget:
        n = min(segment, budget - seen)
        result = train_link(
            run,
            sae,
            source,
            run.sae_steps[position],
            start=seen,
            n_tokens=n,
            lr=chain.lr_link,
            warmup=chain.warmup_steps_link if seen == 0 else 0,
            seed=link_seed(run, "probe", position) + seen,
            optimizer_state=optimizer_state,
            desc=f"probe at step {run.sae_steps[position]} ({seen + n:,} tokens)",
            progress=progress,
        )
        curve["tokens"] += [seen + t for t in result.loss_curve["tokens"]]
        curve["loss"] += result.loss_curve["loss"]
        sae, optimizer_state, seen = result.sae, result.optimizer_state, seen + n
        if tokens_to_reach(np.array(curve["tokens"]), np.array(curve["loss"]), target, window_tokens) is not None:
            break
    return curve


def _convergence_at(
    run: RunConfig, run_dir: Path, source: ActivationSource, step: int, device: str, progress: bool
) -> dict[str, Any]:
    """Tokens a recurrently initialised SAE and the from-scratch SAE of ``step`` need to reach the latter's loss."""
    window_tokens = SMOOTHING_STEPS * run.chain.batch_size
    position = run.sae_steps.index(step)
    base_manifest = store.read_manifest(Path(run_dir) / paths.BASELINE_DIR / paths.step_dir_name(step))
    if base_manifest is None:
        raise store.StaleArtifactError(f"no baseline SAE at step {step}; run train_baselines first.")
    scratch = {k: np.asarray(v) for k, v in base_manifest["loss_curve"].items()}
    target = float(smoothed(scratch["tokens"], scratch["loss"], window_tokens)[-1])
    scratch_tokens = tokens_to_reach(scratch["tokens"], scratch["loss"], target, window_tokens)
    previous_dir = Path(run_dir) / paths.CHAIN_DIR / paths.step_dir_name(run.sae_steps[position - 1])
    previous_l1 = (store.read_manifest(previous_dir) or {})["link"]["l1_coefficient"]
    previous = load_training_sae(previous_dir, run.chain, l1_coefficient=previous_l1)
    probe = _probe_to_target(
        run,
        previous,
        source,
        target,
        run.chain.baseline_token_budget,
        position,
        device,
        progress,
        window_tokens,
        base_manifest["baseline"]["l1_coefficient"],  # this checkpoint's coefficient, as the baseline's
    )
    probe_tokens = tokens_to_reach(np.array(probe["tokens"]), np.array(probe["loss"]), target, window_tokens)
    at_link = smoothed_at(np.array(probe["tokens"]), np.array(probe["loss"]), run.chain.link_tokens, window_tokens)
    return {
        "step": step,
        "target_loss": target,
        "scratch_tokens_to_target": scratch_tokens,
        "recurrent_tokens_to_target": probe_tokens,
        "token_ratio": (probe_tokens / scratch_tokens) if probe_tokens and scratch_tokens else None,
        "trivial": is_trivial_probe(probe_tokens, window_tokens),
        "reached_within_link_budget": probe_tokens is not None and probe_tokens <= run.chain.link_tokens,
        "recurrent_loss_at_link_budget": at_link,
        "link_budget_excess": (at_link / target - 1) if at_link is not None and target > 0 else None,
        "scratch_curve": {"tokens": scratch["tokens"].tolist(), "loss": scratch["loss"].tolist()},
        "recurrent_curve": probe,
    }


def _agreement_of(folder_a: Path, folder_b: Path, heldout: Any, step: int, device: str) -> dict[str, Any]:
    """Hungarian matching of the active features of the SAEs in ``folder_a`` and ``folder_b`` (same checkpoint);
    exact up to nano's sizes, certified-sparse beyond (:func:`saetrack.analysis.matching.match_features`)."""
    sae_a, sae_b = SAEWeights.load(folder_a), SAEWeights.load(folder_b)
    active_a, active_b = active_features(sae_a, heldout), active_features(sae_b, heldout)
    match = match_features(
        sae_a.W_dec,
        sae_b.W_dec,
        threshold=AGREEMENT_THRESHOLD,
        subset_a=active_a,
        subset_b=active_b,
        device=device,
    )
    return {
        "step": step,
        "n_active_a": len(active_a),
        "n_active_b": len(active_b),
        "mean_matched_cosine": match.mean_cosine,
        "fraction_above_threshold": match.fraction_above,
        "matched_cosines": np.round(match.cosines, 4).tolist(),
        "matching_certified": match.certified,
    }


def _agreement_at(run_dir: Path, source: ActivationSource, step: int, device: str) -> dict[str, Any]:
    """Chain link vs the independent SAE of ``step``, and (where trained) the second-seed SAE vs the first."""
    base_dir = Path(run_dir) / paths.BASELINE_DIR / paths.step_dir_name(step)
    heldout = source.heldout(step)
    chain = _agreement_of(Path(run_dir) / paths.CHAIN_DIR / paths.step_dir_name(step), base_dir, heldout, step, device)
    record = {
        "step": step,
        "n_active_chain": chain["n_active_a"],
        "n_active_baseline": chain["n_active_b"],
        **{k: chain[k] for k in ("mean_matched_cosine", "fraction_above_threshold", "matched_cosines")},
        "matching_certified": chain["matching_certified"],
        "seed_to_seed": None,
    }
    seed_dir = seed_control_folder(run_dir, step)
    if (seed_dir / "manifest.json").exists():
        seed = _agreement_of(seed_dir, base_dir, heldout, step, device)
        record["seed_to_seed"] = {
            "n_active_seed2": seed.pop("n_active_a"),
            **{k: v for k, v in seed.items() if k not in ("step", "n_active_b")},
        }
    return record


def _quality_gap(run_dir: Path, steps: tuple[int, ...], seeds: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per baseline checkpoint: :data:`QUALITY_KEYS` of the chain link and the from-scratch SAE, their gap (chain
    minus scratch) and, with a second seed, the from-scratch SAEs' seed-to-seed spread (second minus first)."""
    links, bases = read_link_manifests(run_dir), read_link_manifests(run_dir, paths.BASELINE_DIR)
    rows = []
    for step in steps:
        chain = {k: links[step]["link"]["metrics"][k] for k in QUALITY_KEYS}
        scratch = {k: bases[step]["baseline"]["metrics"][k] for k in QUALITY_KEYS}
        row: dict[str, Any] = {
            "step": step,
            "chain_tokens": links[step]["link"]["training"]["n_tokens"],
            "scratch_tokens": bases[step]["baseline"]["training"]["n_tokens"],
            "chain": chain,
            "scratch": scratch,
            "gap": {k: chain[k] - scratch[k] for k in QUALITY_KEYS},
            "scratch_seed2": None,
            "seed_spread": None,
        }
        if step in seeds:
            second = {k: seeds[step]["metrics"][k] for k in QUALITY_KEYS}
            row["scratch_seed2"] = second
            row["seed_spread"] = {k: second[k] - scratch[k] for k in QUALITY_KEYS}
        rows.append(row)
    return rows


def _chain_index_stability(run: RunConfig, run_dir: Path, device: str) -> list[dict[str, Any]]:
    """How far feature i of one link stays feature i of the next (Hungarian matching of consecutive links)."""
    chain_dir = Path(run_dir) / paths.CHAIN_DIR
    stability = []
    for prev_step, next_step in itertools.pairwise(run.sae_steps):
        prev = SAEWeights.load(chain_dir / paths.step_dir_name(prev_step))
        nxt = SAEWeights.load(chain_dir / paths.step_dir_name(next_step))
        result = index_stability(prev.W_dec, nxt.W_dec, threshold=AGREEMENT_THRESHOLD, device=device)
        stability.append({"from_step": prev_step, "to_step": next_step, **result})
    return stability


def _convergence_setup(run: RunConfig) -> dict[str, Any]:
    """What the convergence ratio was measured on (recorded with the results)."""
    chain = run.chain
    return {
        "steps": list(run.baseline_steps),
        "target": "the from-scratch SAE's final training loss (Eq. 3), smoothed over its last smoothing window",
        "probe": "starts from the previous chain link (recurrent init), link lr and warmup, fresh Adam, this "
        "checkpoint's L1 coefficient; trained on rows [0, budget) of the checkpoint's training tokens",
        "losses": "training losses on batches seen for the first time (each row once), so they estimate held-out loss",
        "smoothing_steps": SMOOTHING_STEPS,
        "window_tokens": SMOOTHING_STEPS * chain.batch_size,
        "batch_size": chain.batch_size,
        "probe_budget_tokens": chain.baseline_token_budget,
        "link_tokens": chain.link_tokens,
        "trivial_rule": TRIVIAL_RULE,
    }


def _build_comparison(run: RunConfig, run_dir: Path, stage: StageRun, device: str, progress: bool) -> dict[str, Any]:
    source = open_activations(run, run_dir, device=device)
    convergence = [_convergence_at(run, run_dir, source, step, device, progress) for step in run.baseline_steps]
    seeds = train_seed_controls(run, run_dir, device=device, force=stage.force, progress=progress)
    agreement = [_agreement_at(run_dir, source, step, device) for step in run.baseline_steps]
    summary = summarise_convergence(convergence, SMOOTHING_STEPS * run.chain.batch_size, run.chain.link_tokens)
    return stage.finish(
        config={"threshold": AGREEMENT_THRESHOLD, "smoothing_steps": SMOOTHING_STEPS},
        timings={"seed_control_train": float(sum(r["training"]["wall_time_s"] for r in seeds))},
        convergence=convergence,
        median_token_ratio=summary.pop("median_token_ratio"),
        convergence_summary=summary,
        convergence_setup=_convergence_setup(run),
        agreement=agreement,
        seed_control=seeds,
        quality_gap=_quality_gap(run_dir, run.baseline_steps, {r["step"]: r for r in seeds}),
        index_stability=_chain_index_stability(run, run_dir, device),
    )


def compare_chain_and_baselines(
    run: RunConfig,
    run_dir: Path,
    *,
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """The convergence study, quality gap and feature agreement of chain and independent SAEs (Sec. 3.2.2, Fig. S3-S5).

    Trains the convergence probes and the second-seed SAEs of the seed control (``comparison/seed_control/``, kept
    when finished), then writes ``run_dir/comparison/manifest.json``; skipped when it is current with this config.
    """
    return run_stage(
        Path(run_dir) / paths.COMPARISON_DIR,
        "comparison",
        comparison_config_hash(run),
        lambda stage: _build_comparison(run, run_dir, stage, device, progress),
        force=force,
    )


def load_comparison(run_dir: Path, run: RunConfig | None = None) -> dict[str, Any]:
    """The manifest of a finished comparison (convergence, agreement, index stability), checked against ``run``."""
    out = Path(run_dir) / paths.COMPARISON_DIR
    return finished_manifest(out, comparison_config_hash(run) if run else None, "comparison", "02")


def output_hashes(run: RunConfig) -> dict[str, str]:
    """Output folder -> config hash of the convergence and agreement study (notebook 02)."""
    return {paths.COMPARISON_DIR: comparison_config_hash(run)}
