"""The drift stage's trajectories (Def. 6.1, Fig. 7) and their random-walk null.

Features are drawn per evolution pattern (maintaining, shifting, grouping; never "interrupted" or "other") among
those that formed; each one's unit decoder directions across the chain are projected on the first two principal
components of its own trajectory. Beside each, :func:`saetrack.analysis.random_walk.random_walk_null` gives what a
trajectory with the same step sizes and random step directions looks like under the same projection, and the step
sizes before and after the feature formed say whether directions keep moving after formation (Sec. 6.2) at the rate
they moved before.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from saetrack.analysis import drift as dr
from saetrack.analysis import random_walk as rw

__all__ = [
    "NULL_WALKS",
    "TRAJECTORY_PATTERNS",
    "trajectory_arrays",
    "trajectory_features",
    "trajectory_numbers",
]


#: Evolution patterns whose features get a trajectory in Fig. 7 (interrupted identities and "other" never do).
TRAJECTORY_PATTERNS: tuple[str, ...] = ("maintaining", "shifting", "grouping")
#: Random walks drawn per trajectory for its null.
NULL_WALKS = 200


def trajectory_features(
    patterns: np.ndarray, live: np.ndarray, formation_time: np.ndarray, per_pattern: int, seed: int
) -> tuple[list[int], list[str]]:
    """Features per pattern for Fig. 7, drawn reproducibly among those that formed (preferring later formation).

    ``patterns`` is ``[F]`` (every feature), ``live`` ``[L]`` the live feature indices and ``formation_time`` ``[L]``.
    Shifting and grouping features are drawn among those formed after the first checkpoint when there are any, so the
    figure shows the unformed-to-formed transition the paper describes; maintaining ones among all formed.
    """
    live_patterns = np.asarray(patterns)[live]
    chosen: list[int] = []
    kinds: list[str] = []
    for offset, pattern in enumerate(TRAJECTORY_PATTERNS):
        of_pattern = (live_patterns == pattern) & (formation_time >= 0)
        later = of_pattern & (formation_time > 0)
        pool = np.nonzero(later if pattern != "maintaining" and later.any() else of_pattern)[0]
        picks = dr.sample_features(pool, per_pattern, seed + offset)
        chosen += [int(live[j]) for j in picks]
        kinds += [pattern] * len(picks)
    return chosen, kinds


def trajectory_arrays(rows: np.ndarray, times: list[int], seed: int) -> dict[str, np.ndarray]:
    """Fig. 7's projections and their null for the features whose decoder rows are ``rows`` ``[T, n, d]`` (feature
    ``j``'s decoder vector at every link, as :func:`saetrack.stages.drift.decoders.link_drift` reads them; formation
    checkpoint ``times[j]``, -1: never).

    Returns ``trajectory_coords [n, T, 2]``, ``trajectory_variance [n, 2]`` (PC1, PC2 shares), ``null_variance
    [n, W, 2]`` and ``null_straightness [n, W]`` of :data:`NULL_WALKS` random walks per feature,
    ``trajectory_straightness [n]``, and the mean step size of each trajectory before and after its formation
    (``step_before`` / ``step_after`` ``[n]``, NaN where a side has no step).
    """
    n_steps, n = rows.shape[0], len(times)
    if rows.ndim != 3 or rows.shape[1] != n:
        raise ValueError(f"rows must be [T, n={n}, d], got shape {rows.shape}.")
    out = {
        "trajectory_coords": np.zeros((n, n_steps, 2)),
        "trajectory_variance": np.zeros((n, 2)),
        "trajectory_straightness": np.full(n, np.nan),
        "null_variance": np.zeros((n, NULL_WALKS, 2)),
        "null_straightness": np.full((n, NULL_WALKS), np.nan),
        "step_before": np.full(n, np.nan),
        "step_after": np.full(n, np.nan),
    }
    if n_steps < 2:
        return out
    for j, formed_at in enumerate(times):
        vectors = rows[:, j]
        out["trajectory_coords"][j], out["trajectory_variance"][j] = dr.trajectory_projection(vectors)
        out["trajectory_straightness"][j] = rw.straightness(vectors)
        out["null_variance"][j], out["null_straightness"][j] = rw.random_walk_null(vectors, NULL_WALKS, seed + j)
        sizes = rw.step_sizes(vectors)  # step t goes from checkpoint t to t + 1
        if formed_at > 0:
            out["step_before"][j] = float(sizes[:formed_at].mean())
        if 0 <= formed_at < n_steps - 1:
            out["step_after"][j] = float(sizes[formed_at:].mean())
    return out


def trajectory_numbers(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Fig. 7 against its random-walk null, for the results JSON.

    Medians over the drawn trajectories of the PC1 and PC2 shares and of the straightness, the same medians of the
    null walks, the share of trajectories whose PC1 share, resp. straightness, exceeds the 95% quantile of its own
    null, and the median step size before and after formation over the trajectories that have both.
    """
    real, null = arrays["trajectory_variance"], arrays["null_variance"]
    straight, null_straight = arrays["trajectory_straightness"], arrays["null_straightness"]
    n = len(real)
    if n == 0:
        return {"trajectories": 0}
    with np.errstate(all="ignore"):
        pc1_q95 = np.nanquantile(null[:, :, 0], 0.95, axis=1)
        straight_q95 = np.nanquantile(null_straight, 0.95, axis=1)
    both = np.isfinite(arrays["step_before"]) & np.isfinite(arrays["step_after"])
    return {
        "trajectories": n,
        "null_walks": int(null.shape[1]),
        "median_pc1": float(np.median(real[:, 0])),
        "median_pc2": float(np.median(real[:, 1])),
        "null_median_pc1": float(np.median(null[:, :, 0])),
        "null_median_pc2": float(np.median(null[:, :, 1])),
        "share_pc1_beyond_null_q95": float(np.mean(real[:, 0] > pc1_q95)),
        "median_straightness": float(np.nanmedian(straight)),
        "null_median_straightness": float(np.nanmedian(null_straight)),
        "share_straightness_beyond_null_q95": float(np.mean(straight > straight_q95)),
        "with_both_sides": int(both.sum()),
        "median_step_before_formation": float(np.median(arrays["step_before"][both])) if both.any() else None,
        "median_step_after_formation": float(np.median(arrays["step_after"][both])) if both.any() else None,
    }
