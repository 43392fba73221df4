"""The paper's formation claims against their controls: every verdict, and each rule at its thresholds."""

from __future__ import annotations

from typing import Any

import pytest

from saetrack.ledger.claim import FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED, Results
from saetrack.ledger.formation import (
    CONCEPT_FORMS,
    TOKEN_AT_INIT,
    WITHOUT_CHAIN,
    concept_features_form,
    formation_without_chain,
    token_features_at_initialisation,
)


def _tolerant(tolerant: float | None, strict: float | None = 0.1) -> Results:
    formation = {"tolerant": {"token_level_formed_at_first_share": tolerant},
                 "strict": {"token_level_formed_at_first_share": strict}}  # fmt: skip
    return Results({"drift": {"formation": formation}})


@pytest.mark.parametrize(
    ("tolerant", "verdict"),
    [(0.9, HOLDS), (0.5, HOLDS), (0.49, INCONCLUSIVE), (0.2, INCONCLUSIVE), (0.19, FAILS), (0.0, FAILS)],
)
def test_token_features_at_initialisation(tolerant: float, verdict: str) -> None:
    claim = token_features_at_initialisation(_tolerant(tolerant))
    assert claim.id == TOKEN_AT_INIT.id and claim.verdict == verdict
    assert claim.number == tolerant and claim.control == 0.1 and claim.control_text == "strict rule: 10%"


def test_token_features_at_initialisation_without_the_rules() -> None:
    claim = token_features_at_initialisation(_tolerant(0.6, strict=None))
    assert claim.verdict == HOLDS and claim.control is None and claim.control_text == "strict rule: n/a"
    assert token_features_at_initialisation(_tolerant(None)).verdict == NOT_MEASURED  # no token-level feature
    assert token_features_at_initialisation(Results({})).verdict == NOT_MEASURED


def _anchors(rise: tuple[float, float], fall: tuple[float, float], baseline: list[float] | None = None,
             middle: tuple[float, float] | None = (0.0, 0.0), n: int = 5) -> Results:  # fmt: skip
    """Anchor control with the raw median within-set similarity (first, final) of each anchor's concept sets."""
    anchors: dict[str, Any] = {"final": {"concept": {"n": n, "first": rise[0], "final": rise[1]}},
                               "first": {"concept": {"n": n, "first": fall[0], "final": fall[1]}}}  # fmt: skip
    if middle is not None:
        anchors["middle"] = {"concept": {"n": n, "first": middle[0], "final": middle[1]}}
    control = {"anchors": anchors, "baseline": baseline if baseline is not None else [0.0, 0.0, 0.0]}
    return Results({"formation": {"anchor_control": control}})


@pytest.mark.parametrize(
    ("rise", "fall", "verdict"),
    [
        ((0.0, 0.1), (0.05, 0.0), HOLDS),  # rise 0.1, decay rise / 2: both at their thresholds
        ((0.0, 0.4), (0.3, 0.25), HOLDS),
        ((0.0, 0.4), (0.3, 0.0), INCONCLUSIVE),  # decay 0.3: above half the rise, below the rise
        ((0.0, 0.07), (0.0, 0.0), INCONCLUSIVE),  # rise between 0.05 and 0.1
        ((0.0, 0.05), (0.0, 0.0), INCONCLUSIVE),  # rise exactly 0.05 does not fail
        ((0.0, 0.04), (0.0, 0.0), FAILS),
        ((0.0, 0.4), (0.4, 0.0), FAILS),  # decay == rise: a selection effect
        ((0.0, 0.4), (0.5, 0.0), FAILS),
    ],
)
def test_concept_features_form(rise: tuple[float, float], fall: tuple[float, float], verdict: str) -> None:
    claim = concept_features_form(_anchors(rise, fall))
    assert claim.id == CONCEPT_FORMS.id and claim.verdict == verdict
    assert claim.number == pytest.approx(rise[1] - rise[0]) and claim.control == pytest.approx(fall[0] - fall[1])


def test_concept_features_form_normalises_by_each_checkpoints_baseline() -> None:
    # (S - B) / (1 - B): first (0.6 - 0.5) / 0.5 = 0.2, final (0.6 - 0.2) / 0.8 = 0.5 -> rise 0.3 for unchanged S
    claim = concept_features_form(_anchors((0.6, 0.6), (0.6, 0.6), baseline=[0.5, 0.3, 0.2], middle=(0.6, 0.6)))
    assert claim.number == pytest.approx(0.3) and claim.control == pytest.approx(-0.3)
    assert claim.verdict == HOLDS and "first-to-final change 0.30" in claim.control_text
    assert "n/a" in concept_features_form(_anchors((0.0, 0.4), (0.0, 0.0), middle=None)).control_text


@pytest.mark.parametrize(
    "results",
    [
        Results({}),
        _anchors((0.0, 0.4), (0.0, 0.0), n=0),  # no concept-level feature at an anchor
        _anchors((0.0, 0.4), (0.0, 0.0), baseline=[]),
        _anchors((0.0, 0.4), (0.0, 0.0), baseline=[1.0, 0.5, 0.0]),  # a baseline of 1 normalises nothing
        _anchors((None, 0.4), (0.0, 0.0)),  # type: ignore[arg-type]
        Results({"formation": {"anchor_control": None}}),
    ],
)
def test_concept_features_form_not_measured(results: Results) -> None:
    assert concept_features_form(results).verdict == NOT_MEASURED


def _per_step(scratch: tuple[float, float], chain: tuple[float, float], dead: tuple | None = (0.0, 0.0),
              flat: tuple | None = None) -> Results:  # fmt: skip
    """Two baseline checkpoints: each SAE's concept-level median progress, the from-scratch SAEs' dead fractions."""
    key = "median_concept_activation_cosine"
    rows = []
    for i, step in enumerate((1, 2000)):
        row: dict[str, Any] = {"step": step, "baseline": {key: scratch[i]}, "chain": {key: chain[i]}}
        if dead is not None:
            row["baseline"]["dead_fraction"] = dead[i]
        if flat is not None:
            row["dead_fraction_scratch"] = flat[i]
        rows.append(row)
    return Results({"formation": {"baseline_control": {"per_step": rows}}})


@pytest.mark.parametrize(
    ("scratch", "dead", "verdict"),
    [
        ((0.25, 0.5), (0.0, 0.0), HOLDS),  # the same rise as the chain's 0.25
        ((0.25, 0.375), (0.2, 0.1), HOLDS),  # half the chain's rise, 20% dead: both at their thresholds
        ((0.25, 0.34375), (0.0, 0.0), INCONCLUSIVE),  # between a quarter and a half
        ((0.25, 0.3125), (0.0, 0.0), FAILS),  # a quarter of the chain's rise: at the threshold
        ((0.25, 0.25), (0.0, 0.0), FAILS),
        ((0.25, 0.5), (0.0, 0.25), INCONCLUSIVE),  # a from-scratch SAE over 20% dead: no verdict either way
        ((0.25, 0.25), (0.5, 0.0), INCONCLUSIVE),
        ((0.25, 0.5), None, INCONCLUSIVE),  # dead fractions not recorded
    ],
)
def test_formation_without_chain(scratch: tuple[float, float], dead: tuple | None, verdict: str) -> None:
    claim = formation_without_chain(_per_step(scratch, (0.25, 0.5), dead))
    assert claim.id == WITHOUT_CHAIN.id and claim.verdict == verdict
    assert claim.number == pytest.approx(scratch[1] - scratch[0]) and claim.control == pytest.approx(0.25)
    assert "(step 1 -> 2000)" in claim.number_text


def test_formation_without_chain_reads_the_flat_dead_fraction_first() -> None:
    flat_clean = _per_step((0.25, 0.5), (0.25, 0.5), dead=(0.9, 0.9), flat=(0.1, 0.2))
    assert formation_without_chain(flat_clean).verdict == HOLDS
    assert "most dead from-scratch SAE 20%" in formation_without_chain(flat_clean).control_text
    flat_dead = _per_step((0.25, 0.5), (0.25, 0.5), dead=(0.0, 0.0), flat=(0.3, 0.0))
    assert formation_without_chain(flat_dead).verdict == INCONCLUSIVE


def test_formation_without_chain_not_measured() -> None:
    assert formation_without_chain(Results({})).verdict == NOT_MEASURED
    one = Results({"formation": {"baseline_control": {"per_step": [{"step": 1, "baseline": {}, "chain": {}}]}}})
    assert formation_without_chain(one).verdict == NOT_MEASURED  # a single checkpoint has no rise
    rows = [
        {"step": s, "baseline": {"n_concept": 0}, "chain": {"median_concept_activation_cosine": 0.3}} for s in (1, 2)
    ]
    no_concept = Results({"formation": {"baseline_control": {"per_step": rows}}})
    claim = formation_without_chain(no_concept)
    assert claim.verdict == NOT_MEASURED and claim.why == "a compared SAE has no concept-level feature"
    rows = [{"step": s, "baseline": None, "chain": {"median_concept_activation_cosine": 0.3}} for s in (1, 2)]
    assert formation_without_chain(Results({"formation": {"baseline_control": {"per_step": rows}}})).verdict == (
        NOT_MEASURED
    )
