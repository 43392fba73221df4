"""Whether a run's resource plan fits this machine, and the plan as a table.

The plan itself (what every stage will process and need) is made by :mod:`saetrack.planning` from the config and
the rates measured on this machine (:func:`saetrack.rates.measure_rates`). Here: the machine's limits
(:func:`machine_limits`), the check that refuses a run that does not fit (:func:`check_fits`:
:class:`ResourceError`, one message with the numbers; ``saetrack run --ignore-resources`` goes on anyway) and the
table ``saetrack run --plan`` prints (:func:`format_plan`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from saetrack.config.run import RunConfig
from saetrack.planning import StagePlan, plan_run, planned_for
from saetrack.planning.common import GB, ResourceError
from saetrack.planning.crosscoder import crosscoder_cache_bytes
from saetrack.rates import Rates, measure_rates

__all__ = [
    "Rates",
    "ResourceError",
    "StagePlan",
    "check_fits",
    "crosscoder_cache_bytes",
    "format_plan",
    "human_time",
    "machine_limits",
    "measure_rates",
    "plan_run",
    "planned_for",
]

#: A run projected longer than this on a CPU is told that its preset is meant for a GPU.
CPU_DAY_S = 24 * 3600.0


def machine_limits(run_dir: Path, device: str) -> dict[str, int]:
    """Free disk at ``run_dir``, physical host memory and (CUDA) device memory, in bytes."""
    folder = Path(run_dir)
    while not folder.exists():
        folder = folder.parent
    limits = {
        "disk": shutil.disk_usage(folder).free,
        "host": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        limits["device"] = torch.cuda.get_device_properties(torch.device(device)).total_memory
    return limits


def check_fits(stages: list[StagePlan], limits: dict[str, int]) -> None:
    """Raise :class:`ResourceError` naming every stage and resource whose need exceeds the machine's ``limits``."""
    total_disk = sum(s.disk for s in stages)
    problems = []
    if total_disk > 0.9 * limits["disk"]:
        problems.append(f"disk: the run needs {total_disk / GB:,.1f} GB, {limits['disk'] / GB:,.1f} GB are free")
    for s in stages:
        for key in ("host", "device"):
            need = getattr(s, key)
            if key in limits and need > 0.9 * limits[key]:
                problems.append(
                    f"{s.stage}: needs {need / GB:,.1f} GB of {key} memory, the machine has {limits[key] / GB:,.1f} GB"
                )
    if problems:
        raise ResourceError(
            "the run does not fit this machine: " + "; ".join(problems) + ". Lower the budgets (--set), use a "
            "bigger machine, or pass --ignore-resources to go on anyway."
        )


def human_time(seconds: float) -> str:
    """A duration as a reader takes it in: seconds under 2 min, minutes under 2 h, then hours."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _hooks(run: RunConfig) -> str:
    """``hook blocks.2.hook_resid_pre``, or for several layers ``hooks blocks.{1,3}.hook_resid_pre (one run each)``."""
    if not run.cache.layers:
        return f"hook {run.cache.hook_name}"
    layers = ",".join(str(layer) for layer in run.cache.layers)
    return f"hooks blocks.{{{layers}}}.hook_{run.cache.hook}, one run per layer in layer<l>/"


def format_plan(run: RunConfig, stages: list[StagePlan], rates: Rates, limits: dict[str, int], ranks: int = 1) -> str:
    """The plan as a table: one line per stage, totals, the machine's limits and where the rates come from; for a
    torchrun job of ``ranks`` ranks, memory per rank and the wall time of the job."""
    job = (
        f" over {ranks} ranks (memory per rank; chain, baselines and crosscoders data-parallel, the rest on rank 0)"
        if ranks > 1
        else ""
    )
    lines = [
        f"resource plan of preset {run.preset} ({run.cache.mode} activations, {_hooks(run)}){job}",
        f"{'stage':<22} {'model fwd tokens':>17} {'SAE tokens':>14} {'disk GB':>9} {'host GB':>9} "
        f"{'device GB':>10} {'projected':>10}   (memory: peak of the stage)",
    ]
    for s in stages:
        lines.append(
            f"{s.stage:<22} {s.forward_tokens:>17,} {s.sae_tokens:>14,} {s.disk / GB:>9.2f} {s.host / GB:>9.2f} "
            f"{s.device / GB:>10.2f} {human_time(s.seconds):>10}"
        )
        lines += [f"{'':<22} - {note}" for note in s.notes]
    lines.append(
        f"{'total':<22} {sum(s.forward_tokens for s in stages):>17,} {sum(s.sae_tokens for s in stages):>14,} "
        f"{sum(s.disk for s in stages) / GB:>9.2f} {max(s.host for s in stages) / GB:>9.2f} "
        f"{max(s.device for s in stages) / GB:>10.2f} {human_time(sum(s.seconds for s in stages)):>10}"
    )
    have = ", ".join(f"{k} {v / GB:,.1f} GB" for k, v in limits.items())
    lines.append(f"this machine: {have}")
    try:
        check_fits(stages, limits)
        lines.append("the run fits this machine (every need under 90% of what it has)")
    except ResourceError as error:
        lines.append(str(error))
    total = sum(s.seconds for s in stages)
    if rates.device == "cpu" and total > CPU_DAY_S:
        lines.append(f"on this CPU the run projects {human_time(total)}: the preset is meant for a GPU "
                     "(run it with --device cuda on a machine that has one)")  # fmt: skip
    lines.append(
        f"rates measured now on {rates.device}: {rates.sae_flops / 1e9:,.0f} GFLOP/s at an SAE step's shape, "
        f"{rates.forward_flops / 1e9:,.0f} GFLOP/s at a forward's; times are FLOPs / rate (data movement and "
        "elementwise work left out)"
    )
    return "\n".join(lines)
