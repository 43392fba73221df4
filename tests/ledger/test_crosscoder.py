"""The crosscoder paper's claims against their nulls and controls, and the two methods' agreement: every verdict, and
each rule at its thresholds."""

from __future__ import annotations

from typing import Any

import pytest

from saetrack.ledger.claim import FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED, Results
from saetrack.ledger.crosscoder import (
    AGREES,
    BIGRAM,
    FIRST_SNAPSHOT,
    FRACTION,
    INFORMATIVE,
    NORMALISATION,
    SAME_FEATURES,
    STATISTICS_FIRST,
    TURNING,
    beats_bigram_statistics,
    emergence_agrees_with_formation,
    emergence_informative,
    emergence_not_first_snapshot_artefact,
    emergence_robust_to_normalisation,
    same_features,
    statistical_learning_first,
    turning_point,
)


def _cc(**section: Any) -> Results:
    return Results({"crosscoder": section})


def _nulls(share: float | None, q05: float | None = 0.6, q95: float | None = 0.8, repeated: float | None = 0.6):
    permuted = {"emerged_at_first_q05": {FRACTION: q05}, "emerged_at_first_q95": {FRACTION: q95},
                "emerged_at_first_mean": {FRACTION: 0.7}}  # fmt: skip
    nulls = {"permuted": permuted, "repeated": {"emerged_at_first": {FRACTION: repeated}}}
    return _cc(emergence_at_first={FRACTION: share, "0.3": 0.99}, nulls=nulls)


@pytest.mark.parametrize(
    ("share", "verdict"),
    [
        (0.2, HOLDS),
        (0.5, HOLDS),  # 0.1 below the repeated-snapshot null (0.6): at the threshold
        (0.55, INCONCLUSIVE),  # below the permutation null, too close to the repeated one
        (0.6, FAILS),  # at the permutation null's 5% quantile: inside its range
        (0.8, FAILS),
        (0.9, INCONCLUSIVE),  # above the permutation null
    ],
)
def test_emergence_informative(share: float, verdict: str) -> None:
    claim = emergence_informative(_nulls(share))
    assert claim.id == INFORMATIVE.id and claim.verdict == verdict
    assert (claim.number, claim.control) == (share, 0.7)
    assert "(5-95% 0.60-0.80); one snapshot repeated: 0.60" in claim.control_text


@pytest.mark.parametrize(
    "results",
    [_nulls(None), _nulls(0.2, q05=None), _nulls(0.2, q95=None), _nulls(0.2, repeated=None), _cc(), Results({})],
)
def test_emergence_informative_not_measured(results: Results) -> None:
    assert emergence_informative(results).verdict == NOT_MEASURED


def _dropped(d: float | None, c: float | None) -> Results:
    dropped = {"emerged_at_first": {FRACTION: d}, "same_features_in_full_emerged_by_first_step": c, "first_step": 16,
               "matched": 400}  # fmt: skip
    return _cc(nulls={"dropped_early": dropped})


@pytest.mark.parametrize(
    ("d", "verdict"),
    [(0.0, HOLDS), (0.1, HOLDS), (0.2, INCONCLUSIVE), (0.25, FAILS), (0.9, FAILS)],
)
def test_emergence_not_first_snapshot_artefact(d: float, verdict: str) -> None:
    claim = emergence_not_first_snapshot_artefact(_dropped(d, 0.0))  # c = 0: the thresholds are d itself
    assert claim.id == FIRST_SNAPSHOT.id and claim.verdict == verdict and (claim.number, claim.control) == (d, 0.0)


def test_emergence_not_first_snapshot_artefact_texts_and_missing() -> None:
    claim = emergence_not_first_snapshot_artefact(_dropped(0.5, 0.45))
    assert claim.verdict == HOLDS and "(step 16)" in claim.number_text and "same 400 features" in claim.control_text
    assert emergence_not_first_snapshot_artefact(_dropped(None, 0.4)).verdict == NOT_MEASURED
    assert emergence_not_first_snapshot_artefact(_dropped(0.4, None)).verdict == NOT_MEASURED
    assert emergence_not_first_snapshot_artefact(Results({})).verdict == NOT_MEASURED


@pytest.mark.parametrize(
    ("share", "centred", "verdict"),
    [
        (0.5, 0.5, HOLDS),
        (0.1, 0.0, HOLDS),  # differ by 0.1: at the threshold
        (0.0, 0.1, HOLDS),
        (0.25, 0.0, INCONCLUSIVE),  # "by > 0.25" fails: 0.25 does not
        (0.0, 0.26, FAILS),
        (0.9, 0.3, FAILS),
    ],
)
def test_emergence_robust_to_normalisation(share: float, centred: float, verdict: str) -> None:
    nulls = {"centred": {"emerged_at_first": {FRACTION: centred}}}
    claim = emergence_robust_to_normalisation(_cc(emergence_at_first={FRACTION: share}, nulls=nulls))
    assert (
        claim.id == NORMALISATION.id and claim.verdict == verdict and (claim.number, claim.control) == (share, centred)
    )


def test_emergence_robust_to_normalisation_not_measured() -> None:
    assert emergence_robust_to_normalisation(_cc(emergence_at_first={FRACTION: 0.5})).verdict == NOT_MEASURED
    no_share = _cc(nulls={"centred": {"emerged_at_first": {FRACTION: 0.5}}})
    assert emergence_robust_to_normalisation(no_share).verdict == NOT_MEASURED


def _rank(tau: float | None, p: float | None) -> Results:
    e = {"kendall_tau_b": tau, "permutation_p": p, "n": 166, "tied_at_first_share": 0.4, "null_q025": -0.1,
         "null_q975": 0.1}  # fmt: skip
    return _cc(emergence_vs_formation=e)


@pytest.mark.parametrize(
    ("tau", "p", "verdict"),
    [
        (0.3, 0.009, HOLDS),  # tau at the threshold
        (0.6, 0.0, HOLDS),
        (0.29, 0.001, INCONCLUSIVE),  # significant but weak
        (0.6, 0.01, INCONCLUSIVE),  # "p < 0.01" holds: 0.01 does not
        (0.6, 0.049, INCONCLUSIVE),
        (0.6, 0.05, FAILS),  # p at the threshold
        (-0.2, 0.5, FAILS),
    ],
)
def test_emergence_agrees_with_formation(tau: float, p: float, verdict: str) -> None:
    claim = emergence_agrees_with_formation(_rank(tau, p))
    assert claim.id == AGREES.id and claim.verdict == verdict and (claim.number, claim.control) == (tau, p)
    assert (
        "over 166 matched features (0.40 tied" in claim.number_text and "null 95%: -0.10 to 0.10" in claim.control_text
    )


def test_emergence_agrees_with_formation_not_measured() -> None:
    assert emergence_agrees_with_formation(_rank(None, 0.01)).verdict == NOT_MEASURED
    assert emergence_agrees_with_formation(_rank(0.4, None)).verdict == NOT_MEASURED
    # the older section (Spearman only) is not the rule's number
    assert emergence_agrees_with_formation(_cc(emergence_vs_formation={"spearman_rho": 0.25})).verdict == NOT_MEASURED


STEPS = [0, 1, 2, 4, 8, 16, 32, 64]


def _statistics(settled: int | None, emergent: int | None) -> Results:
    return Results({
        "crosscoder": {"statistical_learning": {"unigram_kl_settled_step": settled, "steps": STEPS}},
        "drift": {"phases_from_drift": {"index": {"emergent_step": emergent}}},
    })  # fmt: skip


@pytest.mark.parametrize(
    ("settled", "emergent", "verdict", "lag"),
    [
        (8, 8, HOLDS, 0),  # at the Emergent boundary
        (1, 32, HOLDS, -5),
        (16, 8, INCONCLUSIVE, 1),
        (32, 8, FAILS, 2),  # two checkpoints after it
        (64, 0, FAILS, 7),
    ],
)
def test_statistical_learning_first(settled: int, emergent: int, verdict: str, lag: int) -> None:
    claim = statistical_learning_first(_statistics(settled, emergent))
    assert claim.id == STATISTICS_FIRST.id and claim.verdict == verdict
    assert (claim.number, claim.control) == (settled, emergent) and claim.why == f"{lag:+d} checkpoints"


@pytest.mark.parametrize(("settled", "emergent"), [(None, 8), (8, None), (3, 8), (8, 700)])
def test_statistical_learning_first_not_measured(settled: int | None, emergent: int | None) -> None:
    assert statistical_learning_first(_statistics(settled, emergent)).verdict == NOT_MEASURED


def _loss(final: float | None, entropy: float | None) -> Results:
    loss = [] if final is None else [8.3, 6.0, final]
    return _cc(statistical_learning={"loss": loss, "bigram_entropy": entropy, "steps": [0, 100, 2000]})


@pytest.mark.parametrize(
    ("final", "entropy", "verdict"),
    [
        (3.9, 4.0, HOLDS),
        (0.0, 0.05, INCONCLUSIVE),  # below by exactly 0.05: not "more than"
        (0.05, 0.0, INCONCLUSIVE),  # above by exactly 0.05
        (0.0, 0.051, HOLDS),
        (0.051, 0.0, FAILS),
        (4.5, 4.0, FAILS),
    ],
)
def test_beats_bigram_statistics(final: float, entropy: float, verdict: str) -> None:
    claim = beats_bigram_statistics(_loss(final, entropy))
    assert claim.id == BIGRAM.id and claim.verdict == verdict and (claim.number, claim.control) == (final, entropy)
    assert "at step 2000" in claim.number_text


def test_beats_bigram_statistics_not_measured() -> None:
    assert beats_bigram_statistics(_loss(None, 4.0)).verdict == NOT_MEASURED
    assert beats_bigram_statistics(_loss(3.9, None)).verdict == NOT_MEASURED
    assert beats_bigram_statistics(Results({})).verdict == NOT_MEASURED


@pytest.mark.parametrize(
    ("value", "verdict"),
    [(0.1, HOLDS), (0.5, HOLDS), (0.51, INCONCLUSIVE), (0.79, INCONCLUSIVE), (0.8, FAILS), (0.99, FAILS)],
)
def test_turning_point(value: float, verdict: str) -> None:
    results = Results({"crosscoder": {"min_adjacent_median_cosine": value, "turning_point_step": 32},
                       "drift": {"phases_from_drift": {"index": {"emergent_step": 16}}}})  # fmt: skip
    claim = turning_point(results)
    assert claim.id == TURNING.id and claim.verdict == verdict
    assert (claim.number, claim.control) == (value, 16) and "into step 32" in claim.number_text


def test_turning_point_not_measured_and_without_phases() -> None:
    assert turning_point(_cc(turning_point_step=32)).verdict == NOT_MEASURED
    claim = turning_point(_cc(min_adjacent_median_cosine=0.3))
    assert claim.verdict == HOLDS and claim.control is None  # the Emergent step is context only


def _matching(final: float, baseline: float | None, extra: dict[str, Any] | None = None) -> Results:
    matching: dict[str, Any] = {"0": {"median_cosine": 0.9}, "300": {"median_cosine": 0.95},
                                "2000": {"median_cosine": final}}  # fmt: skip
    if baseline is not None:
        matching["random_baseline_median"] = baseline
    return _cc(matching={**matching, **(extra or {})})


@pytest.mark.parametrize(
    ("final", "baseline", "verdict"),
    [
        (0.3, 0.0, HOLDS),  # margin at the threshold
        (0.6, 0.1, HOLDS),
        (0.2, 0.0, INCONCLUSIVE),
        (0.1, 0.0, FAILS),  # margin at the threshold
        (0.2, 0.15, FAILS),
    ],
)
def test_same_features_reads_the_final_checkpoint(final: float, baseline: float, verdict: str) -> None:
    claim = same_features(_matching(final, baseline))  # "2000", not "300" (the largest step, not the largest string)
    assert claim.id == SAME_FEATURES.id and claim.verdict == verdict
    assert (claim.number, claim.control) == (final, baseline)


def test_same_features_not_measured() -> None:
    assert same_features(_matching(0.6, None)).verdict == NOT_MEASURED
    assert same_features(_cc(matching={"random_baseline_median": 0.1})).verdict == NOT_MEASURED
    assert same_features(Results({})).verdict == NOT_MEASURED
