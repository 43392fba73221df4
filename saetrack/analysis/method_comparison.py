"""SAE-Track and the cross-snapshot crosscoder side by side (issue 14, item 5): matching, timing, phases, cost.

* **Matching per link** (:func:`match_per_snapshot`): at every snapshot ``θ`` the crosscoder also has a chain link
  for, its decoder rows at ``θ`` (features present there) are matched one-to-one to the link's live decoder rows
  by decoder cosine (Hungarian, :func:`saetrack.analysis.matching.match_features`).
* **Emergence against formation** (:func:`emergence_vs_formation`): crosscoder features matched to the chain's
  *final* link (the chain keeps feature identity by index, so its formation times belong to final-link indices)
  with cosine at least ``threshold``; for pairs where the chain feature formed and the crosscoder feature emerged,
  Spearman's rank correlation between the crosscoder's emergence step and the chain's formation step.
* **Ties and chance** (:func:`rank_agreement`, :func:`random_matching_baseline`): most crosscoder features tie at
  the first snapshot, so the rank correlation is Kendall's tau-b (which handles ties) against a permutation null of
  the same tied data; the matched cosine is set against the Hungarian matching of the same directions to random
  unit vectors (the chance level).
* **Phase boundaries on one timeline** (:func:`boundary_agreement`): boundaries from several perspectives, in
  training steps, compared pairwise by how many checkpoints of the common grid lie between them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import kendalltau, spearmanr

from saetrack.analysis.matching import match_features

#: Matched pairs with a decoder cosine below this are not the same feature (the chain's agreement threshold).
MATCH_THRESHOLD = 0.7

__all__ = [
    "MATCH_THRESHOLD",
    "EmergenceFormation",
    "boundary_agreement",
    "emergence_vs_formation",
    "match_per_snapshot",
    "random_matching_baseline",
    "rank_agreement",
]


def match_per_snapshot(
    crosscoder_dec: np.ndarray,
    present: np.ndarray,
    crosscoder_steps: Sequence[int],
    chain_decoders: Mapping[int, np.ndarray],
    chain_live: Mapping[int, np.ndarray],
) -> dict[int, np.ndarray]:
    """Matched decoder cosines at every step both methods have: step -> cosines of the matched pairs.

    ``crosscoder_dec`` is ``[F, T, d]``, ``present`` ``[F, T]`` (which crosscoder features take part at each
    snapshot), ``chain_decoders[step]`` a link's ``W_dec`` ``[F', d]`` and ``chain_live[step]`` its live features
    (boolean ``[F']``). Steps where either side has no feature are left out.
    """
    out: dict[int, np.ndarray] = {}
    for t, step in enumerate(crosscoder_steps):
        if step not in chain_decoders:
            continue
        mine, theirs = np.flatnonzero(present[:, t]), np.flatnonzero(chain_live[step])
        if mine.size == 0 or theirs.size == 0:
            continue
        result = match_features(crosscoder_dec[:, t], chain_decoders[step], subset_a=mine, subset_b=theirs)
        out[int(step)] = result.cosines
    return out


@dataclass(frozen=True)
class EmergenceFormation:
    """Matched (crosscoder, chain) feature pairs with both times, and their rank correlation."""

    crosscoder_features: np.ndarray  # [n]
    chain_features: np.ndarray  # [n]
    cosines: np.ndarray  # [n] decoder cosine at the common final step
    emergence_step: np.ndarray  # [n]
    formation_step: np.ndarray  # [n]
    rho: float  # Spearman; NaN with fewer than 3 pairs or a constant side
    p_value: float
    n_matched: int  # pairs above the cosine threshold, before dropping unformed / unemerged ones

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready summary (no per-pair arrays)."""
        return {
            "pairs": int(self.crosscoder_features.size),
            "matched_above_threshold": self.n_matched,
            "spearman_rho": None if np.isnan(self.rho) else self.rho,
            "p_value": None if np.isnan(self.p_value) else self.p_value,
            "median_cosine": float(np.median(self.cosines)) if self.cosines.size else None,
        }


def emergence_vs_formation(
    crosscoder_final: np.ndarray,
    crosscoder_alive: np.ndarray,
    emergence_step: np.ndarray,
    chain_final: np.ndarray,
    chain_live: np.ndarray,
    formation_step: np.ndarray,
    *,
    threshold: float = 0.7,
) -> EmergenceFormation:
    """Rank correlation of crosscoder emergence and chain formation over matched features.

    ``crosscoder_final`` ``[F, d]`` and ``chain_final`` ``[F', d]`` are the decoders at the final step both have;
    ``emergence_step`` ``[F]`` and ``formation_step`` ``[F']`` are training steps, negative for never.
    Pairs are the Hungarian matching of alive to live features with cosine ``>= threshold``.
    """
    match = match_features(crosscoder_final, chain_final, subset_a=crosscoder_alive, subset_b=chain_live)
    keep = match.cosines >= threshold
    a, b, cos = match.index_a[keep], match.index_b[keep], match.cosines[keep]
    timed = (emergence_step[a] >= 0) & (formation_step[b] >= 0)
    a, b, cos = a[timed], b[timed], cos[timed]
    e, f = emergence_step[a].astype(np.int64), formation_step[b].astype(np.int64)
    rho, p = np.nan, np.nan
    if a.size >= 3 and np.unique(e).size > 1 and np.unique(f).size > 1:
        stat = spearmanr(e, f)
        rho, p = float(stat.statistic), float(stat.pvalue)
    return EmergenceFormation(a, b, cos, e, f, rho, p, int(keep.sum()))


def rank_agreement(
    emergence_step: np.ndarray, formation_step: np.ndarray, *, permutations: int, seed: int
) -> dict[str, Any]:
    """Kendall's tau-b between crosscoder emergence and chain formation of matched pairs, with a permutation null.

    tau-b corrects for ties on either side (``scipy.stats.kendalltau``, variant ``"b"``). The null shuffles the
    emergence steps over the pairs ``permutations`` times (seeded), which keeps both sides' ties: the two-sided
    p-value is ``(1 + #{|tau_null| >= |tau|}) / (1 + permutations)``, with the null's 2.5% and 97.5% quantiles.
    All None with fewer than 3 pairs or a constant side.
    """
    e, f = np.asarray(emergence_step), np.asarray(formation_step)
    out: dict[str, Any] = {"n": int(e.size), "permutations": int(permutations), "kendall_tau_b": None,
                           "permutation_p": None, "null_q025": None, "null_q975": None}  # fmt: skip
    if e.size < 3 or np.unique(e).size < 2 or np.unique(f).size < 2:
        return out
    tau = float(kendalltau(e, f, variant="b").statistic)
    rng = np.random.default_rng(seed)
    null = np.array([kendalltau(rng.permutation(e), f, variant="b").statistic for _ in range(permutations)])
    exceed = int(np.sum(np.abs(null) >= abs(tau) - 1e-12))
    out.update(
        kendall_tau_b=tau,
        permutation_p=(1 + exceed) / (1 + permutations),
        null_q025=float(np.quantile(null, 0.025)),
        null_q975=float(np.quantile(null, 0.975)),
    )
    return out


def random_matching_baseline(directions: np.ndarray, n_random: int, seed: int) -> np.ndarray:
    """Matched cosines of the Hungarian matching of ``directions`` ``[n, d]`` to ``n_random`` random unit vectors of
    the same dimension (isotropic, seeded): the chance level of :func:`match_per_snapshot` (Fig. X08)."""
    directions = np.asarray(directions, dtype=np.float64)
    random = np.random.default_rng(seed).standard_normal((n_random, directions.shape[1]))
    return match_features(directions, random).cosines


def boundary_agreement(boundaries: Mapping[str, Sequence[int]], grid: Sequence[int]) -> dict[str, Any]:
    """Pairwise agreement of phase boundaries given in training steps by perspective.

    For each pair of perspectives with the same number of boundaries, and each boundary, the number of checkpoints of
    ``grid`` (sorted training steps) strictly between the two boundary steps plus one (0: the same checkpoint, 1:
    adjacent); with different counts the pair is reported as not comparable. Also the largest such distance.
    """
    grid_arr = np.asarray(sorted(grid))
    position = {int(s): int(np.searchsorted(grid_arr, s)) for steps in boundaries.values() for s in steps}
    names = list(boundaries)
    pairs: dict[str, Any] = {}
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            a, b = list(boundaries[first]), list(boundaries[second])
            key = f"{first} vs {second}"
            if len(a) != len(b) or not a:
                pairs[key] = {"comparable": False}
                continue
            apart = [abs(position[int(x)] - position[int(y)]) for x, y in zip(a, b, strict=True)]
            pairs[key] = {"comparable": True, "checkpoints_apart": apart, "max_apart": max(apart)}
    return pairs
