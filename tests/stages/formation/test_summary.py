"""The formation stage's numbers (saetrack.stages.formation.summary) on hand-made results with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from saetrack.stages.formation import FormationResult
from saetrack.stages.formation.summary import (
    anchor_numbers,
    normalised_curves,
    normalised_numbers,
    summary_numbers,
)
from tests.stages.formation.helpers import formation_result

STEPS = np.array([0, 10, 100])
BASELINE = np.array([0.6, 0.3, 0.2])


def _result(progress: np.ndarray, final_types: list[str], **extra: object) -> FormationResult:
    n = progress.shape[0]
    return formation_result(progress, final_types, STEPS[:n], BASELINE[:n], umap_steps=STEPS, **extra)


def test_normalised_progress_divides_m_by_the_room_above_the_baseline() -> None:
    # M = S - B; concept-level: S = 0.9, 0.7, 0.6 -> M = 0.3, 0.4, 0.4 rises, N = 0.75, 0.571, 0.5 falls
    progress = np.array([[0.3, 0.35, 0.3], [0.4, 0.6, 0.4], [0.4, 0.8, 0.4]])
    result = _result(progress, ["concept", "token", "concept"])
    curves = normalised_curves(result)
    np.testing.assert_allclose(curves["normalised_concept"], [0.3 / 0.4, 0.4 / 0.7, 0.4 / 0.8])
    np.testing.assert_allclose(curves["normalised_token"], [0.35 / 0.4, 0.6 / 0.7, 0.8 / 0.8])
    numbers = normalised_numbers(result)
    assert numbers["concept"]["first"] == pytest.approx(0.75) and numbers["concept"]["final"] == pytest.approx(0.5)
    assert numbers["concept"]["peak"] == pytest.approx(0.75) and numbers["concept"]["peak_step"] == 0
    assert numbers["token"]["peak_step"] == 100 and numbers["token"]["n"] == 1 and numbers["concept"]["n"] == 2
    assert len(numbers["concept"]["curve"]) == 3 and "1 - B(t)" in numbers["rule"]
    empty = normalised_numbers(_result(progress, ["token"] * 3))
    assert empty["concept"]["first"] is None and empty["concept"]["peak_step"] is None


def test_anchor_numbers_from_the_stage_arrays_and_none_for_old_folders() -> None:
    progress = np.zeros((3, 2))
    assert anchor_numbers(_result(progress, ["token", "concept"])) is None
    anchors = {
        "anchor__middle__types": np.array(["token", "concept", "token"]),
        "anchor__middle__within": np.array([[0.5, 0.2, 0.7], [0.9, 0.3, 0.8], [0.6, 0.1, 0.5]]),
        "anchor__middle__features": np.array([0, 4, 7]),
    }
    numbers = anchor_numbers(_result(progress, ["token", "concept"], anchors=anchors))
    assert numbers is not None and list(numbers["anchors"]) == ["middle"]
    middle = numbers["anchors"]["middle"]
    assert middle["index"] == 1 and middle["step"] == 10
    assert middle["token"]["n"] == 2 and middle["token"]["curve"] == pytest.approx([0.6, 0.85, 0.55])
    assert middle["concept"]["anchor"] == pytest.approx(0.3)
    assert middle["concept"]["normalised"]["anchor"] == pytest.approx((0.3 - 0.3) / 0.7)
    assert numbers["baseline"] == pytest.approx(BASELINE.tolist())


def test_summary_numbers_carry_the_new_controls_as_plain_json() -> None:
    progress = np.array([[0.3, 0.35], [0.4, 0.6], [0.4, 0.8]])
    extra = {
        "link_dead_fraction": np.array([0.0, 0.25, 0.5]),
        "link_ultra_low_fraction": np.array([0.1, 0.0, 0.0]),
    }
    result = _result(progress, ["concept", "token"], **extra)
    result.manifest["interrupted"] = {"rule": "r", "count": 3, "share_of_live": 0.1}
    numbers = summary_numbers(result)
    assert json.loads(json.dumps(numbers)) == numbers
    assert numbers["interrupted"]["count"] == 3
    assert numbers["chain_dead_fraction"]["dead"] == [0.0, 0.25, 0.5]
    assert numbers["chain_dead_fraction"]["steps"] == [0, 10, 100]
    assert numbers["normalised_progress"]["token"]["final"] == pytest.approx(1.0)
    assert numbers["anchor_control"] is None
    assert numbers["activation_cosine"]["concept_rise"] == pytest.approx(0.1)
