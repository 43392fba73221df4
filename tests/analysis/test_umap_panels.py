"""Fig. 4's panels (saetrack.analysis.umap_panels): distinct features, and panels turned to one orientation."""

from __future__ import annotations

import numpy as np
import pytest

from saetrack.analysis.umap_panels import MAX_SHARED, align_panels, distinct_features, procrustes_rotation


def test_distinct_features_skip_a_candidate_sharing_more_than_half_its_datapoints() -> None:
    indices = np.array(
        [
            [0, 1, 2, 3],  # candidate 0
            [0, 1, 2, 3],  # identical to 0: skipped (the reviewer's #144 / #352)
            [0, 1, 8, 9],  # shares 2 of 4 = half: kept
            [10, 11, 12, 13],
            [10, 11, 12, 20],  # shares 3 of 4 with candidate 3: skipped
            [30, 31, 32, 33],
        ]
    )
    assert MAX_SHARED == 0.5
    assert distinct_features([0, 1, 2, 3, 4, 5], indices, n=4) == [0, 2, 3, 5]
    assert distinct_features([1, 0, 3], indices, n=2) == [1, 3]  # order is preference
    assert distinct_features([4, 5], indices, n=2, chosen=[3]) == [5]  # already chosen features count too
    assert distinct_features([0, 1], indices, n=0) == []
    with pytest.raises(ValueError, match="n must be"):
        distinct_features([0], indices, n=-1)


def _rotation(angle: float, reflect: bool = False) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    r = np.array([[c, -s], [s, c]])
    return r @ np.diag([1.0, -1.0]) if reflect else r


def test_procrustes_recovers_a_rotation_and_a_reflection() -> None:
    points = np.random.default_rng(0).standard_normal((30, 2))
    points -= points.mean(axis=0)
    for turn in (_rotation(1.1), _rotation(-2.0, reflect=True)):
        r = procrustes_rotation(points @ turn, points)
        np.testing.assert_allclose(points @ turn @ r, points, atol=1e-10)
        np.testing.assert_allclose(r @ r.T, np.eye(2), atol=1e-12)


def test_align_panels_turns_each_panel_onto_the_next_without_changing_its_geometry() -> None:
    rng = np.random.default_rng(1)
    final = rng.standard_normal((25, 2))
    middle = final + 0.05 * rng.standard_normal((25, 2))
    first = rng.standard_normal((25, 2)) * 3  # a scattered panel, unrelated to the others
    fitted = [first @ _rotation(0.3) + 5.0, middle @ _rotation(2.5, reflect=True) - 7.0, final]
    aligned = align_panels(fitted)
    np.testing.assert_allclose(aligned[-1], final - final.mean(axis=0), atol=1e-12)  # the final panel: centred only
    assert np.abs(aligned[1] - aligned[2]).max() < 0.3  # the middle panel now lies on the final one
    for before, after in zip(fitted, aligned, strict=True):
        dist = np.linalg.norm(before[:, None] - before[None], axis=-1)
        np.testing.assert_allclose(np.linalg.norm(after[:, None] - after[None], axis=-1), dist, atol=1e-9)
        np.testing.assert_allclose(after.mean(axis=0), 0.0, atol=1e-12)
    assert align_panels([]) == []
    with pytest.raises(ValueError, match="same"):
        align_panels([final, final[:3]])
