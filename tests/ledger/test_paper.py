"""The paper's claims on the chain, the phases and the patterns: every verdict, and each rule at its thresholds."""

from __future__ import annotations

from typing import Any

import pytest

from saetrack.ledger.claim import FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED, Results
from saetrack.ledger.paper import (
    EFFICIENCY,
    PATTERNS,
    PATTERNS_ROBUST,
    THREE_PHASES,
    WARMUP,
    link_efficiency,
    patterns_exist,
    patterns_robust,
    three_phases,
    warmup_not_boundary,
)


def _efficiency(ratio: float | None, steps: list[int] | None) -> Results:
    return Results(
        {"chain": {"median_token_ratio_nontrivial": ratio, "convergence_summary": {"nontrivial_steps": steps}}}
    )


@pytest.mark.parametrize(
    ("ratio", "steps", "verdict"),
    [
        (0.05, [64, 700], HOLDS),  # at the threshold
        (0.01, [64, 700, 1400], HOLDS),
        (0.0500001, [64, 700], FAILS),
        (0.21, [64, 700, 1400], FAILS),
        (0.01, [64], INCONCLUSIVE),  # one non-trivial probe is too few either way
        (0.5, [], INCONCLUSIVE),
        (None, [64, 700], NOT_MEASURED),
        (0.01, None, NOT_MEASURED),
    ],
)
def test_link_efficiency(ratio: float | None, steps: list[int] | None, verdict: str) -> None:
    claim = link_efficiency(_efficiency(ratio, steps))
    assert claim.verdict == verdict and claim.id == EFFICIENCY.id == "P1"
    if verdict != NOT_MEASURED:
        assert claim.number == ratio and claim.control == len(steps or [])


def test_link_efficiency_texts() -> None:
    claim = link_efficiency(_efficiency(0.05, [64, 700]))
    assert "about 1/20" in claim.number_text and "steps [64, 700]" in claim.control_text
    assert claim.why == "0.05 <= 0.05"
    assert link_efficiency(_efficiency(0.25, [64, 700])).why == "0.25 > 0.05"


def _run(name: str, drift: int | None, progress: int | None) -> dict[str, Any]:
    return {
        "name": name,
        "phases": {"drift": {"index": {"preferred": drift}}, "progress": {"index": {"preferred": progress}}},
    }


def _seeds(pairs: list[tuple[int, int]], warmup: tuple[int, int] | None = None, nano: int | None = 3) -> Results:
    runs = [_run(f"m{i // 3}-c{i % 3}", d, p) for i, (d, p) in enumerate(pairs)]
    if warmup is not None:
        runs.append(_run("warmup100-m0-c0", *warmup))
    return Results({"seeds": {"runs": runs}, "drift": {"phases_from_drift": {"index": {"preferred_segments": nano}}}})


@pytest.mark.parametrize(
    ("pairs", "verdict", "share"),
    [
        ([(3, 3)] * 4 + [(3, 2)], HOLDS, 0.9),
        ([(3, 3)] * 3 + [(3, 2), (2, 3)], HOLDS, 0.8),  # 8 of 10 fits: at the threshold
        ([(3, 3)] * 2 + [(3, 2), (2, 2), (4, 6)], INCONCLUSIVE, 0.5),
        ([(3, 2), (3, 2)] + [(2, 4)] * 3, FAILS, 0.2),  # 2 of 10: at the threshold
        ([(6, 6)] * 5, FAILS, 0.0),
    ],
)
def test_three_phases_share_over_seed_runs(pairs: list[tuple[int, int]], verdict: str, share: float) -> None:
    claim = three_phases(_seeds(pairs))
    assert claim.id == THREE_PHASES.id and claim.verdict == verdict
    assert claim.number == pytest.approx(share) and claim.control == 3
    assert f"of {2 * len(pairs)} fits" in claim.number_text


def test_three_phases_leaves_the_warmup_control_out_and_reads_the_default_run() -> None:
    pairs = [(3, 3)] * 3 + [(3, 2), (2, 3)]
    assert three_phases(_seeds(pairs, warmup=(1, 1))).number == pytest.approx(0.8)  # not 8 of 12
    claim = three_phases(_seeds(pairs, nano=None))
    assert claim.verdict == HOLDS and claim.control is None  # the default run's count is context, not the rule
    assert three_phases(Results({})).verdict == NOT_MEASURED
    assert three_phases(_seeds([], warmup=(3, 3))).verdict == NOT_MEASURED  # only the warm-up control ran


def _control(shift: tuple[int | None, int | None], spread: tuple[int | None, int | None]) -> Results:
    entry = {
        p: {
            "shift_checkpoints": s,
            "seed_range_checkpoints": r,
            "default_emergent_step": 8,
            "control_emergent_step": 32,
        }
        for p, s, r in zip(("drift", "progress"), shift, spread, strict=True)
    }
    return Results({"seeds": {"warmup_control": {"default_warmup": 20, "control_warmup": 100, **entry}}})


@pytest.mark.parametrize(
    ("shift", "spread", "verdict"),
    [
        ((0, 0), (0, 0), HOLDS),
        ((1, -1), (1, 1), HOLDS),
        ((2, 0), (2, 1), HOLDS),  # |shift| == range: within the seeds' own spread
        ((2, 0), (1, 3), FAILS),  # drift follows the warm-up: shift >= 2 and above its range
        ((0, 3), (0, 2), FAILS),
        ((1, 0), (0, 0), INCONCLUSIVE),  # beyond the spread but under 2 checkpoints
        ((-3, 0), (1, 0), INCONCLUSIVE),  # moved against the warm-up: does not follow it
        ((None, 0), (1, 1), NOT_MEASURED),
        ((0, 0), (1, None), NOT_MEASURED),
    ],
)
def test_warmup_not_boundary(shift: tuple, spread: tuple, verdict: str) -> None:
    claim = warmup_not_boundary(_control(shift, spread))
    assert claim.id == WARMUP.id and claim.verdict == verdict


def test_warmup_numbers_and_missing_control() -> None:
    claim = warmup_not_boundary(_control((1, -3), (2, 1)))
    assert claim.number == -3 and claim.control == 2  # largest shift by size, largest range
    assert "warm-up 20 -> 100 steps" in claim.number_text and "step 8 -> 32" in claim.number_text
    assert claim.why == "follows the warm-up: neither curve"
    assert warmup_not_boundary(_control((2, 0), (0, 0))).why == "follows the warm-up: ['drift']"
    assert warmup_not_boundary(Results({"seeds": {"warmup_control": None}})).verdict == NOT_MEASURED


def _patterns(per_threshold: dict[str, dict[str, int]], interrupted: int | None = 7) -> Results:
    sensitivity = {t: {"patterns": p} for t, p in per_threshold.items()}
    return Results({"formation": {"pattern_sensitivity": sensitivity, "interrupted": {"count": interrupted}}})


def _counts(m: int, s: int, g: int) -> dict[str, int]:
    """Pattern counts over 100 live features (the rest 'other' and 'interrupted')."""
    return {"maintaining": m, "shifting": s, "grouping": g, "other": 90 - m - s - g, "interrupted": 10}


@pytest.mark.parametrize(
    ("low", "default", "verdict"),
    [
        ((1, 40, 20), (5, 50, 20), HOLDS),  # one of 100 live features (interrupted ones included): exactly 1%
        ((0, 40, 20), (5, 50, 20), INCONCLUSIVE),  # absent at 0.4 only
        ((5, 40, 20), (5, 50, 0), FAILS),  # absent at 0.5
    ],
)
def test_patterns_exist(low: tuple[int, int, int], default: tuple[int, int, int], verdict: str) -> None:
    claim = patterns_exist(_patterns({"0.4": _counts(*low), "0.5": _counts(*default), "0.6": _counts(5, 50, 20)}))
    assert claim.id == PATTERNS.id and claim.verdict == verdict
    assert claim.number == pytest.approx(min(*low, *default, 5, 50, 20) / 100)
    assert claim.control == 7 and "interrupted identities, counted apart: 7" in claim.control_text
    assert claim.number_text == "shares at 0.5: " + ", ".join(
        f"{p} {c}%" for p, c in zip(("maintaining", "shifting", "grouping"), default, strict=True)
    )


def test_patterns_exist_not_measured() -> None:
    counts = _counts(5, 50, 20)
    assert patterns_exist(_patterns({"0.4": counts, "0.5": counts})).verdict == NOT_MEASURED  # a threshold missing
    empty = {"maintaining": 0, "shifting": 0, "grouping": 0}
    assert patterns_exist(_patterns({"0.4": counts, "0.5": empty, "0.6": counts})).verdict == NOT_MEASURED
    assert patterns_exist(Results({})).verdict == NOT_MEASURED
    claim = patterns_exist(_patterns({"0.4": counts, "0.5": counts, "0.6": counts}, interrupted=None))
    assert claim.verdict == HOLDS and claim.control is None


def _subs(at_04: int, at_06: int, extra: dict[str, tuple[int, int, int]] | None = None) -> Results:
    """Sub-pattern counts: 'shifting: token->token' is 100 of 200 live at 0.5, ``at_04`` / ``at_06`` at 0.4 / 0.6."""
    subs = {t: {"shifting: token->token": n, "maintaining: token->same token": 100} for t, n in
            (("0.4", at_04), ("0.5", 100), ("0.6", at_06))}  # fmt: skip
    for name, counts in (extra or {}).items():
        for t, n in zip(("0.4", "0.5", "0.6"), counts, strict=True):
            subs[t][name] = n
    return Results({"formation": {"pattern_sensitivity": {t: {"sub_patterns": s} for t, s in subs.items()}}})


@pytest.mark.parametrize(
    ("at_04", "at_06", "verdict", "factor"),
    [
        (100, 100, HOLDS, 1.0),
        (150, 100, HOLDS, 1.5),  # at the threshold
        (100, 66, INCONCLUSIVE, 100 / 66),
        (200, 100, INCONCLUSIVE, 2.0),  # "more than a factor 2" fails: exactly 2 does not
        (100, 49, FAILS, 100 / 49),
        (100, 0, FAILS, 100.0),  # vanished: its count against one
    ],
)
def test_patterns_robust(at_04: int, at_06: int, verdict: str, factor: float) -> None:
    claim = patterns_robust(_subs(at_04, at_06))
    assert claim.id == PATTERNS_ROBUST.id and claim.verdict == verdict
    assert claim.number == pytest.approx(factor)
    if factor > 1:
        assert f"shifting: token->token: {at_04}/100/{at_06} at 0.4/0.5/0.6" in claim.number_text


def test_patterns_robust_reads_only_large_non_other_sub_patterns() -> None:
    # 'other' and sub-patterns under 5% of the live features at 0.5 may swing freely
    small = {"grouping: concept->concept": (1, 9, 90), "other: ->inactive": (1, 50, 200)}
    claim = patterns_robust(_subs(100, 100, small))
    assert claim.verdict == HOLDS and claim.number == 1.0  # 9 of 259 live is under 5%
    at_five = {"grouping: concept->concept": (1, 14, 14)}  # 14 of 214 live: over 5%, read
    assert patterns_robust(_subs(100, 100, at_five)).verdict == FAILS
    assert patterns_robust(Results({})).verdict == NOT_MEASURED
    empty = Results({"formation": {"pattern_sensitivity": {t: {"sub_patterns": {}} for t in ("0.4", "0.5", "0.6")}}})
    assert patterns_robust(empty).verdict == NOT_MEASURED
