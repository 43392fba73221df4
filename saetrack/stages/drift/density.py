"""How dense must checkpoints be? The checkpoint-density study of notebook 04 (a reviewer's question, measured).

Beside the run's own chain (stride 1: every checkpoint of ``chain.schedule``, reused, never retrained) the study
trains, for each stride ``s`` of ``drift.density_strides`` (default 2, 4, 8; ``()``: off), the chain over every
``s``-th checkpoint (:mod:`saetrack.stages.drift.density_links`: same first link, later links trained exactly as the
chain's), and measures each density by rules fixed before any result (:mod:`saetrack.stages.drift.density_rules`):

(a) **tokens to converge**: per link after the first, the first logged token count at which the running loss is
    within 2% of the link's final loss (mean of the last 10% of its curve); median and max over links;
(b) **persistence**: per adjacent pair of links of the chain, the share of features alive in both whose decoder
    cosine (index against index, Sec. 6.1) is >= 0.7, the project's agreement threshold
    (:data:`~saetrack.analysis.method_comparison.MATCH_THRESHOLD`); the chain's persistence is the median over pairs;
(c) **agreement with the dense chain**: at each shared checkpoint after the first, the share of features alive in
    both whose decoder cosine with the dense chain's same-index feature is >= 0.7, and the median cosine;
(d) **phases**: the drift stage's phase model (:func:`~saetrack.stages.drift.phase_fits.fit_perspectives`, 1 to
    ``drift.max_segments`` segments, BIC, on the checkpoint index, log10(step + 1) and the step) fitted to each chain's
    median decoder cosine to its own final link (features alive at both links); the three-segment boundaries as steps;
and each sparse link's explained variance and L0 on held-out activations (as the chain evaluates its links).

**Control**: the persistence share of every chain beside a null, the same share after the later link's alive
features are permuted at random (seeded): what "persists" reads for features that are not the same.

**Recommendation** (fixed rule): the largest stride whose persistence is within 0.05 of the dense chain's, every
denser stride passing too.

Written to ``run_dir/density/`` (``stride{s}/step{N}/`` per sparse link, ``manifest.json`` with every number, last);
skipped when the manifest matches the config (:func:`density_config_hash`: the chain's hash, the strides and the
phase settings - never the drift stage's hash, which does not see ``drift.density_strides``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from saetrack import paths
from saetrack.analysis import phases as ph
from saetrack.analysis.drift import link_cosine_to_final
from saetrack.config.base import config_hash
from saetrack.config.run import RunConfig
from saetrack.data.activations import open_activations
from saetrack.data.checkpoints import CheckpointSource, open_source
from saetrack.pipeline.skeleton import StageRun, finished_manifest, run_stage
from saetrack.sae.io import load_firing_frequency
from saetrack.sae.weights import load_decoder
from saetrack.stages.drift.density_links import ChainLinks, dense_chain, density_link_hash, train_sparse_chain
from saetrack.stages.drift.density_rules import (
    DENSITY_RULE,
    null_share,
    persistence_share,
    recommend_stride,
    tokens_to_converge,
)
from saetrack.stages.drift.phase_fits import FIGURE_AXIS, fit_perspectives

__all__ = [
    "analyse_density",
    "chain_measures",
    "chain_summary",
    "density_config_hash",
    "load_density",
    "output_hashes",
    "summary_numbers",
]


def density_config_hash(run: RunConfig) -> str:
    """Hash of the study's inputs: the sparse links' hash (the chain's), the strides and the phase model's settings."""
    drift = run.drift
    phases = {"min_phase_checkpoints": drift.min_phase_checkpoints, "max_segments": drift.max_segments}
    return config_hash({"links": density_link_hash(run), "strides": list(drift.density_strides), "phases": phases,
                        "v": 1})  # fmt: skip


def output_hashes(run: RunConfig) -> dict[str, str]:
    """Output folder -> config hash of the density study (none when ``drift.density_strides`` is empty: off)."""
    return {paths.DENSITY_DIR: density_config_hash(run)} if run.drift.density_strides else {}


def _finite(value: float | None) -> float | None:
    """A JSON-ready float: NaN and None become None."""
    return None if value is None or not math.isfinite(value) else float(value)


def _alive(folder: Path) -> np.ndarray | None:
    """Features that fired on the link's training tokens (None when the link saved no firing frequency)."""
    freq = load_firing_frequency(folder)
    return None if freq is None else freq > 0


def _phase_records(run: RunConfig, steps: list[int], curve: np.ndarray) -> dict[str, Any]:
    """The drift stage's phase model on ``curve`` (median decoder cosine to the chain's final link): per axis the
    :func:`~saetrack.analysis.phases.finding_record`, boundaries as steps."""
    findings = fit_perspectives(run, np.asarray(steps), {"drift": curve})["drift"]
    return {axis: ph.finding_record(finding, steps) for axis, finding in findings.items()}


def chain_measures(run: RunConfig, chain: ChainLinks, dense: ChainLinks) -> dict[str, Any]:
    """Measures (a)-(d), the null and the link quality of one chain of the study (module doc), decoders read a link
    at a time: per link its step, tokens to converge, explained variance and L0, median cosine to the chain's final
    link and (sparse chains) agreement with the dense link at the same step; per adjacent pair the persistence share,
    median cosine and null share; the phase records."""
    final, alive_final = load_decoder(chain.folders[-1]), _alive(chain.folders[-1])
    dense_at = dict(zip(dense.steps, dense.folders, strict=True))
    links: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    to_final: list[float] = []
    previous = previous_alive = None
    for index, (step, folder) in enumerate(zip(chain.steps, chain.folders, strict=True)):
        decoder, alive = load_decoder(folder), _alive(folder)
        curve = chain.curves[index] or {}
        metrics = chain.records[index].get("metrics", {})
        link: dict[str, Any] = {
            "step": int(step),
            "tokens_to_converge": _finite(tokens_to_converge(curve.get("tokens", []), curve.get("loss", [])))
            if index
            else None,
            "explained_variance": _finite(metrics.get("explained_variance")),
            "l0": _finite(metrics.get("l0")),
            "health": chain.records[index].get("health"),
        }
        to_final.append(persistence_share(link_cosine_to_final(decoder, final), alive, alive_final)["median_cosine"])
        if chain.stride != 1 and index:
            reference = dense_at[step]
            agreement = persistence_share(link_cosine_to_final(decoder, load_decoder(reference)), alive,
                                          _alive(reference))  # fmt: skip
            link["agreement"] = _finite(agreement["share"])
            link["agreement_median_cosine"] = _finite(agreement["median_cosine"])
        links.append(link)
        if previous is not None:
            kept = persistence_share(link_cosine_to_final(previous, decoder), previous_alive, alive)
            seed = int(np.random.SeedSequence([run.chain_seed, chain.stride, int(step)]).generate_state(1)[0])
            null = null_share(previous.numpy(), decoder.numpy(), previous_alive, alive, seed)
            pairs.append(
                {"from_step": int(chain.steps[index - 1]), "to_step": int(step), "persistence": _finite(kept["share"]),
                 "median_cosine": _finite(kept["median_cosine"]), "alive": kept["alive"], "null": _finite(null)}
            )  # fmt: skip
        previous, previous_alive = decoder, alive
    curve = np.asarray(to_final, dtype=np.float64)
    return {
        "stride": chain.stride,
        "steps": [int(s) for s in chain.steps],
        "links": links,
        "pairs": pairs,
        "median_cosine_to_final": [_finite(v) for v in curve],
        "phases": _phase_records(run, chain.steps, curve),
    }


def _median(values: list[Any]) -> float | None:
    """Median of the finite values (None when there are none)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    return float(np.median(finite)) if finite else None


def _boundaries(phases: dict[str, Any]) -> dict[str, Any]:
    """The three-segment boundaries (as steps) of each axis, and why not when they could not be fitted."""
    return {axis: {"emergent_step": r["emergent_step"], "convergent_step": r["convergent_step"],
                   "preferred_segments": r["preferred_segments"], "note": r["note"]}
            for axis, r in phases.items()}  # fmt: skip


def chain_summary(measures: dict[str, Any]) -> dict[str, Any]:
    """One chain's headline numbers from :func:`chain_measures`: links, tokens to converge (median and max over the
    links after the first), persistence and its null (median over adjacent pairs), agreement with the dense chain
    (median over shared checkpoints after the first), explained variance and L0 (median over trained links), and the
    phase boundaries on every axis."""
    trained = measures["links"][1:]
    tokens = [x["tokens_to_converge"] for x in trained if x["tokens_to_converge"] is not None]
    persisted = [p["persistence"] for p in measures["pairs"] if p["persistence"] is not None]
    return {
        "stride": measures["stride"],
        "links": len(measures["links"]),
        "tokens_to_converge_median": _median(tokens),
        "tokens_to_converge_max": max(tokens) if tokens else None,
        "persistence": _median([p["persistence"] for p in measures["pairs"]]),
        "persistence_min": min(persisted, default=None),
        "null": _median([p["null"] for p in measures["pairs"]]),
        "agreement": _median([x.get("agreement") for x in trained]) if measures["stride"] != 1 else 1.0,
        "agreement_median_cosine": _median([x.get("agreement_median_cosine") for x in trained])
        if measures["stride"] != 1
        else 1.0,
        "explained_variance": _median([x["explained_variance"] for x in trained]),
        "l0": _median([x["l0"] for x in trained]),
        "unhealthy_links": [x["step"] for x in trained if x.get("health")],
        "phases": _boundaries(measures["phases"]),
    }


def _build_density(
    run: RunConfig, run_dir: Path, stage: StageRun, checkpoints: CheckpointSource | None, device: str,
    progress: bool, after_link: Any,
) -> dict[str, Any]:  # fmt: skip
    """Train (or resume) every sparse chain, measure every chain, and write the study's manifest last."""
    dense = dense_chain(run, run_dir)
    checkpoints = checkpoints if checkpoints is not None else open_source(run.model, Path(run_dir))
    activations = open_activations(run, run_dir, checkpoints, device)
    chains = [dense] + [
        train_sparse_chain(run, run_dir, stage.folder, s, activations, checkpoints, device=device, progress=progress,
                           force=stage.force, after_link=after_link)
        for s in run.drift.density_strides
    ]  # fmt: skip
    measures = [chain_measures(run, chain, dense) for chain in chains]
    summaries = {str(m["stride"]): chain_summary(m) for m in measures}
    persistence = {int(s): (v["persistence"] if v["persistence"] is not None else float("nan"))
                   for s, v in summaries.items()}  # fmt: skip
    return stage.finish(
        config={"strides": list(run.drift.density_strides), "link_tokens": run.chain.link_tokens},
        rule=DENSITY_RULE,
        figure_axis=FIGURE_AXIS,
        chains=measures,
        summary=summaries,
        recommendation=recommend_stride(persistence),
    )


def analyse_density(
    run: RunConfig, run_dir: Path, *, force: bool = False, progress: bool = True, device: str = "cpu",
    checkpoints: CheckpointSource | None = None, after_link: Any = None,
) -> dict[str, Any] | None:  # fmt: skip
    """Run the checkpoint-density study of ``run`` (module doc) into ``run_dir/density``; return its manifest, or
    None when ``drift.density_strides`` is empty (the study is off).

    Needs the finished chain (notebook 02) and its activations (cached, or streamed from ``checkpoints``, default
    the run's model); ``device`` trains the sparse links. Skipped when current; an interrupted study keeps every
    finished link. ``after_link(stride, step)`` runs after each newly trained link (tests use it to interrupt).
    """
    if not run.drift.density_strides:
        return None
    return run_stage(
        Path(run_dir) / paths.DENSITY_DIR,
        "density",
        density_config_hash(run),
        lambda stage: _build_density(run, run_dir, stage, checkpoints, device, progress, after_link),
        force=force,
    )


def load_density(run_dir: Path, run: RunConfig | None = None) -> dict[str, Any]:
    """The manifest of a finished density study (checked against ``run`` when given): ``chains`` (per chain, stride 1
    first, :func:`chain_measures`), ``summary`` (per stride, :func:`chain_summary`), ``recommendation``, ``rule``."""
    digest = density_config_hash(run) if run else None
    return finished_manifest(Path(run_dir) / paths.DENSITY_DIR, digest, "density study", "04")


def summary_numbers(study: dict[str, Any]) -> dict[str, Any]:
    """The study's numbers for the run's results JSON (section ``density``): the rule, per stride the
    :func:`chain_summary` (stride 1: the run's own chain), the dense chain's per-pair persistence and null (the
    control), and the recommendation with its rule's bar."""
    dense = study["chains"][0]
    return {
        "rule": study["rule"],
        "strides": [1, *study["config"]["strides"]],
        "link_tokens": study["config"]["link_tokens"],
        "by_stride": study["summary"],
        "control": {
            "dense_persistence_per_pair": [p["persistence"] for p in dense["pairs"]],
            "dense_null_per_pair": [p["null"] for p in dense["pairs"]],
        },
        "recommendation": study["recommendation"],
        "seconds": study.get("timings_s", {}).get("total"),
    }
