"""The plan of a spread job (``saetrack run --spread``, :mod:`saetrack.pipeline.spread`) over N ranks.

Each unit (:func:`~saetrack.pipeline.units.spread_units`) is costed from its own run's plan
(:func:`~saetrack.planning.plan_run`, one process): ``inputs`` the cache stage's lines, ``chain``, ``baselines``
and ``seed_control`` the chain stage's lines of those names, ``noise_floor`` the drift line's noise floor
(:func:`~saetrack.planning.drift.noise_floor_cost`), ``formation`` its line, ``drift`` the drift line less the noise
floor and the density study (which notebook 04 runs on rank 0), ``crosscoder`` the crosscoder line (its aligned
activations and the training of it and its controls), a seed variant its whole pipeline (notebooks 01-04). The units
are then dealt out as the job deals them: whenever a rank is free it takes the first unit, in the job's order, whose
inputs are done; a rank with nothing ready waits for the next unit to finish. The wall time is when the last unit is
done; what no unit computes (the convergence probes, the matchings, the density study, the crosscoder's evaluation
and the statistics, the explorer) then runs on rank 0 alone. Memory per rank is the largest unit's, since a rank
runs one unit at a time. Like every plan line, a projection from FLOPs at measured rates: a lower bound.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from saetrack.config.base import config_hash
from saetrack.config.run import RunConfig
from saetrack.pipeline.units import Unit, spread_units
from saetrack.planning import plan_run
from saetrack.planning.common import GB, PlanInputs, StagePlan, plan_inputs
from saetrack.planning.drift import density_cost, noise_floor_cost
from saetrack.rates import Rates

__all__ = ["SpreadPlan", "format_spread", "plan_spread", "schedule"]

#: The chain stage's plan line of each part that is one.
_LINE_OF = {"chain": "chain", "baselines": "baselines", "seed_control": "seed SAEs", "formation": "formation",
            "crosscoder": "crosscoder"}  # fmt: skip


@dataclass
class SpreadPlan:
    """A spread job's projection: each unit's seconds and peak memory, the ranks' units with start and end times."""

    seconds: dict[str, float]
    device: dict[str, int]
    host: dict[str, int]
    ranks: list[list[tuple[str, float, float]]] = field(default_factory=list)
    rest_on_rank0: float = 0.0

    @property
    def wall(self) -> float:
        """Seconds until every unit is done."""
        return max((end for rank in self.ranks for _, _, end in rank), default=0.0)


def _unit_cost(unit: Unit, lines: list[StagePlan], inputs: PlanInputs) -> tuple[float, int, int]:
    """``(seconds, device bytes, host bytes)`` of one unit from its run's plan ``lines`` and ``inputs`` (module
    doc)."""
    if unit.part == "inputs":
        mine = [line for line in lines if line.owner == "cache"]
    elif unit.part == "variant":
        mine = [line for line in lines if line.owner in ("cache", "chain", "formation", "drift")]
    elif unit.part in ("noise_floor", "drift"):
        noise, density = noise_floor_cost(inputs), density_cost(inputs)
        if unit.part == "noise_floor":
            return noise.seconds, noise.device, 0
        drift = next(line for line in lines if line.stage == "drift")
        rest = drift.seconds - noise.seconds - (density.seconds if density is not None else 0.0)
        return rest, 0, drift.host
    else:
        mine = [line for line in lines if line.stage == _LINE_OF[unit.part]]
    return (sum(line.seconds for line in mine), max((line.device for line in mine), default=0),
            max((line.host for line in mine), default=0))  # fmt: skip


def schedule(units: list[Unit], seconds: dict[str, float], n_ranks: int) -> list[list[tuple[str, float, float]]]:
    """Deal ``units`` over ``n_ranks`` as a spread job does (module doc): per rank, ``(unit, start, end)`` in order."""
    if n_ranks < 1:
        raise ValueError(f"a spread job needs at least one rank, not {n_ranks}.")
    free, finish = [0.0] * n_ranks, {}
    ranks: list[list[tuple[str, float, float]]] = [[] for _ in range(n_ranks)]
    pending = list(units)
    while pending:
        rank = min(range(n_ranks), key=lambda r: free[r])
        now = free[rank]
        ready = [u for u in pending if all(finish.get(a, float("inf")) <= now for a in u.after)]
        if not ready:
            later = [end for end in finish.values() if end > now]
            if not later:
                raise ValueError(f"units {[u.name for u in pending]} wait for units that are not in the job.")
            free[rank] = min(later)
            continue
        unit = ready[0]
        pending.remove(unit)
        finish[unit.name] = free[rank] = now + seconds[unit.name]
        ranks[rank].append((unit.name, now, free[rank]))
    return ranks


def plan_spread(run: RunConfig, rates: Rates, n_ranks: int, only: list[str] | None = None) -> SpreadPlan:
    """The projection of ``saetrack run --spread`` for ``run`` over ``n_ranks`` (module doc)."""
    units = spread_units(run, Path("."), only=only)
    plans: dict[str, tuple[list[StagePlan], PlanInputs]] = {}  # one plan per run, shared by its units
    costs = {}
    for unit in units:
        key = config_hash(unit.run.to_dict())
        if key not in plans:
            plans[key] = (plan_run(unit.run, rates), plan_inputs(unit.run, rates))
        costs[unit.name] = _unit_cost(unit, *plans[key])
    whole = [line for line in plan_run(run, rates) if not only or line.owner in only]
    plan = SpreadPlan({n: c[0] for n, c in costs.items()}, {n: c[1] for n, c in costs.items()},
                      {n: c[2] for n, c in costs.items()})  # fmt: skip
    plan.ranks = schedule(units, plan.seconds, n_ranks)
    own = sum(plan.seconds[u.name] for u in units if u.part != "variant" and u.run.preset.split("/")[0] == run.preset)
    plan.rest_on_rank0 = max(sum(line.seconds for line in whole if line.owner != "scale") - own, 0.0)
    return plan


def format_spread(plan: SpreadPlan, n_ranks: int, human_time: Callable[[float], str]) -> str:
    """The spread projection as lines: the wall time, the work, the ranks' busy share, memory per rank, each rank's
    units; ``human_time`` formats seconds (:func:`saetrack.resources.human_time`)."""
    work = sum(plan.seconds.values())
    busy = work / (plan.wall * n_ranks) if plan.wall else 0.0
    lines = [
        f"spread over {n_ranks} ranks (--spread): {len(plan.seconds)} units, {human_time(work)} of work; every unit "
        f"done after {human_time(plan.wall)} (ranks busy {busy:.0%}), then {human_time(plan.rest_on_rank0)} on rank 0 "
        "alone (probes, matchings, density study, crosscoder evaluation, statistics, explorer)",
        f"per rank at most: device {max(plan.device.values(), default=0) / GB:.2f} GB, host "
        f"{max(plan.host.values(), default=0) / GB:.2f} GB (the largest unit; a rank runs one at a time)",
    ]
    for rank, taken in enumerate(plan.ranks):
        lines.append(f"  rank {rank}: " + (", ".join(name for name, _, _ in taken) or "nothing"))
    return "\n".join(lines)
