"""Feature evolution from a crosscoder's decoder (Ge et al. 2025) on hand-built decoders with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from saetrack.analysis import evolution as ev


def test_decoder_norm_matrix_is_the_norm_of_every_feature_at_every_snapshot() -> None:
    w = np.zeros((2, 3, 2))
    w[0] = [[3, 4], [0, 1], [0, 0]]
    w[1] = [[6, 8], [1, 0], [-5, 12]]
    np.testing.assert_allclose(ev.decoder_norm_matrix(w), [[5, 1, 0], [10, 1, 13]])
    with pytest.raises(ValueError, match=r"shape \(3, 4\), expected \[features, snapshots, d_model\]"):
        ev.decoder_norm_matrix(np.zeros((3, 4)))


NORMS = np.array(
    [
        [0.1, 0.6, 1.0, 0.9],  # emerges at 1 (0.6 >= 0.5 * 1.0)
        [1.0, 0.3, 0.2, 0.1],  # initialisation feature, decays
        [0.0, 0.0, 0.0, 0.0],  # zero norm: never present
        [0.2, 0.4, 0.5, 1.0],  # exactly half the maximum at 2 counts: emerges at 2
        [2.0, 2.0, 2.0, 2.0],  # present throughout, does not decay
        [0.0, 1.0, 0.3, 0.1],  # emerges at 1 and fades: not an initialisation feature
    ]
)


def test_emergence_index_is_the_first_crossing_of_the_fraction() -> None:
    assert ev.emergence_index(NORMS, 0.5).tolist() == [1, 0, -1, 2, 0, 1]
    assert ev.emergence_index(NORMS, 0.95).tolist() == [2, 0, -1, 3, 0, 1]
    alive = np.array([True, True, True, False, True, True])
    assert ev.emergence_index(NORMS, 0.5, alive=alive).tolist() == [1, 0, -1, -1, 0, 1]
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"emergence fraction .* must lie in \(0, 1\]"):
            ev.emergence_index(NORMS, bad)


def test_present_mask_is_the_fraction_of_the_peak() -> None:
    present = ev.present_mask(NORMS, 0.5)
    assert present[0].tolist() == [False, True, True, True]
    assert not present[2].any()  # a zero row is absent everywhere
    assert present[4].all()


def test_decaying_initial_features() -> None:
    emergence = ev.emergence_index(NORMS, 0.5)
    assert ev.decaying_initial_features(NORMS, emergence, 0.5).tolist() == [False, True, False, False, False, False]
    # feature 1 ends at 0.1 of its peak: below half of it, not below 5%
    assert ev.decaying_initial_features(NORMS, emergence, 0.05).tolist() == [False] * 6


def _rotating(angles: list[float], norms: list[float]) -> np.ndarray:
    """A one-feature decoder ``[1, T, 3]`` whose direction turns in the (x, y) plane through ``angles``."""
    return np.array([[[n * np.cos(a), n * np.sin(a), 0.0] for a, n in zip(angles, norms, strict=True)]])


def test_cosine_to_final_of_a_rotated_direction() -> None:
    angles = [np.pi / 2, np.pi / 3, np.pi / 6, 0.0]
    w = _rotating(angles, [0.1, 2.0, 5.0, 1.0])  # norms do not enter a cosine
    np.testing.assert_allclose(ev.cosine_to_final(w)[0], np.cos(angles), atol=1e-12)
    present = np.array([[False, True, True, True]])
    cos = ev.cosine_to_final(w, present)[0]
    assert np.isnan(cos[0])
    np.testing.assert_allclose(cos[1:], np.cos(angles[1:]), atol=1e-12)


def test_adjacent_cosine_between_consecutive_snapshots() -> None:
    angles = [0.0, np.pi / 2, np.pi / 2 + np.pi / 3, np.pi]
    w = _rotating(angles, [1.0, 1.0, 3.0, 1.0])
    np.testing.assert_allclose(ev.adjacent_cosine(w)[0], [0.0, 0.5, np.cos(np.pi / 6)], atol=1e-12)
    present = np.array([[True, False, True, True]])
    cos = ev.adjacent_cosine(w, present)[0]
    assert np.isnan(cos[0]) and np.isnan(cos[1])  # needs the feature at both snapshots
    assert cos[2] == pytest.approx(np.cos(np.pi / 6))


def test_turning_point_is_the_step_with_the_lowest_median() -> None:
    nan = np.nan
    adjacent = np.array(
        [
            [0.9, 0.1, 0.8, nan],
            [0.95, 0.2, 0.9, nan],
            [0.1, 0.9, 0.85, nan],  # one feature turning early does not move the median
        ]
    )
    theta, median = ev.turning_point(adjacent)
    assert theta == 2  # the step 1 -> 2
    np.testing.assert_allclose(median[:3], [0.9, 0.2, 0.85])
    assert np.isnan(median[3])  # no feature present at both snapshots
    with pytest.raises(ValueError, match="no feature is present at two consecutive snapshots"):
        ev.turning_point(np.full((2, 3), nan))
