"""The ledger as a whole: every claim evaluated on a run's results, written into results.json, and reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from saetrack import paths
from saetrack.ledger import CLAIMS, LEDGER_SECTION, build, report, update
from saetrack.ledger.claim import FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED, VERDICTS
from saetrack.plots.common import FIGURES
from saetrack.results import read_results, update_results

COMMITTED = paths.REPO_ROOT / "figures" / "nano" / "results.json"


def test_every_claim_is_not_measured_on_empty_results() -> None:
    claims = build({})
    assert len(claims) == len(CLAIMS)
    assert {c.verdict for c in claims} == {NOT_MEASURED}
    assert all(c.number is None and c.control is None and c.why for c in claims)


def test_claim_ids_are_unique_and_every_spec_states_its_rule_sections_and_figures() -> None:
    claims = build({})
    ids = [c.id for c in claims]
    assert len(set(ids)) == len(ids)
    for c in claims:
        assert c.statement and c.source and c.sections, c.id
        assert "holds if" in c.rule and "does not hold if" in c.rule, c.id  # both conditions stated
        assert all(key in FIGURES for key in c.figures), f"{c.id}: figures {c.figures} not in the registry"


def test_the_committed_results_give_a_verdict_per_claim_without_an_error() -> None:
    committed = json.loads(COMMITTED.read_text())
    claims = build(committed)
    assert all(c.verdict in VERDICTS for c in claims)
    # the default run measures every claim, and the ledger it carries is the one its numbers give
    assert [c.id for c in claims if c.verdict == NOT_MEASURED] == []
    by_id = {c.id: c for c in claims}
    assert by_id["R5"].verdict == HOLDS  # mean index stability 0.9999
    records = [c.record() for c in claims]
    assert json.loads(json.dumps(records, allow_nan=False)) == records  # plain JSON: no NaN, no numpy
    assert committed[LEDGER_SECTION]["claims"] == records


def test_build_ignores_a_ledger_section_already_in_the_results() -> None:
    results = {"chain": {"mean_index_stability": 0.95}}
    with_ledger = {**results, LEDGER_SECTION: {"chain": {"mean_index_stability": 0.1}}}
    assert build(with_ledger) == build(results)


def _prepare(run_dir: Path) -> None:
    update_results(run_dir, "chain", {"mean_index_stability": 0.95})
    update_results(run_dir, "crosscoder", {"min_adjacent_median_cosine": 0.9})
    update_results(run_dir, "drift", {"trajectories": {
        "trajectories": 4, "share_straightness_beyond_null_q95": 0.25, "median_straightness": 0.5, "median_pc1": 0.7,
        "null_median_straightness": 0.3, "null_median_pc1": 0.6}})  # fmt: skip


def test_update_writes_the_ledger_section_into_results_json(tmp_path: Path) -> None:
    _prepare(tmp_path)
    claims = update(tmp_path)
    written = read_results(tmp_path)
    assert set(written) == {"chain", "crosscoder", "drift", LEDGER_SECTION}  # the other sections are kept
    ledger = written[LEDGER_SECTION]
    assert ledger["claims"] == [c.record() for c in claims]
    assert ledger["counts"] == {HOLDS: 1, FAILS: 1, INCONCLUSIVE: 1, NOT_MEASURED: len(CLAIMS) - 3}
    verdicts = {c["id"]: c["verdict"] for c in ledger["claims"]}
    assert (verdicts["R5"], verdicts["X7"], verdicts["P5c"]) == (HOLDS, FAILS, INCONCLUSIVE)
    assert update(tmp_path) == claims and read_results(tmp_path) == written  # again: the same ledger


def test_report_prints_the_claims_reading_the_named_sections(tmp_path: Path) -> None:
    _prepare(tmp_path)
    claims = update(tmp_path)
    everything = report(claims)
    assert everything.count("\n[") == len(CLAIMS) - 1 and everything.startswith("[P1] NOT MEASURED: ")
    text = report(claims, "crosscoder")
    blocks = ("\n" + text).split("\n[")[1:]
    by_id = {c.id: c for c in claims}
    assert all("crosscoder" in by_id[block.split("]")[0]].sections for block in blocks)
    x7 = next(block for block in blocks if block.startswith("X7]"))
    assert x7.splitlines() == [
        "X7] DOES NOT HOLD: Features turn sharply at one point of training (Ge et al. 2025: directional turning point)",
        "    measured: median adjacent cosine 0.90 into step None",
        "    control:  the chain's Emergent phase starts at step None",
        f"    rule:     {next(c.rule for c in claims if c.id == 'X7')}",
        "    here:     0.90",
    ]
    missing = next(block for block in blocks if block.startswith("X1]"))
    assert "measured:" not in missing and "control:" not in missing  # nothing measured: no number lines
    assert report(claims, "no such section") == "(no claim reads these sections)"
    assert report(claims, "scale", "seeds") == report([c for c in claims if {"scale", "seeds"} & set(c.sections)])


@pytest.mark.parametrize("section", ["chain", "drift", "formation", "crosscoder", "seeds", "scale"])
def test_every_results_section_is_read_by_some_claim(section: str) -> None:
    assert report(build({}), section) != "(no claim reads these sections)"
