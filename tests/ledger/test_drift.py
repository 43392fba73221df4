"""The paper's drift claims against the noise floor and the random-walk null, and "every size": every verdict, and
each rule at its thresholds."""

from __future__ import annotations

from typing import Any

import pytest

from saetrack.ledger.claim import FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED, Results
from saetrack.ledger.drift import (
    AFTER_FORMATION,
    DIRECTED,
    EVERY_SIZE,
    SETTLES,
    _settling,
    drift_continues_after_formation,
    drift_settles,
    every_size,
    trajectories_directed,
)


@pytest.mark.parametrize(
    ("flags", "shape"),
    [
        ([True, True, False, False], "settles"),
        ([True, False], "settles"),
        ([True, True, True], "never"),
        ([False, False], "alternates"),  # within the floor from the first checkpoint on: nothing settles into it
        ([True, False, True, False], "alternates"),
    ],
)
def test_settling_shape(flags: list[bool], shape: str) -> None:
    assert _settling(flags) == shape


def _floor(m0: float | None, flags: list[bool], steps: list[int] | None = None) -> Results:
    steps = steps if steps is not None else [100 * (i + 1) for i in range(len(flags))]
    per = [{"step": s, "beyond_noise": f} for s, f in zip(steps, flags, strict=True)]
    within = [s for s, f in zip(steps, flags, strict=True) if not f]
    last = max([s for s, f in zip(steps, flags, strict=True) if f], default=None)
    noise = {"per_checkpoint": per, "steps_within_noise": within, "last_checkpoint_beyond_noise": last}
    return Results({"drift": {"median_cosine_to_final": {"first": {"step": 0, "value": m0}}, "noise_floor": noise}})


@pytest.mark.parametrize(
    ("m0", "flags", "verdict"),
    [
        (0.2, [True, True, False, False], HOLDS),
        (0.5, [True, False, False], HOLDS),  # m0 at the threshold
        (0.6, [True, False, False], INCONCLUSIVE),
        (0.8, [True, False, False], INCONCLUSIVE),  # "m0 > 0.8" fails: 0.8 does not
        (0.2, [True, False, True, False], INCONCLUSIVE),  # alternates
        (0.2, [False, False, False], INCONCLUSIVE),
        (0.81, [True, False, False], FAILS),
        (0.2, [True, True, True], FAILS),  # never within the floor
    ],
)
def test_drift_settles(m0: float, flags: list[bool], verdict: str) -> None:
    claim = drift_settles(_floor(m0, flags))
    assert claim.id == SETTLES.id and claim.verdict == verdict and claim.number == m0


def test_drift_settles_numbers_and_missing_inputs() -> None:
    claim = drift_settles(_floor(0.2, [True, True, False, False]))
    assert claim.control == 300 and "last step beyond the floor: 200" in claim.number_text
    assert claim.why == "m0 0.20; the drift settles into the floor"
    never = drift_settles(_floor(0.2, [True, True]))
    assert never.control is None and "at steps none" in never.control_text
    assert drift_settles(_floor(None, [True, False])).verdict == NOT_MEASURED
    assert drift_settles(_floor(0.2, [])).verdict == NOT_MEASURED  # noise floor switched off
    assert drift_settles(Results({})).verdict == NOT_MEASURED


def _after(value: float | None, q05: float | None = 0.7, median: float | None = 0.9) -> Results:
    return Results({"drift": {
        "drift_after_formation": {"features": 1005, "median_cosine_at_formation": value},
        "noise_floor": {"q05_after_all_links": q05, "median_after_all_links": median, "links": 27},
    }})  # fmt: skip


@pytest.mark.parametrize(
    ("value", "verdict"),
    [(0.5, HOLDS), (0.699, HOLDS), (0.7, INCONCLUSIVE), (0.84, INCONCLUSIVE), (0.9, FAILS), (0.95, FAILS)],
)
def test_drift_continues_after_formation(value: float, verdict: str) -> None:
    claim = drift_continues_after_formation(_after(value))
    assert claim.id == AFTER_FORMATION.id and claim.verdict == verdict
    assert (claim.number, claim.control) == (value, 0.7)
    assert "1,005 features" in claim.number_text and "after 27 links" in claim.control_text


@pytest.mark.parametrize("results", [_after(None), _after(0.5, q05=None), _after(0.5, median=None), Results({})])
def test_drift_continues_after_formation_not_measured(results: Results) -> None:
    assert drift_continues_after_formation(results).verdict == NOT_MEASURED


def _trajectories(share: float, n: int = 12) -> Results:
    t = {"trajectories": n, "share_straightness_beyond_null_q95": share, "median_straightness": 0.6,
         "median_pc1": 0.8, "null_median_straightness": 0.2, "null_median_pc1": 0.5}  # fmt: skip
    return Results({"drift": {"trajectories": t}})


@pytest.mark.parametrize(
    ("share", "verdict"), [(1.0, HOLDS), (0.5, HOLDS), (0.49, INCONCLUSIVE), (0.11, INCONCLUSIVE), (0.1, FAILS)]
)
def test_trajectories_directed(share: float, verdict: str) -> None:
    claim = trajectories_directed(_trajectories(share))
    assert claim.id == DIRECTED.id and claim.verdict == verdict
    assert (claim.number, claim.control) == (share, 0.2)
    assert "of 12 trajectories" in claim.number_text and "PC1 80%" in claim.number_text
    assert "PC1 50%" in claim.control_text


def test_trajectories_directed_not_measured() -> None:
    assert trajectories_directed(Results({"drift": {"trajectories": {"trajectories": 0}}})).verdict == NOT_MEASURED
    assert trajectories_directed(Results({"drift": {"trajectories": None}})).verdict == NOT_MEASURED
    assert trajectories_directed(Results({})).verdict == NOT_MEASURED


def _size(preset: str, m0: float, concept: tuple[float | None, float | None] | None) -> dict[str, Any]:
    size: dict[str, Any] = {"preset": preset, "drift": {"median_cosine_to_final": {"first": {"value": m0}}}}
    if concept is not None:
        size["normalised_progress"] = {"concept": {"first": concept[0], "final": concept[1]}}
    return size


READS, FLAT, HIGH = (0.3, (0.1, 0.4)), (0.3, (0.4, 0.4)), (0.6, (0.1, 0.4))


@pytest.mark.parametrize(
    ("sizes", "verdict", "shown"),
    [
        ([READS, READS, READS], HOLDS, 3),
        ([(0.5, (0.1, 0.4)), READS], HOLDS, 2),  # m0 at the threshold
        ([HIGH, READS, READS], INCONCLUSIVE, 2),
        ([FLAT, READS, READS], INCONCLUSIVE, 2),  # concept-level coherence does not rise
        ([HIGH, FLAT, READS], FAILS, 1),
        ([(0.3, (None, 0.4)), (0.3, None), READS], FAILS, 1),  # a size without the normalised measure reads as failing
    ],
)
def test_every_size(sizes: list[tuple], verdict: str, shown: int) -> None:
    results = Results({"scale": {"sizes": [_size(f"s{i}", *s) for i, s in enumerate(sizes)]}})
    claim = every_size(results)
    assert claim.id == EVERY_SIZE.id and claim.verdict == verdict
    assert claim.number == shown and claim.number_text == f"{shown} of {len(sizes)} sizes show both readings"
    failing = [f"s{i}" for i, s in enumerate(sizes) if s not in (READS, (0.5, (0.1, 0.4)))]
    assert claim.why == f"failing: {failing or 'none'}"


def test_every_size_not_measured() -> None:
    assert every_size(Results({"scale": {"sizes": []}})).verdict == NOT_MEASURED
    assert every_size(Results({})).verdict == NOT_MEASURED
