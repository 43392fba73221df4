"""Independent work spread over the ranks of a job: ``torchrun --nproc-per-node N run_all.py --spread ...``.

Where the data-parallel job (:mod:`saetrack.pipeline.ranked`) trains each link on all ranks at once, a spread job
gives each rank whole units: the layers' chains, the baselines, the seed control, the noise floor, formation and
drift per layer, the scale study's other sizes and the seed variants (:func:`~saetrack.pipeline.units.spread_units`,
read from the pipeline's shape). Every rank runs :func:`run_spread` alike: it takes the first unit whose inputs are
done and that no live rank holds (a claim on the shared file system, :class:`~saetrack.distributed.claims.Claims`),
computes it on its own device with no collective, records it done, and takes the next, until every unit is done.
Then rank 0 runs the notebooks, which find the computations current and draw.

No process group is needed: the ranks share the run directory only, so they may be started by ``torchrun``, by
``srun`` (``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` set per task) or by hand. A rank killed mid-unit leaves its
claim; restarted on the same host it takes the unit back at once (its old process is gone), and on another host the
claim is broken once its heartbeat is ``stale_after_s`` old. The unit's work resumes from its finished parts (a
chain from its first unfinished link), so only unfinished work is redone. A unit is done for one config: changing the
config makes its units due again (each still skips what is current).

The trade against data parallelism: units are exact single-process computations (the same bytes as a one-process
run), and several layers' streamed chains on different ranks each run their own forwards instead of sharing one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from saetrack.config.run import RunConfig
from saetrack.distributed.claims import STALE_AFTER_S, Claims, Holder
from saetrack.distributed.ranks import Ranks
from saetrack.pipeline.units import Unit, spread_units

__all__ = ["POLL_S", "SPREAD_DIR", "WAIT_SAY_EVERY_S", "run_spread"]

#: The run directory's folder of a spread job's claims and done records.
SPREAD_DIR = "spread"
#: Seconds between looks for a unit to take while the others' units run.
POLL_S = 2.0
#: A waiting rank says what it waits for at most this often.
WAIT_SAY_EVERY_S = 60.0


def _waiting_line(ranks: Ranks, claims: Claims, pending: list[Unit], done: set[str]) -> str:
    """What a rank with nothing to take waits for: the units others hold (rank, host, heartbeat age)."""
    held = []
    for unit in pending:
        record = claims.holder_of(unit.name)
        if record is not None:
            held.append(f"{unit.name} (rank {record.get('rank')} on {record.get('host')}, "
                        f"heartbeat {record['age_s']:.0f} s ago)")  # fmt: skip
    waiting = ", ".join(held) or ", ".join(u.name for u in pending if not set(u.after) <= done)
    return f"[spread] rank {ranks.rank}: {len(done)} units done, waiting for {waiting}"


def _take(units: list[Unit], done: set[str], claims: Claims) -> Unit | None:
    """The first unit not done whose inputs are done and which this rank could claim."""
    for unit in units:
        if unit.name not in done and set(unit.after) <= done and claims.try_claim(unit.name):
            if claims.is_done(unit.name, unit.key):  # finished by another rank between our look and our claim
                claims.release(unit.name)
                done.add(unit.name)
                continue
            return unit
    return None


def run_spread(
    run: RunConfig,
    run_dir: Path,
    ranks: Ranks,
    *,
    device: str,
    only: Sequence[str] | None = None,
    skip: Sequence[str] = (),
    log: Callable[[str], None] = print,
    progress: bool = False,
    poll_s: float = POLL_S,
    stale_after_s: float = STALE_AFTER_S,
    after_unit: Callable[[Unit], None] | None = None,
) -> dict[str, Any]:
    """Compute every unit of ``run`` (:func:`~saetrack.pipeline.units.spread_units` for ``only`` / ``skip``) together
    with the other ranks (module doc); return ``{"units", "mine": [(name, seconds)], "seconds"}`` once all are done.

    A unit that fails gives its claim back and the error propagates (a restarted job takes the unit again, resuming).
    ``after_unit`` is called after each unit this rank finished (tests kill a rank there)."""
    started = time.perf_counter()
    units = spread_units(run, run_dir, only=only, skip=skip)
    claims = Claims(Path(run_dir) / SPREAD_DIR, Holder.here(ranks.rank), stale_after_s=stale_after_s)
    done = {u.name for u in units if claims.is_done(u.name, u.key)}
    log(f"[spread] rank {ranks.rank} of {ranks.world_size}: {len(units)} units, {len(done)} already done")
    mine: list[tuple[str, float]] = []
    said = time.monotonic()
    while len(done) < len(units):
        unit = _take(units, done, claims)
        if unit is None:
            time.sleep(poll_s)
            done |= {u.name for u in units if u.name not in done and claims.is_done(u.name, u.key)}
            if time.monotonic() - said >= WAIT_SAY_EVERY_S and len(done) < len(units):
                log(_waiting_line(ranks, claims, [u for u in units if u.name not in done], done))
                said = time.monotonic()
            continue
        log(f"[spread] rank {ranks.rank}: {unit.name} ({unit.run.preset} in {unit.run_dir}) ...")
        began = time.perf_counter()
        try:
            with claims.heartbeat(unit.name):
                unit(device, progress)
        except BaseException:
            claims.release(unit.name)
            raise
        seconds = time.perf_counter() - began
        claims.mark_done(unit.name, unit.key, seconds=round(seconds, 1))
        claims.release(unit.name)
        done.add(unit.name)
        mine.append((unit.name, seconds))
        log(f"[spread] rank {ranks.rank}: {unit.name} done in {seconds:.1f} s ({len(done)}/{len(units)})")
        if after_unit is not None:
            after_unit(unit)
    seconds = time.perf_counter() - started
    log(f"[spread] rank {ranks.rank}: all {len(units)} units done ({len(mine)} here) after {seconds:.1f} s")
    return {"units": len(units), "mine": mine, "seconds": seconds}
