"""Fig. 4's panels made readable and comparable: distinct features, and one orientation across checkpoints.

* **Distinct features** (:func:`distinct_features`): two features whose datapoint sets D_i (Eq. 12) are nearly the
  same draw one cluster on top of the other, so one hides the other. Candidates are taken in order of preference and
  one is skipped when it shares more than :data:`MAX_SHARED` of its datapoints with a feature already chosen.
* **Comparable panels** (:func:`align_panels`): UMAP fits each checkpoint separately (the paper's Fig. 4), and each
  fit has its own arbitrary rotation and reflection, so the same datapoints land in unrelated places from panel to
  panel. The same datapoints appear in every panel, so each panel is turned onto its successor by an orthogonal
  Procrustes fit (rotation or reflection about the centroid, no scaling), from the final panel backwards. This
  changes no panel's internal geometry: whether a set is scattered or clustered at t is what that checkpoint's own
  fit says. (An AlignedUMAP fit instead pulls each panel's layout toward its neighbours', which can carry the final
  clusters into earlier panels, the very change Fig. 4 is meant to show; one joint fit of all panels mixes
  activation spaces of different checkpoints, which share no coordinates.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["MAX_SHARED", "align_panels", "distinct_features", "procrustes_rotation"]


#: Largest share of a candidate's k datapoints it may share with an already chosen feature (Fig. 4).
MAX_SHARED = 0.5


def distinct_features(candidates: Sequence[int], indices: np.ndarray, n: int, chosen: Sequence[int] = ()) -> list[int]:
    """Up to ``n`` of ``candidates`` (taken in order) whose datapoint sets are distinct, for Fig. 4.

    ``indices[c]`` is candidate ``c``'s ``[k]`` datapoint rows (D_i, Eq. 12). A candidate is skipped when it shares
    more than ``MAX_SHARED * k`` rows with a feature already chosen (earlier candidates, and ``chosen``, the
    features picked before, e.g. of the other type). Returns the chosen candidates in order.
    """
    indices = np.asarray(indices)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    picked: list[int] = []
    sets = [set(np.asarray(indices[c]).tolist()) for c in chosen]
    for c in candidates:
        if len(picked) == n:
            break
        rows = set(np.asarray(indices[c]).tolist())
        limit = MAX_SHARED * len(np.asarray(indices[c]))
        if all(len(rows & other) <= limit for other in sets):
            picked.append(int(c))
            sets.append(rows)
    return picked


def procrustes_rotation(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The orthogonal ``[2, 2]`` matrix R (rotation or reflection) minimising ``||source @ R - target||`` for
    centred ``[n, 2]`` point sets (orthogonal Procrustes: R = U V^T from the SVD of source^T target)."""
    source, target = np.asarray(source, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if source.shape != target.shape or source.ndim != 2:
        raise ValueError(f"source and target must be the same [n, d] shape, got {source.shape} and {target.shape}")
    u, _, vt = np.linalg.svd(source.T @ target)
    return u @ vt


def align_panels(embeddings: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Fig. 4's per-checkpoint UMAP embeddings ``[n, 2]`` (the same n datapoints in every panel), each centred and
    turned onto the next panel by :func:`procrustes_rotation`, from the final panel (kept as fitted, centred)
    backwards. Distances within a panel are unchanged. Returns the aligned panels in the same order."""
    panels = [np.asarray(e, dtype=np.float64) for e in embeddings]
    if not panels:
        return []
    shapes = {p.shape for p in panels}
    if len(shapes) != 1 or panels[0].ndim != 2:
        raise ValueError(f"every panel must be the same [n, 2] array, got shapes {sorted(shapes)}")
    aligned = [p - p.mean(axis=0) for p in panels]
    for j in range(len(aligned) - 2, -1, -1):
        aligned[j] = aligned[j] @ procrustes_rotation(aligned[j], aligned[j + 1])
    return aligned
