"""Feature formation along a chain (paper Sec. 5): activation sets, progress measures and UMAP embeddings.

* Eq. 12: D_i, the datapoints (rows of the fixed analysis set) in feature i's faithful region under the final SAE
  at the final checkpoint, here the top-k activating rows (:func:`saetrack.features.top_k_datapoints`).
* Eq. 13: A_i^t, the model activations of D_i at checkpoint t (:func:`activation_sets`).
* Eq. 14-19: the progress measure M_i(t) in activation space (cosine) and in feature space (cosine, Jaccard,
  weighted Jaccard; Eq. 27-29), with the feature set F_i^t = SAE[t]'s encoding of A_i^t
  (:func:`progress_measures`), built on :mod:`saetrack.progress`.
* Fig. 4: 2-D UMAP embeddings of activation sets, fitted separately per checkpoint (:func:`umap_embedding`).
* Which checkpoints Fig. 2's columns and Fig. 4's panels show (:func:`choose_checkpoints`): chosen from the phases
  (Sec. 4.1) detected on the median decoder cosine to final, or, when no phases can be fitted, by the paper's index
  fractions (:func:`checkpoint_positions`).

Everything works on plain arrays (one ``[N, d]`` analysis array per checkpoint, the same N datapoints at every
checkpoint) so that it can be tested on synthetic data. Checkpoints are independent (the random sets are drawn from
the seed alone), so :mod:`saetrack.stages.formation` calls :func:`progress_measures` one checkpoint at a time and
never holds two analysis sets.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from saetrack.analysis.drift import PHASE_NAMES, detect_phases, phase_labels
from saetrack.analysis.progress import pairwise_mean_similarity, progress_measure, random_baseline, random_indices
from saetrack.sae.weights import SAEWeights, feature_activations

__all__ = [
    "ACTIVATION_KEYS",
    "FEATURE_KEYS",
    "PAPER_FIG2_MIDDLE_FRACTION",
    "PAPER_FIG4_FRACTIONS",
    "PROGRESS_KEYS",
    "CheckpointChoice",
    "activation_sets",
    "checkpoint_positions",
    "choose_checkpoints",
    "progress_measures",
    "umap_embedding",
]


#: Result keys of :func:`progress_measures` in activation space (Eq. 14) -> similarity metric.
ACTIVATION_KEYS: dict[str, str] = {"activation_cosine": "cosine"}
#: Result keys of :func:`progress_measures` in feature space (Eq. 17) -> similarity metric (Eq. 27-29).
FEATURE_KEYS: dict[str, str] = {
    "feature_cosine": "cosine",
    "feature_jaccard": "jaccard",
    "feature_weighted_jaccard": "weighted_jaccard",
}
PROGRESS_KEYS: tuple[str, ...] = (*ACTIVATION_KEYS, *FEATURE_KEYS)

#: Fig. 4 shows checkpoints 0, 5, 10, 15, 60 and 153 of the paper's 154-checkpoint list (positions 0..153).
PAPER_FIG4_FRACTIONS: tuple[float, ...] = (0.0, 5 / 153, 10 / 153, 15 / 153, 60 / 153, 1.0)
#: The paper's Fig. 2 middle column (checkpoints 15-21 of 153) as a fraction of the schedule (fallback rule only).
PAPER_FIG2_MIDDLE_FRACTION = 18 / 153


# ----------------------------------------------------------------------------------------------
# Activation sets (Eq. 12-13)
# ----------------------------------------------------------------------------------------------


def _check_indices(indices: np.ndarray, n_points: int) -> np.ndarray:
    """``indices`` as an int64 ``[F, k]`` array of valid rows of an ``n_points``-row analysis set."""
    idx = np.asarray(indices)
    if idx.ndim != 2 or idx.shape[0] < 1 or idx.shape[1] < 2:
        raise ValueError(f"indices must have shape [F >= 1, k >= 2], got shape {idx.shape}")
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"indices must be integers, got dtype {idx.dtype}")
    if idx.min() < 0 or idx.max() >= n_points:
        raise ValueError(f"indices must lie in [0, {n_points}), got range [{idx.min()}, {idx.max()}]")
    return idx.astype(np.int64)


def _check_analysis(analysis_by_step: Sequence[np.ndarray]) -> tuple[int, int]:
    """Validate one ``[N, d]`` array per checkpoint with equal shapes; return ``(N, d)``."""
    if len(analysis_by_step) == 0:
        raise ValueError("analysis_by_step is empty; need one [N, d] array per checkpoint")
    shape = tuple(analysis_by_step[0].shape)
    if len(shape) != 2:
        raise ValueError(f"each analysis array must have shape [N, d], got shape {shape}")
    for t, arr in enumerate(analysis_by_step):
        if tuple(arr.shape) != shape:
            raise ValueError(
                f"analysis arrays must all have the same shape (the same datapoints at every checkpoint); "
                f"checkpoint 0 has {shape}, checkpoint {t} has {tuple(arr.shape)}"
            )
    return shape[0], shape[1]


#: Rows read per block by :func:`_gather` (64 MiB of float32 at d = 1024).
GATHER_BLOCK_ROWS = 16_384


def _gather(analysis: np.ndarray, rows: np.ndarray, block: int = GATHER_BLOCK_ROWS) -> np.ndarray:
    """Rows ``rows [...]`` of one ``[N, d]`` analysis array (memmap-friendly) as float32 ``[..., d]``.

    Read in ascending row order (a memory map or a streamed view computes each of its batches once), ``block`` rows
    at a time straight into the result: the ``[..., d]`` gather exists once in host memory, not twice.
    """
    flat = rows.reshape(-1)
    order = np.argsort(flat, kind="stable")  # read a memory map in ascending row order
    out = np.empty((flat.size, analysis.shape[1]), dtype=np.float32)
    for start in range(0, flat.size, block):
        part = order[start : start + block]
        out[part] = np.asarray(analysis[flat[part]], dtype=np.float32)
    return out.reshape(*rows.shape, analysis.shape[1])


def activation_sets(analysis_by_step: Sequence[np.ndarray], indices: np.ndarray) -> np.ndarray:
    """The activation sets A_i^t of Eq. 13: the activations at checkpoint t of the datapoints D_i (Eq. 12).

    Args:
        analysis_by_step: one ``[N, d]`` array per checkpoint (T of them), the same N datapoints at every checkpoint.
        indices: ``[F, k]`` rows of the analysis set; row i holds D_i (e.g. from ``features.top_k_datapoints``).

    Returns:
        ``[T, F, k, d]`` float32, ``out[t, i, j] = analysis_by_step[t][indices[i, j]]``.
    """
    n_points, _ = _check_analysis(analysis_by_step)
    idx = _check_indices(indices, n_points)
    return np.stack([_gather(arr, idx) for arr in analysis_by_step], axis=0)


@torch.no_grad()
def _feature_set_similarities(acts: np.ndarray, weights: SAEWeights, feature_chunk: int) -> dict[str, torch.Tensor]:
    """Mean pairwise similarities (Eq. 15 / 18) of activation sets ``acts [F, k, d]`` and their SAE codes.

    Sets are encoded and compared ``feature_chunk`` at a time, so at most ``[feature_chunk, k, d_sae]`` codes
    exist at once. Returns ``{key: [F] float64}`` for every key of :data:`PROGRESS_KEYS`.
    """
    parts: dict[str, list[torch.Tensor]] = {key: [] for key in PROGRESS_KEYS}
    for start in range(0, acts.shape[0], feature_chunk):
        chunk = torch.from_numpy(acts[start : start + feature_chunk])
        for key, metric in ACTIVATION_KEYS.items():
            parts[key].append(pairwise_mean_similarity(chunk, metric).cpu())
        codes = feature_activations(weights, chunk)
        for key, metric in FEATURE_KEYS.items():
            parts[key].append(pairwise_mean_similarity(codes, metric).cpu())
    return {key: torch.cat(vals) for key, vals in parts.items()}


def _baselines(random_act: np.ndarray, random_feat: np.ndarray, weights: SAEWeights) -> dict[str, float]:
    """Random baselines at one checkpoint (Eq. 16 in activation space, Eq. 19 in feature space)."""
    out: dict[str, float] = {}
    act = torch.from_numpy(random_act)
    for key, metric in ACTIVATION_KEYS.items():
        out[key] = random_baseline(act, metric)
    codes = feature_activations(weights, torch.from_numpy(random_feat))
    for key, metric in FEATURE_KEYS.items():
        out[key] = random_baseline(codes, metric)
    return out


def progress_measures(
    analysis_by_step: Sequence[np.ndarray],
    weights_by_step: Sequence[SAEWeights],
    indices: np.ndarray,
    *,
    n_random_activation: int = 150,
    n_random_feature: int = 100,
    seed: int = 0,
    feature_chunk: int = 256,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Progress measures M_i(t) (Def. 5.4) of F features at T checkpoints, in activation and feature space.

    ``activation_cosine`` is Eq. 14 (cosine, Eq. 27, between activations); ``feature_cosine``,
    ``feature_jaccard`` and ``feature_weighted_jaccard`` are Eq. 17 with Eq. 27 / 28 / 29, the feature set
    F_i^t being SAE[t]'s encoding (Eq. 2) of A_i^t. The baseline (Eq. 16 / 19) uses the same
    ``n_random_activation`` (paper: 150) resp. ``n_random_feature`` (paper: 100) random datapoints at every
    checkpoint, drawn once with :func:`saetrack.analysis.progress.random_indices`. Work is done one
    checkpoint and ``feature_chunk`` features at a time: memory is O(F·k·d + feature_chunk·k·d_sae).

    Args:
        analysis_by_step: one ``[N, d]`` array per checkpoint, the same N datapoints at every checkpoint.
        weights_by_step: the SAE of each checkpoint (same length as ``analysis_by_step``).
        indices: ``[F, k]`` analysis rows, row i = D_i (Eq. 12).
        n_random_activation: size of the random set in activation space.
        n_random_feature: size of the random set in feature space.
        seed: seed of the random-set draws.
        feature_chunk: features encoded and compared at once.
        progress: show a progress bar over the checkpoints.

    Returns:
        ``{key: [T, F] float64}`` for each key of :data:`PROGRESS_KEYS` and ``{"baseline_" + key: [T] float64}``.
        Jaccard values are NaN for a set whose codes are all zero (see :func:`progress.pairwise_mean_similarity`).
    """
    n_points, _ = _check_analysis(analysis_by_step)
    idx = _check_indices(indices, n_points)
    if len(weights_by_step) != len(analysis_by_step):
        raise ValueError(
            f"need one SAE per checkpoint: {len(analysis_by_step)} analysis arrays, {len(weights_by_step)} SAEs"
        )
    if feature_chunk < 1:
        raise ValueError(f"feature_chunk must be >= 1, got {feature_chunk}")
    rand_act = random_indices(n_points, n_random_activation, seed)
    rand_feat = random_indices(n_points, n_random_feature, seed)
    n_steps, n_features = len(analysis_by_step), idx.shape[0]
    out = {key: np.empty((n_steps, n_features), dtype=np.float64) for key in PROGRESS_KEYS}
    base = {key: np.empty(n_steps, dtype=np.float64) for key in PROGRESS_KEYS}
    steps = zip(analysis_by_step, weights_by_step, strict=True)
    for t, (analysis, weights) in enumerate(tqdm(steps, total=n_steps, desc="progress measures", disable=not progress)):
        baseline = _baselines(_gather(analysis, rand_act), _gather(analysis, rand_feat), weights)
        within = _feature_set_similarities(_gather(analysis, idx), weights, feature_chunk)
        for key in PROGRESS_KEYS:
            base[key][t] = baseline[key]
            out[key][t] = progress_measure(within[key], baseline[key])
    return {**out, **{f"baseline_{key}": val for key, val in base.items()}}


# ----------------------------------------------------------------------------------------------
# UMAP (Fig. 4)
# ----------------------------------------------------------------------------------------------


def umap_embedding(
    points: np.ndarray, *, seed: int, n_neighbors: int = 100, min_dist: float = 0.0, metric: str = "cosine"
) -> np.ndarray:
    """A 2-D UMAP embedding of ``points [n, d]`` (paper Fig. 4: n_neighbors=100, min_dist=0, cosine, seed 42).

    ``n_neighbors`` is clipped to ``n - 1``. Deterministic for a fixed ``seed`` (umap-learn then runs
    single-threaded); torch's thread count, which a seeded fit changes, is restored. Rows that repeat (a layer-0
    hook reads token embeddings, equal for equal tokens) are embedded once and share their point: umap-learn's seed
    does not make a fit of repeated rows deterministic (lmcinnes/umap#1277; measured here: two fits of one smoke
    panel with 14 distinct rows of 175 gave layouts 25 units apart). The paper fits one embedding per checkpoint; so
    should the caller.

    Returns:
        ``[n, 2]`` float64.
    """
    pts = np.asarray(points, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[0] < 3:
        raise ValueError(f"points must have shape [n >= 3, d], got shape {pts.shape}")
    if n_neighbors < 2:
        raise ValueError(f"n_neighbors must be >= 2, got {n_neighbors}")
    distinct, inverse = np.unique(pts, axis=0, return_inverse=True)
    if len(distinct) == len(pts) or len(distinct) < 3:  # nothing repeats (or too little is distinct to embed apart)
        return _fit_umap(pts, seed, n_neighbors, min_dist, metric)
    return _fit_umap(distinct, seed, n_neighbors, min_dist, metric)[inverse.reshape(-1)]


def _fit_umap(pts: np.ndarray, seed: int, n_neighbors: int, min_dist: float, metric: str) -> np.ndarray:
    """One seeded umap-learn fit of ``pts`` (:func:`umap_embedding`), torch's thread count restored afterwards."""
    import umap  # imported here: umap-learn pulls in numba, which is slow to import

    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(n_neighbors, pts.shape[0] - 1),
        min_dist=min_dist,
        metric=metric,
        random_state=seed,
        n_jobs=1,  # umap-learn forces 1 with a random_state anyway; say so to avoid its warning
    )
    threads = torch.get_num_threads()
    try:
        return np.asarray(reducer.fit_transform(pts), dtype=np.float64)
    finally:  # a seeded fit changes the OpenMP thread count torch shares: every later stage in this process (a
        torch.set_num_threads(threads)  # headless run's drift, a spread rank's next unit) would sum floats otherwise


def checkpoint_positions(steps: Sequence[int], wanted_fractions: Sequence[float] = PAPER_FIG4_FRACTIONS) -> list[int]:
    """Indices into ``steps`` (the SAE schedule) at the paper's Fig. 4 checkpoints.

    Fig. 4 shows positions p = 0, 5, 10, 15, 60, 153 of the paper's 154-checkpoint list, i.e. relative positions
    f = p / 153. In a schedule of n checkpoints, f maps to index ``round(f * (n - 1))``; collisions (short
    schedules) are pushed to the next free index, keeping the first (0) and last (n - 1) fixed. With
    n >= len(wanted_fractions) the result has one distinct ascending index per fraction; a shorter schedule
    returns every index ``0 .. n-1``.
    """
    n = len(steps)
    if n == 0:
        raise ValueError("steps is empty")
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise ValueError(f"steps must be strictly increasing, got {list(steps)}")
    fracs = list(wanted_fractions)
    if not fracs or any(not 0.0 <= f <= 1.0 for f in fracs) or any(b <= a for a, b in itertools.pairwise(fracs)):
        raise ValueError(f"wanted_fractions must be strictly increasing values in [0, 1], got {fracs}")
    if n <= len(fracs):
        return list(range(n))
    raw = [round(f * (n - 1)) for f in fracs]
    out: list[int] = []
    for pos, r in enumerate(raw):
        lowest = out[-1] + 1 if out else 0
        highest = n - (len(raw) - pos)  # leave room for the remaining fractions
        out.append(min(max(r, lowest), highest))
    return out


# ----------------------------------------------------------------------------------------------
# Which checkpoints Fig. 2 and Fig. 4 show
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointChoice:
    """The checkpoints of Fig. 2's columns and Fig. 4's panels, each ``{"position", "step", "phase", "why"}``."""

    #: ``"phases"``, or ``"index fraction"`` when no phases could be fitted (``fallback`` says why).
    rule: str
    fig2: list[dict[str, Any]]
    fig4: list[dict[str, Any]]
    #: Checkpoint indices where the Emergent and the Convergent phase start (``None`` with the fallback rule).
    emergent: int | None = None
    convergent: int | None = None
    fallback: str | None = None

    def record(self) -> dict[str, Any]:
        """The choice as JSON-ready data (for the stage manifest)."""
        return {
            "rule": self.rule,
            "emergent": self.emergent,
            "convergent": self.convergent,
            "fallback": self.fallback,
            "fig2": self.fig2,
            "fig4": self.fig4,
        }


def _entries(steps: Sequence[int], wanted: list[tuple[int, str]], phase: Sequence[str | None]) -> list[dict[str, Any]]:
    """``wanted`` (position, why) in position order, duplicates merged (their reasons joined with " = ")."""
    why: dict[int, list[str]] = {}
    for position, reason in wanted:
        why.setdefault(position, []).append(reason)
    return [{"position": p, "step": int(steps[p]), "phase": phase[p], "why": " = ".join(why[p])} for p in sorted(why)]


def _middle(start: int, stop: int) -> int:
    """The middle index of ``[start, stop)``, rounded up: ``start + (stop - start) // 2``."""
    return start + (stop - start) // 2


def choose_checkpoints(steps: Sequence[int], curve: Sequence[float], min_phase: int) -> CheckpointChoice:
    """Fig. 2's columns and Fig. 4's panels from the phases (Sec. 4.1) detected on ``curve`` against the index.

    ``curve`` is the median decoder cosine to final (Sec. 6.1) per checkpoint; the phases are the two knots of
    :func:`saetrack.analysis.drift.detect_phases` with ``min_phase``. With the Emergent phase ``[e, c)`` and
    ``middle(a, b) = a + (b - a) // 2``: Fig. 2 shows the first checkpoint, ``middle(e, c)`` (inside Emergent),
    ``c`` (end of Emergent = start of Convergent) and the final checkpoint; Fig. 4 shows the first checkpoint,
    ``middle(0, e)`` (inside Initialization & Warmup), ``e``, ``middle(e, c)``, ``c`` and the final checkpoint.
    Coinciding checkpoints are shown once. With fewer than ``3 * min_phase`` checkpoints, or when the fit fails,
    the paper's index fractions are used instead (Fig. 2: 0, 18/153, 1; Fig. 4: :func:`checkpoint_positions`)
    and ``fallback`` says why.
    """
    n = len(steps)
    if n == 0:
        raise ValueError("steps is empty")
    reason = None
    if n < 3 * max(min_phase, 1):
        reason = f"{n} checkpoints, fewer than 3 * min_phase_checkpoints = {3 * max(min_phase, 1)}"
    else:
        try:
            phases = detect_phases(np.arange(n, dtype=np.float64), curve, min_phase)
        except ValueError as err:
            reason = f"no phase fit: {err}"
    if reason is not None:
        middle = min(n - 1, max(1, round(PAPER_FIG2_MIDDLE_FRACTION * (n - 1))))
        fig2 = [(0, "first checkpoint"), (middle, "index fraction 18/153 (the paper's middle column)")]
        fig4 = [(p, "index fraction of the paper's Fig. 4 checkpoints") for p in checkpoint_positions(steps)]
        none = [None] * n
        return CheckpointChoice(
            rule="index fraction",
            fig2=_entries(steps, [*fig2, (n - 1, "final checkpoint")], none),
            fig4=_entries(steps, fig4, none),
            fallback=reason,
        )
    e, c = phases.emergent, phases.convergent
    names = [PHASE_NAMES[i] for i in phase_labels(n, phases)]
    fig2 = [
        (0, "first checkpoint"),
        (_middle(e, c), "middle of the Emergent phase"),
        (c, "end of the Emergent phase"),
        (n - 1, "final checkpoint"),
    ]
    fig4 = [
        (0, "first checkpoint"),
        (_middle(0, e), "middle of the Initialization & Warmup phase"),
        (e, "start of the Emergent phase"),
        (_middle(e, c), "middle of the Emergent phase"),
        (c, "start of the Convergent phase"),
        (n - 1, "final checkpoint"),
    ]
    return CheckpointChoice("phases", _entries(steps, fig2, names), _entries(steps, fig4, names), e, c)
