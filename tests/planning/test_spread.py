"""The plan of a spread job: units dealt over ranks as the job deals them, on known answers; the units' costs and
what stays on rank 0 add up to the one-process plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from saetrack.config import get_preset
from saetrack.pipeline.units import Unit
from saetrack.planning import plan_run
from saetrack.planning.spread import plan_spread, schedule
from tests.planning.conftest import RATES


def _unit(name: str, *after: str) -> Unit:
    return Unit(name, name, get_preset("smoke"), Path("."), after, lambda *a, **k: None)


def test_the_first_ready_unit_goes_to_the_first_free_rank() -> None:
    units = [_unit("a"), _unit("b", "a"), _unit("c"), _unit("d", "b")]
    seconds = {"a": 2.0, "b": 1.0, "c": 3.0, "d": 1.0}
    assert schedule(units, seconds, 2) == [[("a", 0.0, 2.0), ("b", 2.0, 3.0), ("d", 3.0, 4.0)], [("c", 0.0, 3.0)]]
    assert schedule(units, seconds, 1) == [[("a", 0.0, 2.0), ("b", 2.0, 3.0), ("c", 3.0, 6.0), ("d", 6.0, 7.0)]]
    # a rank with nothing ready waits for the next unit to finish
    waiting = [u for rank in schedule([_unit("a"), _unit("b", "a")], {"a": 5.0, "b": 1.0}, 2) for u in rank]
    assert sorted(waiting) == [("a", 0.0, 5.0), ("b", 5.0, 6.0)]
    with pytest.raises(ValueError, match="at least one rank"):
        schedule(units, seconds, 0)


def test_units_and_rank_0s_rest_add_up_to_the_one_process_plan() -> None:
    run = get_preset("nano").with_overrides({"cache.layers": [1, 3]})
    one = sum(line.seconds for line in plan_run(run, RATES) if line.owner != "scale")
    for ranks in (1, 2, 4):
        plan = plan_spread(run, RATES, ranks)
        work = sum(plan.seconds.values())
        assert work + plan.rest_on_rank0 == pytest.approx(one, rel=1e-9)
        assert max(plan.seconds.values()) <= plan.wall <= work + 1e-9
        assert plan.wall >= work / ranks - 1e-9
        assert sorted(n for rank in plan.ranks for n, _, _ in rank) == sorted(plan.seconds)
    assert plan_spread(run, RATES, 1).wall == pytest.approx(sum(plan_spread(run, RATES, 1).seconds.values()))


def test_the_crosscoder_unit_costs_the_crosscoder_line() -> None:
    run = get_preset("nano")
    plan = plan_spread(run, RATES, 2, only=["cache", "crosscoder"])
    line = next(line for line in plan_run(run, RATES) if line.stage == "crosscoder")
    assert set(plan.seconds) == {"inputs", "crosscoder"}
    assert plan.seconds["crosscoder"] == pytest.approx(line.seconds) and plan.device["crosscoder"] == line.device
    assert [name for rank in plan.ranks for name, _, _ in rank] == ["inputs", "crosscoder"]  # it waits for inputs
