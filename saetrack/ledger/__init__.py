"""The claims ledger: every claim of the paper, of its reviewers and of the crosscoder paper, with its number, the
control that could break it and a verdict by a rule fixed before the run was looked at (issue 20).

:data:`CLAIMS` lists the claim functions in reading order; :func:`build` evaluates them on a run's results,
:func:`update` writes them into the run's ``results.json`` (section ``ledger``) and :func:`report` prints the entries
that read given sections - the notebooks print it instead of computing verdicts of their own. The README's
headline section and the figure index are generated from the ledger (:mod:`saetrack.ledger.render`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from saetrack.ledger import crosscoder, drift, formation, paper, reviews
from saetrack.ledger.claim import VERDICTS, Claim, Results
from saetrack.results import read_results, update_results

__all__ = [
    "CLAIMS",
    "LEDGER_SECTION",
    "Claim",
    "build",
    "report",
    "update",
]


#: The section of results.json holding the ledger.
LEDGER_SECTION = "ledger"

#: Every claim, in the order the README reads them: the paper's (Sec. 1's contributions), the reviewers', the data
#: order, the crosscoder paper's.
CLAIMS: tuple[Callable[[Results], Claim], ...] = (
    paper.link_efficiency,
    paper.three_phases,
    paper.warmup_not_boundary,
    paper.patterns_exist,
    paper.patterns_robust,
    formation.token_features_at_initialisation,
    formation.concept_features_form,
    drift.drift_settles,
    drift.drift_continues_after_formation,
    drift.trajectories_directed,
    drift.every_size,
    reviews.phases_agree_across_perspectives,
    reviews.chain_matches_scratch_features,
    reviews.chain_quality,
    formation.formation_without_chain,
    reviews.index_stability,
    reviews.link_quality_smooth,
    reviews.feature_measures_smooth,
    crosscoder.emergence_informative,
    crosscoder.emergence_not_first_snapshot_artefact,
    crosscoder.emergence_robust_to_normalisation,
    crosscoder.emergence_agrees_with_formation,
    crosscoder.statistical_learning_first,
    crosscoder.beats_bigram_statistics,
    crosscoder.turning_point,
    crosscoder.same_features,
)


def build(results: Mapping[str, Any]) -> list[Claim]:
    """Every claim of :data:`CLAIMS` evaluated on a run's results (``results.json`` as a dict)."""
    data = Results({k: v for k, v in results.items() if k != LEDGER_SECTION})
    return [claim(data) for claim in CLAIMS]


def update(run_dir: Path) -> list[Claim]:
    """Evaluate the ledger on ``run_dir``'s results.json, write it there (section ``ledger``: the claims and a count
    per verdict) and return the claims."""
    claims = build(read_results(run_dir))
    counts = {v: sum(c.verdict == v for c in claims) for v in VERDICTS}
    update_results(run_dir, LEDGER_SECTION, {"claims": [c.record() for c in claims], "counts": counts})
    return claims


def report(claims: list[Claim], *sections: str) -> str:
    """The claims that read any of ``sections`` (all when none is named), one block each: verdict, claim, number,
    control, and the rule applied."""
    chosen = [c for c in claims if not sections or set(c.sections) & set(sections)]
    blocks = []
    for c in chosen:
        lines = [f"[{c.id}] {c.verdict.upper()}: {c.statement} ({c.source})"]
        if c.number_text:
            lines.append(f"    measured: {c.number_text}")
        if c.control_text:
            lines.append(f"    control:  {c.control_text}")
        lines.append(f"    rule:     {c.rule}")
        lines.append(f"    here:     {c.why}")
        blocks.append("\n".join(lines))
    return "\n".join(blocks) if blocks else "(no claim reads these sections)"
