"""The pipeline of a ``torchrun`` job: ``torchrun --nproc-per-node N run_all.py [options]`` on one node or several.

Every rank runs ``saetrack run`` with the same options and a run directory on a file system they all share. The
stages that train SAEs are computed by all ranks together, before any notebook runs:

1. **inputs** (rank 0 alone, the others waiting): the corpus, the nano model suite and the activation cache (for a
   streamed preset, its token plan) - the headless stage functions of notebook 01;
2. **the chain and the from-scratch baselines** (every rank): each link and baseline trained data-parallel, its
   model forwards dealt out over the ranks when streamed, saved by rank 0 (:func:`saetrack.stages.chain.train_chain`
   with ``ranks``). A job killed and restarted resumes at the first link rank 0 had not finished;
3. **the crosscoder and its controls** (every rank, when ``crosscoder.enabled``): rank 0 builds the aligned
   activations, then each crosscoder trains data-parallel and rank 0 writes it
   (:func:`saetrack.stages.crosscoder.training.train_crosscoders`); a restarted job resumes from the last saved state.

Then the other ranks leave, and rank 0 runs the notebooks as a single-process run does: notebooks 01, 02 and 06 find
their models current and only evaluate and draw; formation, drift, the scale study and the explorer run on rank 0.

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
from saetrack.distributed.data_parallel import check_data_parallel
from saetrack.distributed.ranks import Ranks, barrier
from saetrack.pipeline.headless import prepare_inputs
from saetrack.pipeline.layers import layer_folders, prepare_layers
from saetrack.stages import chain
from saetrack.stages.cache.layers import cache_layers
from saetrack.stages.crosscoder.training import train_crosscoders

__all__ = ["DATA_PARALLEL_STAGES", "data_parallel_stages", "run_data_parallel"]

#: The pipeline stages (:data:`saetrack.pipeline.shape.STAGES`) a torchrun job computes on all ranks together.
DATA_PARALLEL_STAGES: tuple[str, ...] = ("cache", "chain", "crosscoder")


def data_parallel_stages(only: Sequence[str] | None, skip: Sequence[str]) -> list[str]:
    """The stages of :data:`DATA_PARALLEL_STAGES` that ``--only`` (all when empty) and ``skip`` select."""
    return [name for name in DATA_PARALLEL_STAGES if (not only or name in only) and name not in skip]


def _runs(run: RunConfig, run_dir: Path) -> list[tuple[RunConfig, Path]]:
    """The single-layer runs whose chains the job trains, with their run directories: ``run`` itself, or each layer
    of ``cache.layers`` in ``run_dir/layer{l}``."""
    return list(layer_folders(run, run_dir).values()) if run.cache.layers else [(run, Path(run_dir))]


def _check_splits(run: RunConfig, selected: list[str], ranks: Ranks) -> None:
    """Refuse, before any work, a job whose data-parallel stages cannot split their batches over the ranks (one
    ``ValueError`` naming the fix), rather than after the cache and the chain are built."""
    if "chain" in selected:
        check_data_parallel(run.chain.architecture, run.chain.batch_size, ranks)
    if "crosscoder" in selected and run.crosscoder.enabled and run.crosscoder.batch_size % ranks.world_size:
        raise ValueError(
            f"crosscoder.batch_size = {run.crosscoder.batch_size} does not split over {ranks.world_size} ranks: use a "
            "multiple of the number of ranks, so every rank trains on the same share of each batch."
        )


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
    _check_splits(run, selected, ranks)
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
    if "crosscoder" in selected and run.crosscoder.enabled:
        for layer_run, folder in _runs(run, run_dir):
            say(f"[{layer_run.preset}:crosscoder] the crosscoder and its controls, data-parallel over "
                f"{ranks.world_size} ranks")  # fmt: skip
            train_crosscoders(layer_run, folder, device=device, force=force, progress=ranks.writer, ranks=ranks)
            barrier(ranks)
    seconds = time.perf_counter() - started
    say(f"[{run.preset}] data-parallel stages {selected} done in {seconds:.1f} s on {ranks.world_size} ranks")
    return seconds
