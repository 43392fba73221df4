"""A run of several layers (``cache.layers``): one single-layer run per layer, its inputs shared.

Layout: the run directory holds the shared inputs (``corpus/``, and ``model/`` for a nano suite) and one folder per
layer, ``layer{l}/``, that is the run directory of the layer's own run (:meth:`~saetrack.config.run.RunConfig.
layer_runs`: the config with ``cache.layer = l``), with everything a single-layer run has - cache, chain, baselines,
formation, drift, crosscoder, explorer, executed notebooks, ``results.json`` - and its figures in
``figures/<preset>/layer{l}/``. A single-layer run's layout is unchanged.

:func:`run_layers` (what ``saetrack run`` / ``run_all.py`` do for such a config) prepares the shared inputs once
(:func:`prepare_layers`: corpus and model suite in the run directory, hard-linked into every layer's folder) and
builds every layer's activation cache from one forward per checkpoint (:func:`~saetrack.stages.cache.layers.
cache_layers`). Streamed, it then trains every layer's chain and baselines side by side from one forward per batch
(:func:`~saetrack.stages.chain.lockstep.train_layers_in_lockstep`). Last, it runs each stage's notebook for every
layer before the next stage; notebooks 01 and 02 find the shared work current. The scale study compares model sizes
at one layer and is not run per layer (run it without ``cache.layers``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from saetrack import paths
from saetrack.config.run import RunConfig
from saetrack.data import corpus, suite
from saetrack.pipeline.headless import adopt
from saetrack.pipeline.shape import STAGES, get_stage
from saetrack.stages.cache.layers import cache_layers
from saetrack.stages.chain.lockstep import side_by_side, train_layers_in_lockstep

__all__ = ["layer_folders", "prepare_layers", "run_layers"]


def layer_folders(run: RunConfig, run_dir: Path) -> dict[int, tuple[RunConfig, Path]]:
    """Layer -> (its single-layer run, its run directory ``run_dir/layer{l}``) for every layer of ``cache.layers``."""
    return {r.cache.layer: (r, Path(run_dir) / paths.layer_dir_name(r.cache.layer)) for r in run.layer_runs()}


def prepare_layers(run: RunConfig, run_dir: Path, *, progress: bool = False) -> dict[int, list[str]]:
    """The run's corpus and (``model.source="suite"``) model suite built once in ``run_dir``, then hard-linked into
    every layer's folder (:func:`~saetrack.pipeline.headless.adopt`: the layers' configs hash them alike); returns
    layer -> the folders it adopted (empty when already current)."""
    corpus.prepare_corpus(run, run_dir, progress=progress)
    if run.model.source == "suite":
        suite.train_suite(run, run_dir, progress=progress)
    adopted = {}
    for layer, (layer_run, folder) in layer_folders(run, run_dir).items():
        folder.mkdir(parents=True, exist_ok=True)
        adopted[layer] = adopt(layer_run, folder, [run_dir])
    return adopted


def _lockstep_ready(run: RunConfig, run_dir: Path, log: Callable[[str], None]) -> bool:
    """Whether the layers' chains train side by side sharing forwards (:func:`~saetrack.stages.chain.lockstep.
    side_by_side`) now: only when every layer's cache (token plan) is current - else each layer's notebook 02 says
    what is missing."""
    cache = get_stage("cache")
    if not run.cache.streamed or not all(cache.outputs_current(*pair) for pair in layer_folders(run, run_dir).values()):
        return False
    if not side_by_side(run):
        log(
            f"[{run.preset}:chain] layers trained one after the other (their own forwards): matmul_precision "
            f"{run.chain.matmul_precision!r} / cache.tf32 switch CUDA-wide flags that side-by-side layers would mix"
        )
        return False
    return True


def run_layers(
    run: RunConfig,
    run_dir: Path,
    *,
    run_one: Callable[..., float],
    only: Sequence[str] | None = None,
    skip: Sequence[str] = (),
    force: bool = False,
    rerun: bool = False,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    **options: object,
) -> float:
    """Run the pipeline of a several-layer ``run`` (module doc) with ``run_one`` (:func:`~saetrack.pipeline.stages.
    run_stages`, passed in because it dispatches here) for each layer's stages; returns the seconds taken.

    ``force`` rebuilds the shared inputs' cache for every layer together (one forward per batch); each layer's
    notebook 01 then only draws. Other options (``outputs_only``, ``echo``) go to ``run_one`` unchanged; ``echo``
    False (``--quiet``) also hides the shared preparation's progress bars."""
    started = time.perf_counter()
    bars = bool(options.get("echo", True))
    folders = layer_folders(run, run_dir)
    names = [stage.name for stage in STAGES if (not only or stage.name in only) and stage.name not in skip]
    if "cache" in names:
        prepare_layers(run, run_dir, progress=bars)
        layers = ", ".join(str(layer) for layer in folders)
        log(f"[{run.preset}:cache] layers {layers}: caching from one forward per checkpoint ({run.cache.mode}) ...")
        cache_layers(run, run_dir, device=device, force=force, progress=bars)
    lockstep = "chain" in names and _lockstep_ready(run, run_dir, log)
    if lockstep:  # every layer's chain and baselines side by side, one forward per batch for all
        shared = train_layers_in_lockstep(run, run_dir, device=device, force=force, log=log)
        log(f"[{run.preset}:chain] layers {', '.join(str(layer) for layer in folders)}: chains and baselines current "
            f"after {shared['seconds']:.1f} s, {shared['forwards']:,} shared forward batches")  # fmt: skip
    for name in names:
        if not get_stage(name).per_layer:
            log(f"[{run.preset}:{name}] not run per layer (it compares model sizes at one layer); run it without "
                "cache.layers")  # fmt: skip
            continue
        for layer_run, folder in folders.values():
            again = force and (name == "cache" or (name == "chain" and lockstep))  # just rebuilt above: only draw
            run_one(layer_run, folder, only=[name], skip=skip, force=force and not again, rerun=rerun or again,
                    device=device, log=log, **options)  # fmt: skip
    return time.perf_counter() - started
