"""What the explorer shows, gathered once from the run API: every stage's per-feature arrays of a finished run.

Everything comes through :class:`saetrack.api.Run` (the formation, drift and crosscoder stages' arrays, the links'
firing frequencies and manifests); the only things computed here are each feature's nearest features at the final link
(:func:`~saetrack.stages.explorer.nearest.nearest_features`) and its matched crosscoder feature
(:meth:`saetrack.api.Run.crosscoder_matching`, the matching behind Fig. X06).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from saetrack.api import Run
from saetrack.data.activations import open_activations
from saetrack.stages.chain import read_link_manifests
from saetrack.stages.explorer.contexts import ContextWindows, context_windows
from saetrack.stages.explorer.nearest import nearest_features

__all__ = ["CrosscoderArrays", "RunArrays", "gather_arrays", "run_windows"]

#: The progress measure shown on a feature page: activation space, cosine (Eq. 14-16, Fig. 5's solid curves).
PROGRESS_KEY = "activation_cosine"


@dataclass(frozen=True)
class CrosscoderArrays:
    """The crosscoder's view of the chain's features (Ge et al. 2025; Fig. X02, X06)."""

    steps: np.ndarray  # [S] snapshot steps
    norms: np.ndarray  # [F', S] decoder norm of every crosscoder feature at every snapshot
    emergence_step: np.ndarray  # [F'] step at which its norm first reaches the emergence fraction (-1: dead)
    match: np.ndarray  # [F] crosscoder feature matched to each chain feature (-1: none)
    match_cosine: np.ndarray  # [F] the pair's decoder cosine at the comparison step (NaN: none)
    threshold: float  # cosine from which the comparison counts a pair as the same feature
    final_step: int  # the last step both methods have, where they are matched


@dataclass(frozen=True)
class RunArrays:
    """Every per-feature array the explorer shows (T checkpoints, F features)."""

    preset: str
    steps: np.ndarray  # [T]
    labels: np.ndarray  # [T, F] token / concept / inactive (Def. 4.1-4.2)
    dominant: np.ndarray  # [T, F] dominant token id among the active top-k datapoints (-1: none)
    shares: np.ndarray  # [T, F] its share of them
    live: np.ndarray  # [F] App. A.1's filter
    patterns: np.ndarray  # [F] Sec. 4.2's evolution pattern
    sub_patterns: np.ndarray  # [F]
    frequency: np.ndarray  # [T, F] firing frequency on the link's training tokens (NaN: not recorded)
    to_final: np.ndarray  # [T, F] decoder cosine to the final link (Sec. 6.1, Fig. 6)
    adjacent: np.ndarray  # [T-1, F] decoder cosine to the previous link
    formation_step: np.ndarray  # [F] drift stage's formation step (-1: never formed or not live)
    progress: np.ndarray  # [T, F] M_i(t) (Eq. 14, activation space); NaN for features that are not live
    baseline: np.ndarray  # [T] the random baseline B(t) of Eq. 16 (S_i(t) = M_i(t) + B(t))
    noise_to_final: np.ndarray  # [M, F] cosine to final after m = 1..M noise-floor links (drift stage)
    phases: dict[str, int] | None  # checkpoint indices where the Emergent and Convergent phases start (Fig. 6a)
    link_metrics: list[dict[str, Any]]  # [T] each link's quality on held-out tokens (chain stage)
    dead_fraction: np.ndarray  # [T] the links' dead share (formation stage, App. A.1)
    nearest: np.ndarray  # [F, n] nearest features at the final link by decoder cosine
    nearest_cosine: np.ndarray  # [F, n]
    crosscoder: CrosscoderArrays | None  # None: the crosscoder stage is off


def _frequency(run: Run) -> np.ndarray:
    """Each link's firing frequency ``[T, F]`` (NaN for a link without a sparsity file)."""
    rows = []
    for step in run.steps:
        found = run.firing_frequency(step)
        rows.append(np.full(run.n_features, np.nan) if found is None else np.asarray(found, dtype=np.float64))
    return np.stack(rows)


def _crosscoder(run: Run) -> CrosscoderArrays | None:
    """The crosscoder's arrays and each chain feature's matched crosscoder feature, ``None`` when the stage is off."""
    if not run.config.crosscoder.enabled:
        return None
    result, matching = run.crosscoder(), run.crosscoder_matching()
    match = np.full(run.n_features, -1, dtype=np.int64)
    cosine = np.full(run.n_features, np.nan)
    match[matching.index_b] = matching.index_a
    cosine[matching.index_b] = matching.cosines
    steps = np.asarray(result.steps, dtype=np.int64)
    emergence = np.where(result.emergence >= 0, steps[np.maximum(result.emergence, 0)], -1)
    manifest, _ = run.method_comparison()
    return CrosscoderArrays(
        steps=steps,
        norms=np.asarray(result.norms, dtype=np.float64),
        emergence_step=emergence,
        match=match,
        match_cosine=cosine,
        threshold=float(matching.threshold),
        final_step=int(manifest["final_step"]),
    )


def gather_arrays(run: Run, nearest: int, device: str = "cpu") -> RunArrays:
    """Every array the explorer shows for ``run`` (each stage read through the run API) and the ``nearest`` closest
    features of each at the final link (decoder cosine, computed on ``device``)."""
    formation, drift = run.formation(), run.drift()
    n_features, live = run.n_features, np.asarray(formation.live_features, dtype=np.int64)
    progress = np.full((len(run.steps), n_features), np.nan)
    progress[:, live] = formation.progress[PROGRESS_KEY]
    formation_step = np.full(n_features, -1, dtype=np.int64)
    times = np.asarray(drift.formation_time)
    formed = times >= 0
    formation_step[np.asarray(drift.live_features)[formed]] = np.asarray(drift.steps)[times[formed]]
    phases = drift.drift_phases
    manifests = read_link_manifests(run.run_dir)
    index, cosine = nearest_features(run.link(run.steps[-1], device=device), nearest)
    return RunArrays(
        preset=run.config.preset,
        steps=np.asarray(run.steps, dtype=np.int64),
        labels=formation.labels,
        dominant=formation.dominant,
        shares=formation.shares if formation.shares.size else np.full(formation.labels.shape, np.nan),
        live=np.asarray(formation.live, dtype=bool),
        patterns=formation.patterns,
        sub_patterns=formation.sub_patterns if formation.sub_patterns.size else formation.patterns,
        frequency=_frequency(run),
        to_final=np.asarray(drift.cosine, dtype=np.float64),
        adjacent=run.adjacent_cosines(),
        formation_step=formation_step,
        progress=progress,
        baseline=np.asarray(formation.progress[f"baseline_{PROGRESS_KEY}"], dtype=np.float64),
        noise_to_final=np.asarray(drift.noise_cosine, dtype=np.float64),
        phases=None if phases is None else {"emergent": int(phases.emergent), "convergent": int(phases.convergent)},
        link_metrics=[dict(manifests[int(step)]["link"]["metrics"]) for step in run.steps],
        dead_fraction=np.asarray(formation.link_dead_fraction, dtype=np.float64),
        nearest=index,
        nearest_cosine=cosine,
        crosscoder=_crosscoder(run),
    )


def run_windows(
    run: Run,
    steps: Sequence[int],
    n_contexts: int,
    *,
    device: str = "cpu",
    progress: bool = False,
    keep_activations: bool = False,
) -> ContextWindows:
    """The first ``n_contexts`` stored top contexts of every feature at each of ``steps`` (links of ``run``), every
    window token's activation recomputed under its link (:func:`~saetrack.stages.explorer.contexts.context_windows`,
    the window of the run's ``explorer`` section; the analysis set read through a model cut after the hook)."""
    positions = [run.position(step) for step in steps]
    formation, tokens, cfg = run.formation(), run.analysis_tokens(), run.config.explorer
    source = open_activations(run.config, run.run_dir, device=device, full_model=False)
    return context_windows(
        source.analysis, lambda step: run.link(step, device=device), [int(s) for s in steps],
        formation.top_values[positions], formation.top_indices[positions], context_length=tokens.shape[1],
        n_contexts=n_contexts, before=cfg.context_before, after=cfg.context_after, progress=progress,
        keep_activations=keep_activations,
    )  # fmt: skip
