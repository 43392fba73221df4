"""The pipeline of a ``torchrun`` job: ``torchrun --nproc-per-node N run_all.py [options]`` on one node or several.

Every rank runs ``saetrack run`` with the same options and a run directory on a file system they all share. The
stages that train SAEs are computed by all ranks together, before any notebook runs:

1. **inputs** (rank 0 alone, the others waiting): the corpus, the nano model suite and the activation cache (for a
   streamed preset, its token plan) - the headless stage functions of notebook 01;
2. **the chain and the from-scratch baselines** (every rank): each link and baseline trained data-parallel, its
   model forwards dealt out over the ranks when streamed, saved by rank 0 (:func:`saetrack.stages.chain.train_chain`
   with ``ranks``). A job killed and restarted resumes at the first link rank 0 had not finished.

Then the other ranks leave, and rank 0 runs the notebooks as a single-process run does: notebooks 01 and 02 find
their outputs current and only draw; formation, drift, the scale study, the crosscoder and the explorer run on rank 0.

A run of several layers (``cache.layers``, :mod:`saetrack.pipeline.layers`): rank 0 builds the shared inputs and
every layer's cache (one forward per checkpoint), then the layers' chains and baselines train one layer after the
other, each data-parallel over all ranks (streamed, each layer's forwards are dealt out over the ranks, not shared
between layers: the side-by-side threads of a single process would mix the ranks' collectives).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from saetrack.config.run import RunConfig
from saetrack.distributed.ranks import Ranks, barrier
from saetrack.pipeline.headless import prepare_inputs
from saetrack.pipeline.layers import layer_folders, prepare_layers
from saetrack.stages import chain
from saetrack.stages.cache.layers import cache_layers

__all__ = ["DATA_PARALLEL_STAGES", "data_parallel_stages", "run_data_parallel"]

#: The pipeline stages (:data:`saetrack.pipeline.shape.STAGES`) a torchrun job computes on all ranks together.
DATA_PARALLEL_STAGES: tuple[str, ...] = ("cache", "chain")


def data_parallel_stages(only: Sequence[str] | None, skip: Sequence[str]) -> list[str]:
    """The stages of :data:`DATA_PARALLEL_STAGES` that ``--only`` (all when empty) and ``skip`` select."""
    return [name for name in DATA_PARALLEL_STAGES if (not only or name in only) and name not in skip]


def _runs(run: RunConfig, run_dir: Path) -> list[tuple[RunConfig, Path]]:
    """The single-layer runs whose chains the job trains, with their run directories: ``run`` itself, or each layer
    of ``cache.layers`` in ``run_dir/layer{l}``."""
    return list(layer_folders(run, run_dir).values()) if run.cache.layers else [(run, Path(run_dir))]


def run_data_parallel(
    run: RunConfig,
    run_dir: Path,
    ranks: Ranks,
    *,
    device: str,
    only: Sequence[str] | None = None,
    skip: Sequence[str] = (),
    force: bool = False,
    log: Callable[[str], None] = print,
) -> float:
    """Compute the stages of :data:`DATA_PARALLEL_STAGES` that ``only`` / ``skip`` select (module doc), every rank
    calling this alike; return the seconds taken. Stages already current are skipped, as everywhere."""
    started = time.perf_counter()
    selected = data_parallel_stages(only, skip)
    say = log if ranks.writer else (lambda line: None)
    if "cache" in selected:
        if ranks.writer:
            say(f"[{run.preset}:cache] rank 0 prepares the corpus, model and cache; {ranks.world_size - 1} ranks wait")
            if run.cache.layers:
                prepare_layers(run, run_dir)
                cache_layers(run, run_dir, device=device, force=force, progress=False)
            else:
                prepare_inputs(run, run_dir, device=device, force=force)
        barrier(ranks)
    if "chain" in selected:
        for layer_run, folder in _runs(run, run_dir):
            say(f"[{layer_run.preset}:chain] the chain and baselines, data-parallel over {ranks.world_size} ranks")
            chain.train_chain(layer_run, folder, device=device, force=force, ranks=ranks)
            chain.train_baselines(layer_run, folder, device=device, force=force, ranks=ranks)
            barrier(ranks)
    seconds = time.perf_counter() - started
    say(f"[{run.preset}] data-parallel stages {selected} done in {seconds:.1f} s on {ranks.world_size} ranks")
    return seconds
