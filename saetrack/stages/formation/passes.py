"""The formation stage's two passes over the checkpoints (notebook 03; paper Sec. 4-5, 6.1), one analysis set at a time.

* :func:`feature_tables` — per link: feature statistics (App. A.1), top-k datapoints, token/concept labels
  (Def. 4.1-4.2) with the dominant token and its share, and the decoder cosine to final (Sec. 6.1); control (c)
  (:class:`~saetrack.stages.formation.baseline_formation.BaselineControl`) measures its SAEs on the same analysis sets.
* :func:`progress_pass` — the progress measures (Def. 5.4, Eq. 14-19) of the live features at every checkpoint, the
  anchor-swap control's within-set similarities (:mod:`saetrack.analysis.anchors`) and the activations of Fig. 4's
  features at the checkpoints it shows.

**Feature statistics on the device.** Each link's statistics and top-k come from one encoding of its analysis set
(:func:`saetrack.analysis.feature_scan.scan_features`: the old code encoded it twice, once for the statistics and
once for the top-k, and copied every ``[8192, d_sae]`` activation block to the host both times); counts, float64
sums, maxima and the running top-k stay on the SAE's device and come back in one copy per checkpoint. Host traffic
per checkpoint and SAE (:func:`host_traffic`; N = analysis rows, F = d_sae, k = ``formation.top_k``):
``h2d = 4 N d_model``, ``d2h = F (24 + 12 k)`` (was ``8 N d_model`` and ``8 N F``). pythia-410m-l4 (N = 32,768 x
128 = 4,194,304, d_model 1,024, F = 65,536, k = 25): d2h 21,233,664 B (20.25 MiB; was 2,199,023,255,552 B = 2 TiB),
h2d 17,179,869,184 B (16 GiB, the rows themselves; was 32 GiB). A baseline checkpoint scans a second SAE (control
(c)), so twice that there.

**Why the two passes over the checkpoints stay two.** :func:`progress_pass` needs what only the whole first pass
gives: the live features (App. A.1 filters on every checkpoint's statistics), D_i (the final link's top-k, Eq. 12),
the anchor sets (labels at every checkpoint) and Fig. 4's checkpoints (phases of the decoder cosine over all
checkpoints). A checkpoint's analysis set is therefore read twice (once per pass), never held across checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from saetrack.analysis import anchors as an
from saetrack.analysis import drift as dr
from saetrack.analysis import feature_scan as fs
from saetrack.analysis import features as fx
from saetrack.analysis import formation as fm
from saetrack.analysis.umap_panels import distinct_features
from saetrack.config.run import RunConfig
from saetrack.data.activations import ActivationSource
from saetrack.sae.weights import SAEWeights
from saetrack.stages.formation.baseline_formation import BaselineControl

__all__ = [
    "CheckpointFeatures",
    "ProgressPass",
    "feature_tables",
    "host_traffic",
    "progress_pass",
    "select_umap_features",
]


def select_umap_features(
    final_types: np.ndarray, final_progress: np.ndarray, live: np.ndarray, run: RunConfig, final_indices: np.ndarray
) -> list[int]:
    """Fig. 4's features: the most formed token- and concept-level live features (highest final activation-space
    progress measure), skipping any whose D_i (``final_indices`` ``[L, k]``, Eq. 12) shares more than half its
    datapoints with a feature already chosen (:func:`saetrack.analysis.umap_panels.distinct_features`)."""
    chosen_rows: list[int] = []
    for kind, n in (("token", run.formation.umap_token_features), ("concept", run.formation.umap_concept_features)):
        score = np.where(final_types == kind, final_progress, -np.inf)
        order = [int(j) for j in np.argsort(-score, kind="stable") if np.isfinite(score[j])]
        chosen_rows += distinct_features(order, final_indices, n, chosen_rows)
    return [int(live[j]) for j in chosen_rows]


def host_traffic(run: RunConfig) -> dict[str, int]:
    """Host traffic in bytes of one checkpoint's feature statistics and top-k for one SAE of ``run`` (module doc):
    ``h2d = 4 N d_model`` and ``d2h = F (24 + 12 k)``, with the old two-pass values as ``old_h2d`` / ``old_d2h``;
    N = analysis contexts x context length, F = expansion factor x d_model, k = ``formation.top_k``."""
    n_rows = run.cache.analysis_contexts * run.cache.context_length
    d_sae = run.chain.expansion_factor * run.model.d_model
    return fs.scan_host_bytes(n_rows, run.model.d_model, d_sae, run.formation.top_k)


@dataclass(frozen=True)
class CheckpointFeatures:
    """Per-checkpoint feature tables of the chain on the analysis set (T checkpoints, F features, k datapoints)."""

    stats: list[fx.FeatureStats]
    labels: np.ndarray  # [T, F]
    dominant: np.ndarray  # [T, F]
    shares: np.ndarray  # [T, F] float32
    top_values: np.ndarray  # [T, F, k] float32
    top_indices: np.ndarray  # [T, F, k] int64
    cosine: np.ndarray  # [T, F] decoder cosine to final (Sec. 6.1)


def feature_tables(
    run: RunConfig,
    source: ActivationSource,
    folders: dict[int, Path],
    steps: list[int],
    device: str,
    progress: bool,
    control: BaselineControl,
) -> CheckpointFeatures:
    """Statistics, top-k datapoints, token/concept labels (Def. 4.1-4.2) and decoder cosine to final (Sec. 6.1) of
    every feature of every link; control (c) measures its SAEs on the same analysis sets.

    One checkpoint's analysis set is read (streamed: computed) at a time and dropped before the next; the SAE
    encodes on ``device``.
    """
    cfg = run.formation
    tokens_flat = np.asarray(source.analysis_tokens).reshape(-1)
    final_decoder = SAEWeights.load(folders[steps[-1]]).W_dec.detach().cpu().numpy()
    stats, labels, dominant, shares, all_values, all_indices, cosine = [], [], [], [], [], [], []
    for step in tqdm(steps, desc="features per checkpoint", disable=not progress):
        weights = SAEWeights.load(folders[step], device=device)
        x = source.analysis(step)
        link_stats, values, indices = fs.scan_features(weights, x, k=cfg.top_k)  # one encoding, one copy back
        stats.append(link_stats)
        label, dom, share = fx.classify_token_concept(values, indices, tokens_flat, cfg.token_share, cfg.min_active)
        labels.append(label)
        dominant.append(dom)
        shares.append(share.astype(np.float32))
        all_values.append(values.astype(np.float32))
        all_indices.append(indices.astype(np.int64))
        decoder = weights.W_dec.detach().cpu().numpy()
        cosine.append(dr.link_cosine_to_final(decoder, final_decoder))
        control.visit(step, x, weights, stats[-1], (values, indices), tokens_flat)
        del x
    return CheckpointFeatures(
        stats,
        np.array(labels),
        np.array(dominant),
        np.stack(shares),
        np.stack(all_values),
        np.stack(all_indices),
        np.stack(cosine),
    )


@dataclass(frozen=True)
class ProgressPass:
    """What the second pass over the checkpoints gives: progress measures, the anchor control and UMAP's inputs."""

    measures: dict[str, np.ndarray]  # key -> [T, L]; "baseline_<key>" -> [T]
    chosen: list[int]  # the features Fig. 4 draws
    point_feature: np.ndarray  # [n] the feature of each UMAP point
    umap_points: dict[int, np.ndarray]  # checkpoint position -> [n, d] activations of the chosen features' D_i
    anchor_within: dict[str, np.ndarray]  # anchor name -> [T, n_a] within-set cosine S_i^a(t) (Eq. 15)


def progress_pass(
    run: RunConfig,
    source: ActivationSource,
    folders: dict[int, Path],
    steps: list[int],
    live: np.ndarray,
    final_types: np.ndarray,
    final_indices: np.ndarray,
    umap_positions: list[int],
    device: str,
    progress: bool,
    anchor_sets: list[an.AnchorSet] | None = None,
) -> ProgressPass:
    """Progress measures (Def. 5.4, Eq. 14-19) of the live features at every checkpoint, the final one first, and
    the anchor control's within-set cosine (Eq. 15) of every set of ``anchor_sets`` on the same read.

    The final checkpoint's measures choose Fig. 4's features; the activations of their D_i (Eq. 12-13) are kept at
    ``umap_positions``. One checkpoint's analysis set is held at a time.
    """
    cfg = run.formation
    positions = set(umap_positions)
    per: dict[int, dict[str, np.ndarray]] = {}
    anchored: dict[int, dict[str, np.ndarray]] = {}
    chosen: list[int] = []
    rows = np.zeros(0, dtype=np.int64)
    umap_points: dict[int, np.ndarray] = {}
    order = [len(steps) - 1, *range(len(steps) - 1)]
    for position in tqdm(order, desc="progress measures per checkpoint", disable=not progress):
        x = source.analysis(steps[position])
        per[position] = fm.progress_measures(
            [x],
            [SAEWeights.load(folders[steps[position]], device=device)],
            final_indices,
            n_random_activation=cfg.n_random_activation,
            n_random_feature=cfg.n_random_feature,
            seed=run.chain_seed,
            progress=False,
        )
        anchored[position] = an.anchor_within(x, anchor_sets or [])
        if position == len(steps) - 1:
            final = per[position]["activation_cosine"][-1]
            chosen = select_umap_features(final_types, final, live, run, final_indices)
            live_pos = {int(f): j for j, f in enumerate(live)}
            rows = np.concatenate([final_indices[live_pos[f]] for f in chosen]) if chosen else rows
        if position in positions and len(rows) > 2:
            umap_points[position] = np.asarray(x[rows])
        del x
    measures = {key: np.concatenate([per[p][key] for p in range(len(steps))]) for key in per[0]}
    within = {a.name: np.stack([anchored[p][a.name] for p in range(len(steps))]) for a in anchor_sets or []}
    point_feature = np.repeat(chosen, cfg.top_k) if chosen else np.zeros(0, dtype=np.int64)
    return ProgressPass(measures, chosen, point_feature, umap_points, within)
