"""Several layers' activation caches from one forward per checkpoint (``cache.layers``, notebook 01).

A run of several layers is one single-layer run per layer (:meth:`~saetrack.config.run.RunConfig.layer_runs`), each
in its own folder ``<run>/layer{l}/`` (:mod:`saetrack.pipeline.layers`). Cached separately, each layer would load
every checkpoint and run the model up to its own hook: L loads and L forwards, the shallow blocks recomputed for
every layer. :func:`cache_layers` builds the layers' caches together instead (:func:`~saetrack.stages.cache.
build_caches`): per checkpoint one load and, per batch, one forward to the deepest layer still to cache, every hook
on the way captured (:func:`~saetrack.data.forward.activations_at_hooks`). Each layer's cache is, file for file, the
cache its own single-layer run writes (same values, same manifest, same config hash), so the layer's later stages
cannot tell the difference and a layer cached alone is reused as is.

Streamed runs write no activations (their cache stage records the token plan and the checkpoints' hashes): each
layer's plan is written as a single-layer run writes it, and each layer's links run their own forwards.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from saetrack import paths
from saetrack.config.run import RunConfig
from saetrack.data.cache_plan import cache_config_hash, plan_tokens
from saetrack.pipeline.skeleton import StageRun, current_manifest
from saetrack.stages.cache import build_caches, cache_activations

__all__ = ["cache_layers"]


def cache_layers(
    run: RunConfig,
    run_dir: Path,
    *,
    source: Any | None = None,
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
    after_step: Callable[[int], None] | None = None,
) -> dict[int, dict[str, Any]]:
    """The activation cache of every layer of ``run.cache.layers`` in ``run_dir/layer{l}/cache``, built from one
    forward per checkpoint and batch (module doc); returns layer -> its cache manifest.

    Each layer folder must hold the run's corpus (and model suite), as :func:`saetrack.pipeline.layers.
    prepare_layers` lays them out. A layer whose cache is current is skipped, the others resume at their first
    unfinished checkpoint; ``force`` rebuilds every layer. ``source`` and ``after_step`` are
    :func:`~saetrack.stages.cache.cache_activations`'s.
    """
    if not run.cache.layers:
        raise ValueError("cache_layers needs a run with cache.layers; a single-layer run uses cache_activations.")
    manifests: dict[int, dict[str, Any]] = {}
    targets: list[tuple[RunConfig, Path, StageRun]] = []
    plan: dict[str, Any] | None = None
    for layer_run in run.layer_runs():
        layer, folder = layer_run.cache.layer, Path(run_dir) / paths.layer_dir_name(layer_run.cache.layer)
        if run.cache.streamed:
            manifests[layer] = cache_activations(layer_run, folder, source=source, force=force, progress=progress)
            continue
        digest = cache_config_hash(layer_run)
        if not force and (manifest := current_manifest(folder / paths.CACHE_DIR, digest)) is not None:
            manifests[layer] = manifest
            continue
        layer_plan = plan_tokens(layer_run).to_dict()
        plan = layer_plan if plan is None else plan
        if layer_plan != plan:  # the layers share one token plan: the contexts every forward runs
            raise RuntimeError(f"layer {layer}'s token plan differs from the other layers'; cannot share forwards.")
        stage = StageRun(folder / paths.CACHE_DIR, "cache", digest, force)
        if force:
            shutil.rmtree(stage.folder, ignore_errors=True)  # as cache_activations: no part reused
        targets.append((layer_run, folder, stage))
    if targets:
        for (layer_run, _, _), manifest in zip(
            targets, build_caches(targets, source, device, progress, after_step), strict=True
        ):
            manifests[layer_run.cache.layer] = manifest
    return dict(sorted(manifests.items()))
