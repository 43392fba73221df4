"""The ledger's building blocks: a claim's record, read access to results, number formatting, the three-way rule."""

from __future__ import annotations

import json

import numpy as np
import pytest

from saetrack.ledger.claim import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    NOT_MEASURED,
    VERDICTS,
    Claim,
    Results,
    Spec,
    fmt,
    three_way,
)

SPEC = Spec("T1", "a test", "Something holds", ("chain", "drift"), "holds if x >= 1; does not hold if x < 0", ("06a",))


def test_verdicts_are_the_four_named_ones() -> None:
    assert VERDICTS == (HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURED)
    assert (HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURED) == ("holds", "does not hold", "inconclusive", "not measured")


@pytest.mark.parametrize(
    ("holds", "fails", "verdict"),
    [(True, False, HOLDS), (False, True, FAILS), (True, True, FAILS), (False, False, INCONCLUSIVE)],
)
def test_three_way_checks_the_failing_condition_first(holds: bool, fails: bool, verdict: str) -> None:
    assert three_way(holds, fails) == verdict


def test_spec_claim_is_json_ready_with_plain_floats() -> None:
    claim = SPEC.claim(np.float32(0.5), "half", np.int64(3), "three probes", HOLDS, "0.50 >= ...")
    assert type(claim.number) is float and type(claim.control) is float  # numpy scalars become plain floats
    assert (claim.number, claim.control) == (0.5, 3.0)
    record = claim.record()
    assert record == {
        "id": "T1",
        "source": "a test",
        "statement": "Something holds",
        "sections": ["chain", "drift"],
        "number": 0.5,
        "number_text": "half",
        "control": 3.0,
        "control_text": "three probes",
        "rule": SPEC.rule,
        "verdict": HOLDS,
        "why": "0.50 >= ...",
        "figures": ["06a"],
    }
    assert json.loads(json.dumps(record, allow_nan=False)) == record


def test_spec_missing_is_not_measured_without_numbers() -> None:
    claim = SPEC.missing("no study in this run")
    assert claim.verdict == NOT_MEASURED and claim.why == "no study in this run"
    assert (claim.number, claim.control, claim.number_text, claim.control_text) == (None, None, "", "")
    assert claim.rule == SPEC.rule and claim.sections == ("chain", "drift") and claim.figures == ("06a",)
    assert json.loads(json.dumps(claim.record()))["number"] is None


def test_claim_refuses_an_unknown_verdict() -> None:
    with pytest.raises(ValueError, match="verdict 'maybe'"):
        SPEC.claim(1.0, "", None, "", "maybe", "")
    with pytest.raises(ValueError, match="claim T1"):
        Claim("T1", "", "", (), None, "", None, "", "", "holds mostly", "")


def test_results_follow_keys_and_list_indices_and_answer_none_where_missing() -> None:
    r = Results({"drift": {"per": [{"step": 0}, {"step": 8}], "text": "abc", "n": None}, "by_int": {3: "three"}})
    assert r.get("drift", "per", 1, "step") == 8
    assert r.get("drift", "per", -1, "step") == 8 and r.get("drift", "per", -2, "step") == 0
    assert r.get("drift", "per", 2) is None and r.get("drift", "per", -3) is None  # out of range
    assert r.get("drift", "per", "0") is None  # a list takes int indices only
    assert r.get("drift", "text", 0) is None  # a string is not indexed
    assert r.get("drift", "n") is None and r.get("drift", "n", "deeper") is None
    assert r.get("chain") is None and r.get("chain", "links", 0) is None
    assert r.get("by_int", 3) == "three"
    assert r.get() == r.data
    assert r.has("drift") and r.has("drift", "by_int") and not r.has("drift", "chain") and r.has()


def test_fmt_prints_numbers_as_the_readme_does() -> None:
    assert fmt(None) == "n/a"
    assert fmt(True) == "True" and fmt(False) == "False"  # bools are not integers here
    assert fmt(1234567) == "1,234,567" and fmt(0) == "0"
    assert fmt(0.256) == "0.26" and fmt(0.256, 3) == "0.256" and fmt(-1.0) == "-1.00"
    assert fmt(np.float64(0.5)) == "0.50"
