"""The reviewers' questions and the data-order check: every verdict, and each rule at its thresholds."""

from __future__ import annotations

from typing import Any

import pytest

from saetrack.ledger.claim import FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED, Results
from saetrack.ledger.reviews import (
    DATA_ORDER,
    IDENTITY,
    PERSPECTIVES,
    QUALITY,
    SCRATCH_FEATURES,
    chain_matches_scratch_features,
    chain_quality,
    feature_measures_smooth,
    index_stability,
    link_quality_smooth,
    phases_agree_across_perspectives,
)


def _agreement(gaps: tuple[int, int], ranges: dict[str, dict[str, list[int] | None]] | None = None) -> Results:
    data: dict[str, Any] = {"drift": {"phase_agreement": {"emergent_gap_checkpoints": gaps[0],
                                                          "convergent_gap_checkpoints": gaps[1]}}}  # fmt: skip
    if ranges is not None:
        data["seeds"] = {"stability": {p: {"index": {f"{b}_index_range": r for b, r in by.items()}}
                                       for p, by in ranges.items()}}  # fmt: skip
    return Results(data)


@pytest.mark.parametrize(
    ("gaps", "verdict"),
    [
        ((0, 0), HOLDS),
        ((1, 1), HOLDS),
        ((2, 0), INCONCLUSIVE),
        ((0, 2), INCONCLUSIVE),
        ((3, 0), FAILS),
        ((1, 7), FAILS),
    ],
)
def test_phases_agree_without_a_seed_study(gaps: tuple[int, int], verdict: str) -> None:
    claim = phases_agree_across_perspectives(_agreement(gaps))
    assert claim.id == PERSPECTIVES.id and claim.verdict == verdict
    assert claim.number == max(gaps) and claim.control == 0


SPREAD = {  # Emergent boundary range 3 (drift 4..7), Convergent range 1 (progress 9..10; drift not fitted)
    "drift": {"emergent": [4, 7], "convergent": None},
    "progress": {"emergent": [5, 6], "convergent": [9, 10]},
}


@pytest.mark.parametrize(
    ("gaps", "verdict"),
    [
        ((3, 1), HOLDS),  # the Emergent gap equals its range over the seeds
        ((4, 1), FAILS),  # >= 3 and above the range
        ((3, 2), INCONCLUSIVE),  # the Convergent gap: above max(1, range 1) but under 3
        ((2, 3), FAILS),
    ],
)
def test_phases_agree_against_the_seed_range(gaps: tuple[int, int], verdict: str) -> None:
    claim = phases_agree_across_perspectives(_agreement(gaps, SPREAD))
    assert claim.verdict == verdict and claim.control == 3
    assert "range over the seed runs: 3 and 1 checkpoints" in claim.control_text


def test_phases_agree_not_measured() -> None:
    assert phases_agree_across_perspectives(Results({"drift": {"phase_agreement": None}})).verdict == NOT_MEASURED
    assert phases_agree_across_perspectives(Results({})).verdict == NOT_MEASURED


def _matching(chain: dict[int, float], seeds: dict[int, float]) -> Results:
    return Results({"chain": {
        "agreement": [{"step": s, "mean_matched_cosine": v} for s, v in chain.items()],
        "seed_to_seed_agreement": [{"step": s, "mean_matched_cosine": v} for s, v in seeds.items()],
    }})  # fmt: skip


@pytest.mark.parametrize(
    ("chain", "seeds", "verdict"),
    [
        ({700: 0.8, 2000: 0.8}, {700: 0.8, 2000: 0.7}, HOLDS),
        ({700: 0.0}, {700: 0.05}, HOLDS),  # gap -0.05: at the threshold
        ({700: 0.0}, {700: 0.07}, INCONCLUSIVE),
        ({700: 0.0}, {700: 0.1}, INCONCLUSIVE),  # gap -0.10 exactly does not fail
        ({700: 0.8, 2000: 0.0}, {700: 0.8, 2000: 0.11}, FAILS),  # the worst checkpoint decides
    ],
)
def test_chain_matches_scratch_features(chain: dict, seeds: dict, verdict: str) -> None:
    claim = chain_matches_scratch_features(_matching(chain, seeds))
    assert claim.id == SCRATCH_FEATURES.id and claim.verdict == verdict


def test_chain_matches_scratch_features_compares_only_shared_checkpoints() -> None:
    claim = chain_matches_scratch_features(_matching({1: 0.1, 700: 0.6, 2000: 0.8}, {700: 0.6, 2000: 0.7, 64: 0.9}))
    assert claim.verdict == HOLDS and claim.number == pytest.approx(0.7) and claim.control == pytest.approx(0.65)
    assert claim.number_text == "chain vs scratch: 0.60 (step 700), 0.80 (step 2000)"
    assert claim.why == "worst gap +0.00"
    assert chain_matches_scratch_features(_matching({1: 0.5}, {700: 0.5})).verdict == NOT_MEASURED
    assert chain_matches_scratch_features(Results({})).verdict == NOT_MEASURED


def _gaps(gaps: list[float], spreads: list[float | None] | None = None) -> Results:
    spreads = spreads or [None] * len(gaps)
    rows = [{"step": 100 * (i + 1), "gap": {"explained_variance": g},
             "seed_spread": None if s is None else {"explained_variance": s}}
            for i, (g, s) in enumerate(zip(gaps, spreads, strict=True))]  # fmt: skip
    return Results({"chain": {"quality_gap": rows}})


@pytest.mark.parametrize(
    ("gaps", "verdict"),
    [
        ([0.01, 0.002], HOLDS),
        ([0.0, -0.01], HOLDS),  # at the threshold
        ([0.0, -0.015], INCONCLUSIVE),
        ([0.0, -0.02], INCONCLUSIVE),  # "< -0.02" fails: -0.02 does not
        ([0.0, -0.021], FAILS),
    ],
)
def test_chain_quality(gaps: list[float], verdict: str) -> None:
    claim = chain_quality(_gaps(gaps))
    assert claim.id == QUALITY.id and claim.verdict == verdict and claim.number == min(gaps)
    assert claim.control is None and "up to n/a" in claim.control_text


def test_chain_quality_control_and_missing() -> None:
    claim = chain_quality(_gaps([0.0, -0.005, 0.001], [None, -0.004, 0.002]))
    assert claim.control == 0.004 and "differ by up to 0.004" in claim.control_text
    assert claim.number_text == "explained-variance gap +0.000 (step 100), -0.005 (step 200), +0.001 (step 300)"
    assert chain_quality(Results({"chain": {"quality_gap": []}})).verdict == NOT_MEASURED
    assert chain_quality(Results({})).verdict == NOT_MEASURED


@pytest.mark.parametrize(
    ("value", "verdict"),
    [(1.0, HOLDS), (0.9, HOLDS), (0.89, INCONCLUSIVE), (0.5, INCONCLUSIVE), (0.49, FAILS), (None, NOT_MEASURED)],
)
def test_index_stability(value: float | None, verdict: str) -> None:
    claim = index_stability(Results({"chain": {"mean_index_stability": value}}))
    assert claim.id == IDENTITY.id and claim.verdict == verdict and claim.number == value


def _links(steps: list[int], ev: list[float]) -> Results:
    return Results({"chain": {"links": [{"step": s, "explained_variance": v} for s, v in zip(steps, ev, strict=True)]}})


NANO = [0, 64, 700, 800, 900]


@pytest.mark.parametrize(
    ("ev", "verdict", "worst"),
    [
        ([0.5, 0.0, 0.0, 0.009, 0.009], HOLDS, 0.009),  # a big step before step 700 is not read
        ([0.5, 0.5, 0.0, 0.01, 0.01], INCONCLUSIVE, 0.01),  # "< 0.01" holds: 0.01 does not
        ([0.5, 0.5, 0.0, 0.0, 0.02], INCONCLUSIVE, 0.02),  # "> 0.02" fails: 0.02 does not
        ([0.5, 0.5, 0.0, 0.021, 0.021], FAILS, 0.021),
        ([0.5, 0.5, 0.1, 0.0, 0.0], FAILS, 0.1),  # a drop counts as much as a rise
    ],
)
def test_link_quality_smooth_from_step_700(ev: list[float], verdict: str, worst: float) -> None:
    claim = link_quality_smooth(_links(NANO, ev))
    assert claim.id == DATA_ORDER.id and claim.verdict == verdict and claim.number == pytest.approx(worst)
    assert "over 3 links from step 700" in claim.number_text


def test_link_quality_smooth_other_schedules_and_missing() -> None:
    # no step 700: from the middle checkpoint (index len // 2) on
    claim = link_quality_smooth(_links([0, 10, 20, 30, 40], [0.0, 0.5, 0.6, 0.6, 0.65]))
    assert claim.verdict == FAILS and claim.number == pytest.approx(0.05)
    assert "(into step 40) over 3 links from step 20" in claim.number_text
    last = link_quality_smooth(_links([0, 100, 700], [0.0, 0.5, 0.9]))  # one late link: no step between links
    assert last.verdict == HOLDS and last.number == 0.0 and "into step None" in last.number_text
    assert link_quality_smooth(_links([0, 1], [0.0, 0.5])).verdict == NOT_MEASURED
    assert link_quality_smooth(Results({})).verdict == NOT_MEASURED


def _feature_curves(concept: list[float]) -> Results:
    """Formation results whose concept-level feature-cosine curve is ``concept`` and every other curve is smooth."""
    smooth = [0.5 + 0.01 * t for t in range(len(concept))]
    formation: dict[str, Any] = {}
    for key in ("feature_cosine", "feature_jaccard", "feature_weighted_jaccard"):
        formation[key] = {"curve_token": smooth, "curve_concept": concept if key == "feature_cosine" else smooth}
    return Results({"formation": formation})


def test_feature_measures_smooth_finds_a_step_in_the_late_half() -> None:
    n = 20
    noisy = [0.3 + 0.002 * t + (0.001 if t % 2 else -0.001) for t in range(n)]
    claim = feature_measures_smooth(_feature_curves(noisy))
    assert claim.verdict == HOLDS and claim.number is not None and claim.number <= 4
    stepped = list(noisy)
    for t in range(15, n):  # a jump between checkpoints 14 and 15, as a slice boundary would make
        stepped[t] += 0.05
    claim = feature_measures_smooth(_feature_curves(stepped))
    assert claim.verdict == FAILS and "feature_cosine (concept)" in claim.number_text
    early = list(noisy)
    for t in range(3, n):  # a jump in the early half is not what this check reads
        early[t] += 0.05
    assert feature_measures_smooth(_feature_curves(early)).verdict == HOLDS
    assert feature_measures_smooth(Results({})).verdict == NOT_MEASURED
    with_gaps = _feature_curves([None, *noisy[1:]])
    assert feature_measures_smooth(with_gaps).verdict == HOLDS
