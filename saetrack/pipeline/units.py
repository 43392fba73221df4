"""The independent units of a run's computations, read from the pipeline's shape: what a spread job deals out.

Every :data:`~saetrack.pipeline.shape.PARTS` entry of every run the job computes becomes one :class:`Unit`, named
``<prefix><part>`` and waiting for the units of the parts it reads:

* a single-layer run: its parts, unprefixed (``inputs``, ``chain``, ``baselines``, ``seed_control``, ``noise_floor``,
  ``formation``, ``drift``);
* a run of several layers (``cache.layers``): one shared ``inputs`` unit (corpus and model once, every layer's cache
  from one forward per checkpoint, :mod:`saetrack.pipeline.layers`), then each layer's other parts as
  ``layer{l}/<part>`` in its own folder;
* with the scale study selected (single-layer runs): each other size's parts as ``<size preset>/<part>`` in its run
  directory, and each seed variant of the seed study as one unit ``seeds/<name>`` (a headless run that first adopts
  the corpus and model of the run it shares them with, and waits for that run's inputs).

Only the parts of selected stages that apply to the run are units; a part whose inputs are not units (their stage not
selected) finds them on disk or fails as the stage would. A unit is done for one config: its key is the hash of its
run's config and its part.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import Any

from saetrack import paths
from saetrack.config.base import config_hash
from saetrack.config.run import RunConfig
from saetrack.pipeline import headless
from saetrack.pipeline.layers import layer_folders, prepare_layers
from saetrack.pipeline.parallel import SIZE_STAGES
from saetrack.pipeline.shape import PARTS, STAGES
from saetrack.stages.cache.layers import cache_layers
from saetrack.stages.scale import size_dir, size_runs, study_variants

__all__ = ["Unit", "selected_stages", "spread_units"]


@dataclass(frozen=True)
class Unit:
    """One unit of a spread job: its name, part, run and run directory, the units it waits for, and its work."""

    name: str
    part: str
    run: RunConfig
    run_dir: Path
    after: tuple[str, ...]
    #: Called as ``work(run, run_dir, device=..., progress=...)``.
    work: Callable[..., Any] = field(repr=False, compare=False)

    @cached_property
    def key(self) -> str:
        """The config this unit is done for: its run's config and its part."""
        return config_hash({"run": self.run.to_dict(), "part": self.part})

    def __call__(self, device: str, progress: bool) -> object:
        """Do the unit's work (skipping what is current, resuming what is not)."""
        return self.work(self.run, self.run_dir, device=device, progress=progress)


def _function(dotted: str) -> Callable[..., Any]:
    """The function ``"module:function"`` of a part."""
    module, name = dotted.split(":")
    return getattr(importlib.import_module(module), name)


def selected_stages(run: RunConfig, only: Sequence[str] | None, skip: Sequence[str]) -> list[str]:
    """The stages ``only`` (all when empty) and ``skip`` select that are on for ``run``."""
    return [s.name for s in STAGES if (not only or s.name in only) and s.name not in skip and s.enabled(run)]


def _run_units(
    run: RunConfig, run_dir: Path, prefix: str, stages: Sequence[str], shared_inputs: str | None = None
) -> list[Unit]:
    """The units of one run's parts in ``stages`` (``shared_inputs``: the unit that builds its inputs instead)."""
    units: list[Unit] = []
    names = {"inputs": shared_inputs} if shared_inputs else {}
    for part in PARTS:
        if part.stage not in stages or not part.applies(run) or (shared_inputs and part.name == "inputs"):
            continue
        after = tuple(names[i] for i in (*part.inputs, *part.reads_also(run)) if i in names)
        units.append(Unit(prefix + part.name, part.name, run, Path(run_dir), after, _function(part.function)))
        names[part.name] = prefix + part.name
    return units


def _layers_inputs(run: RunConfig, run_dir: Path, *, device: str, progress: bool) -> None:
    """The shared inputs of a run of several layers: corpus and model once, every layer's cache from one forward."""
    prepare_layers(run, run_dir, progress=progress)
    cache_layers(run, run_dir, device=device, progress=progress)


def _variant(lenders: list[Path], run: RunConfig, run_dir: Path, *, device: str, progress: bool) -> float:
    """A seed variant: adopt a lender's corpus and model, then its headless run (notebooks 01-04's computations)."""
    headless.adopt(run, run_dir, lenders)
    return headless.run_headless(run, run_dir, device=device, progress=progress)


def _scale_units(run: RunConfig, run_dir: Path) -> list[Unit]:
    """The other sizes' parts and the seed variants of ``run``'s scale study (module doc)."""
    units: list[Unit] = []
    for size in size_runs(run):
        if size.preset != run.preset:
            units += _run_units(size, size_dir(size, run, run_dir), f"{size.preset}/", SIZE_STAGES)
    variants = study_variants(run, run_dir)
    by_name = {v.name: v for v in variants}
    for v in [v for v in variants if not v.shared]:
        owner = by_name.get(v.model)
        lenders = [o.folder for o in variants if o.shared] + ([owner.folder] if owner and owner is not v else [])
        after: tuple[str, ...] = ()
        if owner is not None and owner is not v:
            inputs = "inputs" if owner.run.preset == run.preset else f"{owner.run.preset}/inputs"
            after = (inputs if owner.shared else f"seeds/{owner.name}",)
        units.append(Unit(f"seeds/{v.name}", "variant", v.run, v.folder, after, partial(_variant, lenders)))
    return units


def spread_units(
    run: RunConfig, run_dir: Path, *, only: Sequence[str] | None = None, skip: Sequence[str] = ()
) -> list[Unit]:
    """Every unit of ``run`` in ``run_dir`` for the stages ``only`` / ``skip`` select (module doc), in an order that
    respects what each waits for."""
    stages = selected_stages(run, only, skip)
    if run.cache.layers:
        units = []
        if "cache" in stages:
            units.append(Unit("inputs", "inputs", run, Path(run_dir), (), _layers_inputs))
        for layer, (layer_run, folder) in layer_folders(run, run_dir).items():
            shared = "inputs" if "cache" in stages else None
            units += _run_units(layer_run, folder, f"{paths.layer_dir_name(layer)}/", stages, shared)
        return units
    units = _run_units(run, run_dir, "", stages)
    if "scale" in stages:
        units += _scale_units(run, run_dir)
    known = {u.name for u in units}
    return [Unit(u.name, u.part, u.run, u.run_dir, tuple(a for a in u.after if a in known), u.work) for u in units]
