"""The fixed rules of the checkpoint-density study (:mod:`saetrack.stages.drift.density`), written before any result.

* **Which checkpoints** (:func:`density_positions`): the chain over every ``s``-th checkpoint of the schedule takes the
  schedule positions ``0, s, 2s, ...`` and always the final one, so every density starts at the dense chain's first
  link and ends at the same final checkpoint (the last gap may be shorter than ``s``).
* **Tokens to converge** (:func:`tokens_to_converge`): on a link's logged loss curve (Eq. 3's total loss against
  tokens seen, the :data:`~saetrack.stages.chain.links.CURVE_POINTS` points the chain keeps), the final loss is the
  mean of the last :data:`FINAL_SHARE` of the points; the running loss at a point is the mean of the
  :data:`RUNNING_SHARE` of the points ending there; the link has converged at the first point whose running loss is
  within :data:`CONVERGENCE_TOLERANCE` (relative) of the final loss. Its token count is reported.
* **Same feature** (:data:`SAME_FEATURE_COSINE`): a feature index persists between two SAEs when its decoder cosine
  is at least the project's agreement threshold
  (:data:`saetrack.analysis.method_comparison.MATCH_THRESHOLD`, 0.7). Shares are over the features **alive in both
  SAEs compared** (firing frequency > 0 on its training tokens, as each SAE saved it).
* **Null** (:func:`null_share`): the same share after the second SAE's alive features are permuted at random (seeded),
  i.e. what "persists" reads for features that are not the same.
* **Recommendation** (:func:`recommend_stride`): a stride passes when its chain's median persistence over its
  adjacent links is at least the dense chain's minus :data:`RECOMMEND_MARGIN`; the recommended stride is the largest
  one that passes with every denser stride studied passing too (1, the dense chain, when none does).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from saetrack.analysis.drift import link_cosine_to_final
from saetrack.analysis.method_comparison import MATCH_THRESHOLD

__all__ = [
    "CONVERGENCE_TOLERANCE",
    "DENSITY_RULE",
    "FINAL_SHARE",
    "RECOMMEND_MARGIN",
    "RUNNING_SHARE",
    "SAME_FEATURE_COSINE",
    "density_positions",
    "null_share",
    "persistence_share",
    "recommend_stride",
    "tokens_to_converge",
]


#: Relative tolerance of the convergence rule: the running loss within 2% of the final loss.
CONVERGENCE_TOLERANCE = 0.02
#: The final loss is the mean of the last 10% of a loss curve's points.
FINAL_SHARE = 0.1
#: The running loss is the mean over a trailing window of 5% of the curve's points (at least one point).
RUNNING_SHARE = 0.05
#: Decoder cosine at which a feature index counts as the same feature (the chain's agreement threshold).
SAME_FEATURE_COSINE = MATCH_THRESHOLD
#: A stride passes when its median persistence is at least the dense chain's minus this (absolute share).
RECOMMEND_MARGIN = 0.05

#: The rules as written into the study's manifest and results.
DENSITY_RULE = (
    f"chains over schedule positions 0, s, 2s, ... and the final one; each sparse link trained as a chain link "
    f"(recurrent init from the previous link of its own chain, link lr, warm-up and budget, the same rows and seed as "
    f"the dense link at that checkpoint, the chain's lambda); tokens to converge: first logged point whose running "
    f"loss (trailing mean over {RUNNING_SHARE:.0%} of the points) is within {CONVERGENCE_TOLERANCE:.0%} of the final "
    f"loss (mean of the last {FINAL_SHARE:.0%} of the points); a feature persists / agrees when its decoder cosine "
    f"is >= {SAME_FEATURE_COSINE} (shares over features alive in both SAEs compared); null: the second SAE's alive "
    f"features permuted (seeded); recommendation: the largest stride whose median persistence over its adjacent "
    f"links is >= the dense chain's minus {RECOMMEND_MARGIN}, every denser stride passing too"
)


def density_positions(n_checkpoints: int, stride: int) -> tuple[int, ...]:
    """Schedule positions of the chain over every ``stride``-th of ``n_checkpoints`` checkpoints: ``0, s, 2s, ...``
    and the final position ``n_checkpoints - 1`` (stride 1: every position)."""
    if stride < 1 or n_checkpoints < 1:
        raise ValueError(f"stride {stride} and n_checkpoints {n_checkpoints} must both be >= 1.")
    return tuple(sorted({*range(0, n_checkpoints, stride), n_checkpoints - 1}))


def tokens_to_converge(tokens: Sequence[float], loss: Sequence[float]) -> float | None:
    """Tokens a link needed to converge, by the module's rule: the tokens at the first point of the curve whose
    running loss (trailing mean over :data:`RUNNING_SHARE` of the points) is within :data:`CONVERGENCE_TOLERANCE` of
    the final loss (mean of the last :data:`FINAL_SHARE`). None for an empty or non-finite curve."""
    t, y = np.asarray(tokens, dtype=np.float64), np.asarray(loss, dtype=np.float64)
    if t.size == 0 or t.shape != y.shape or not np.isfinite(y).all():
        return None
    n = y.size
    final = float(y[-max(1, int(np.ceil(FINAL_SHARE * n))) :].mean())
    window = max(1, round(RUNNING_SHARE * n))
    cumulative = np.concatenate([[0.0], np.cumsum(y)])
    starts = np.maximum(np.arange(1, n + 1) - window, 0)
    running = (cumulative[1:] - cumulative[starts]) / (np.arange(1, n + 1) - starts)
    within = np.abs(running - final) <= CONVERGENCE_TOLERANCE * abs(final)
    return float(t[int(np.argmax(within))]) if within.any() else None


def _alive_both(alive_a: np.ndarray | None, alive_b: np.ndarray | None, n: int) -> np.ndarray:
    """Features alive in both SAEs (all when an SAE saved no firing frequency)."""
    mask = np.ones(n, dtype=bool)
    for alive in (alive_a, alive_b):
        if alive is not None:
            mask &= np.asarray(alive, dtype=bool)
    return mask


def persistence_share(cosine: np.ndarray, alive_a: np.ndarray | None, alive_b: np.ndarray | None) -> dict[str, float]:
    """Share of features alive in both SAEs whose decoder cosine ``cosine`` ``[F]`` (index against index) is at least
    :data:`SAME_FEATURE_COSINE`, the median cosine over them, and their count (share NaN when none)."""
    cos = np.asarray(cosine, dtype=np.float64)
    keep = _alive_both(alive_a, alive_b, cos.size) & np.isfinite(cos)
    if not keep.any():
        return {"share": float("nan"), "median_cosine": float("nan"), "alive": 0}
    return {"share": float(np.mean(cos[keep] >= SAME_FEATURE_COSINE)), "median_cosine": float(np.median(cos[keep])),
            "alive": int(keep.sum())}  # fmt: skip


def null_share(
    decoder_a: np.ndarray, decoder_b: np.ndarray, alive_a: np.ndarray | None, alive_b: np.ndarray | None, seed: int
) -> float:
    """:func:`persistence_share`'s share when the features alive in both SAEs of ``decoder_b`` are permuted at random
    (``seed``): the share a threshold of :data:`SAME_FEATURE_COSINE` gives features that are not the same."""
    a, b = np.asarray(decoder_a), np.asarray(decoder_b)
    keep = np.nonzero(_alive_both(alive_a, alive_b, a.shape[0]))[0]
    if keep.size == 0:
        return float("nan")
    perm = np.random.default_rng(seed).permutation(keep)
    cos = link_cosine_to_final(a[keep], b[perm])
    cos = cos[np.isfinite(cos)]
    return float(np.mean(cos >= SAME_FEATURE_COSINE)) if cos.size else float("nan")


def recommend_stride(persistence: Mapping[int, float]) -> dict[str, object]:
    """The recommendation rule on ``{stride: median persistence}`` (stride 1, the dense chain, required): the largest
    stride whose persistence is at least the dense chain's minus :data:`RECOMMEND_MARGIN` with every denser stride
    passing too. Returns the stride, the bar, and which strides passed."""
    if 1 not in persistence:
        raise ValueError("the dense chain's persistence (stride 1) is needed.")
    bar = persistence[1] - RECOMMEND_MARGIN
    passed = {int(s): bool(np.isfinite(v) and v >= bar) for s, v in sorted(persistence.items())}
    recommended = 1
    for stride in sorted(passed):
        if not passed[stride]:
            break
        recommended = stride
    return {"stride": recommended, "bar": float(bar), "margin": RECOMMEND_MARGIN, "passed": passed}
