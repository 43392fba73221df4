"""Known-answer tests of the anchor-swap control (saetrack.analysis.anchors): planted sets coherent around one
checkpoint, the choice of anchors and features, and the agreement of the final anchor with Eq. 14-16."""

from __future__ import annotations

import numpy as np
import pytest

from saetrack.analysis import features as fx
from saetrack.analysis.anchors import (
    ANCHOR_NAMES,
    anchor_positions,
    anchor_sets,
    anchor_summary,
    anchor_within,
    median_curve,
)
from saetrack.analysis.formation import progress_measures
from tests.analysis.helpers import chain_problem

N_STEPS, N_POINTS, D, K = 5, 60, 16, 5
#: Noise scale of each planted set per checkpoint: "peaked" is coherent only at checkpoint 2, "rising" toward the end.
NOISE = {"peaked": [3.0, 1.0, 0.05, 1.0, 3.0], "rising": [3.0, 2.0, 1.0, 0.5, 0.05]}
ROWS = {"peaked": np.arange(0, K), "rising": np.arange(10, 10 + K)}


def _planted() -> list[np.ndarray]:
    """One analysis set per checkpoint: random rows, and two planted top-k sets around fixed directions."""
    rng = np.random.default_rng(0)
    directions = {name: rng.standard_normal(D) for name in NOISE}
    out = []
    for t in range(N_STEPS):
        x = rng.standard_normal((N_POINTS, D))
        for name, rows in ROWS.items():
            x[rows] = directions[name] + NOISE[name][t] * rng.standard_normal((K, D))
        out.append(x.astype(np.float32))
    return out


def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, top-k values and indices ``[T, F=3, K]``: feature 0 = the peaked set (token-level), 1 = the rising
    set (concept-level), 2 = inactive at the middle checkpoint (only 2 active datapoints there)."""
    labels = np.array([["token", "concept", "concept"]] * N_STEPS)
    labels[2, 2] = "inactive"
    indices = np.stack([np.stack([ROWS["peaked"], ROWS["rising"], np.arange(30, 30 + K)])] * N_STEPS)
    values = np.ones((N_STEPS, 3, K), dtype=np.float32)
    values[2, 2, 2:] = 0.0
    return labels, values, indices


def test_anchor_positions_are_first_middle_and_final() -> None:
    assert anchor_positions(5) == {"first": 0, "middle": 2, "final": 4}
    assert anchor_positions(28) == {"first": 0, "middle": 13, "final": 27}
    assert anchor_positions(1) == {"first": 0, "middle": 0, "final": 0}
    assert tuple(anchor_positions(4)) == ANCHOR_NAMES
    with pytest.raises(ValueError, match="n_steps"):
        anchor_positions(0)


def test_anchor_sets_keep_live_features_active_at_the_anchor_typed_there() -> None:
    labels, values, indices = _tables()
    sets = {s.name: s for s in anchor_sets(labels, values, indices, live=np.array([0, 1, 2]))}
    assert sets["middle"].features.tolist() == [0, 1]  # feature 2 is inactive at the middle checkpoint
    assert sets["first"].features.tolist() == [0, 1, 2] and sets["final"].position == N_STEPS - 1
    assert sets["middle"].types.tolist() == ["token", "concept"]
    np.testing.assert_array_equal(sets["first"].indices[1], ROWS["rising"])
    only_live = {s.name: s for s in anchor_sets(labels, values, indices, live=np.array([1]))}
    assert only_live["first"].features.tolist() == [1]


def test_a_set_coherent_around_one_checkpoint_peaks_there_and_a_forming_one_rises() -> None:
    labels, values, indices = _tables()
    sets = anchor_sets(labels, values, indices, live=np.array([0, 1]))
    analysis = _planted()
    within = {name: np.stack([anchor_within(x, sets)[name] for x in analysis]) for name in ANCHOR_NAMES}
    peaked, rising = within["middle"][:, 0], within["middle"][:, 1]
    assert int(np.argmax(peaked)) == 2 and peaked[2] > 0.99
    assert peaked[1] > peaked[0] and peaked[3] > peaked[4]  # falls away from the peak on both sides
    assert np.all(np.diff(rising) > 0) and rising[-1] > 0.99
    summary = anchor_summary(list(range(0, 50, 10)), within, {s.name: s.types for s in sets}, np.full(5, 0.2))
    middle = summary["anchors"]["middle"]
    assert middle["index"] == 2 and middle["step"] == 20
    assert middle["token"]["n"] == 1 and middle["token"]["anchor"] == pytest.approx(peaked[2])
    assert middle["token"]["first"] == pytest.approx(peaked[0]) and middle["token"]["final"] == pytest.approx(peaked[4])
    assert middle["concept"]["curve"] == pytest.approx(rising.tolist())
    normalised = middle["token"]["normalised"]
    assert normalised["anchor"] == pytest.approx((peaked[2] - 0.2) / 0.8)
    assert summary["baseline"] == pytest.approx([0.2] * 5) and "selection effect" in summary["rule"].lower()


def test_inactive_members_of_a_top_k_list_are_left_out() -> None:
    labels, values, indices = _tables()
    values[:, 1, 3:] = 0.0  # the rising set's last two entries inactive everywhere
    indices[:, 1, 3:] = [40, 50]  # ... and pointing at random rows
    sets = anchor_sets(labels, values, indices, live=np.array([1]))
    final = anchor_within(_planted()[-1], sets)["final"]
    assert final[0] > 0.99  # only the three active, coherent rows count


def test_the_final_anchor_with_every_member_active_is_eq_15_of_the_paper_measure() -> None:
    analysis, weights = chain_problem(n_steps=3, n_points=200, d=8, d_sae=16, seed=1)
    tokens = np.random.default_rng(0).integers(0, 3, 200)
    tops = [fx.top_k_datapoints(w, x, k=6) for w, x in zip(weights, analysis, strict=True)]
    labels = np.stack([fx.classify_token_concept(v, i, tokens, 0.5, 2)[0] for v, i in tops])
    values, indices = np.stack([v for v, _ in tops]), np.stack([i for _, i in tops])
    full = np.nonzero((values[-1] > 0).all(axis=1) & (labels[-1] != "inactive"))[0]
    sets = anchor_sets(labels, values, indices, live=full)
    measures = progress_measures(analysis, weights, indices[-1][full], seed=0, progress=False)
    within = np.stack([anchor_within(x, sets)["final"] for x in analysis])
    expected = measures["activation_cosine"] + measures["baseline_activation_cosine"][:, None]
    assert full.size > 3
    np.testing.assert_allclose(within, expected, atol=1e-6)


def test_median_curve_ignores_nan_and_empty_types() -> None:
    values = np.array([[1.0, 3.0, np.nan], [np.nan, np.nan, 5.0]])
    np.testing.assert_allclose(median_curve(values, np.array([True, True, False])), [2.0, np.nan])
    assert np.isnan(median_curve(values, np.zeros(3, dtype=bool))).all()
