"""Shared fixed rates for the plan tests (a plan never measures anything here)."""

from __future__ import annotations

from saetrack.config import get_preset
from saetrack.planning import StagePlan, plan_run
from saetrack.rates import Rates

RATES = Rates("cpu", sae_flops=1e11, forward_flops=1e11)


def by_line(preset: str, rates: Rates = RATES, **overrides: object) -> dict[str, StagePlan]:
    """The plan lines of ``preset`` (with ``overrides``) by name."""
    run = get_preset(preset)
    if overrides:
        run = run.with_overrides(overrides)
    return {s.stage: s for s in plan_run(run, rates)}
