"""The chains and baselines of several streamed layers trained side by side, sharing each checkpoint's forward.

With ``cache.layers`` and ``cache.mode="streamed"`` (notebook 02 of every layer; :mod:`saetrack.pipeline.layers`
calls :func:`train_layers_in_lockstep` first), one thread per layer runs that layer's own :func:`~saetrack.stages.
chain.train_chain` and then :func:`~saetrack.stages.chain.train_baselines`, each reading its rows through a
:class:`~saetrack.data.lockstep.LockstepActivations` of one shared :class:`~saetrack.data.lockstep.LockstepForward`:
the layers ask for the same rows in the same order, so each batch of a link's tokens runs through the model once, to
the deepest layer, and feeds every layer's link. The rows are the values each layer's own forward gives, so every
layer's chain and baselines are its single-layer run's (tested bit for bit on smoke); finished links are kept and an
interrupted run resumes, per layer, at its first unfinished link, as the single-layer stages do.

The threads share the machine: the SAE steps of the layers run concurrently (PyTorch releases the interpreter
lock in its kernels), the forward once. Each layer's notebook 02 then finds its chain and baselines current and
goes on with the comparison (seed control and convergence probes run per layer, each with its own forwards).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from saetrack import paths
from saetrack.config.run import RunConfig
from saetrack.data.checkpoints import open_source
from saetrack.data.lockstep import LockstepActivations, LockstepForward
from saetrack.stages.chain import train_baselines, train_chain

__all__ = ["side_by_side", "train_layers_in_lockstep"]


def side_by_side(run: RunConfig, ranks: int = 1) -> bool:
    """Whether the layers of ``run.cache.layers`` train their links side by side sharing forwards: streamed, in one
    process (a torchrun job of ``ranks`` > 1 trains them one after the other), and with no CUDA-wide matmul flag
    switched around each step or forward (``chain.matmul_precision``, ``cache.tf32``), which threads would mix."""
    cache = run.cache
    return (
        bool(cache.layers) and cache.streamed and ranks == 1 and run.chain.matmul_precision == "fp32" and not cache.tf32
    )


def _layer_work(
    layer_run: RunConfig, folder: Path, broker: LockstepForward, device: str, force: bool, log: Callable[[str], None]
) -> None:
    """One layer's thread: its chain, then its baselines, every row read through ``broker``."""
    layer = layer_run.cache.layer
    try:
        checkpoints = open_source(layer_run.model, folder)
        activations = LockstepActivations(layer_run, folder, broker, checkpoints, device)
        t0 = time.perf_counter()
        train_chain(layer_run, folder, source=checkpoints, device=device, force=force, progress=False,
                    activations=activations,
                    after_link=lambda step: log(f"[{layer_run.preset}:chain] link at step {step} done"))  # fmt: skip
        log(f"[{layer_run.preset}:chain] chain current after {time.perf_counter() - t0:.1f} s")
        if layer_run.baseline_steps:
            train_baselines(layer_run, folder, source=checkpoints, device=device, force=force, progress=False,
                            activations=activations)  # fmt: skip
            log(f"[{layer_run.preset}:chain] baselines current")
    finally:
        broker.leave(layer)  # nobody waits for a layer that reads no more (done, or failed)


def train_layers_in_lockstep(
    run: RunConfig, run_dir: Path, *, device: str = "cpu", force: bool = False, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Train every layer's chain and baselines of a streamed several-layer ``run`` side by side (module doc), each
    into ``run_dir/layer{l}``; returns the shared forward passes run (``forwards``), the requests for rows served
    by them (``shared``) and by a layer's own forward (``alone``), and the wall time (``seconds``). The first
    layer's failure is raised after every thread has stopped (the others' finished links are kept)."""
    if not run.cache.layers or not run.cache.streamed:
        raise ValueError("train_layers_in_lockstep needs a streamed run with cache.layers.")
    layer_runs = run.layer_runs()
    first = Path(run_dir) / paths.layer_dir_name(layer_runs[0].cache.layer)
    broker = LockstepForward(run, list(run.cache.layers), open_source(run.model, first), device)
    errors: list[BaseException] = []
    printing = threading.Lock()

    def say(line: str) -> None:  # whole lines: the threads' prints never interleave within one
        with printing:
            log(line)

    def work(layer_run: RunConfig) -> None:
        try:
            folder = Path(run_dir) / paths.layer_dir_name(layer_run.cache.layer)
            _layer_work(layer_run, folder, broker, device, force, say)
        except BaseException as error:  # re-raised in the caller's thread below
            errors.append(error)

    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(r,), name=f"saetrack-{r.preset}") for r in layer_runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return {"forwards": broker.forwards, **broker.streams, "seconds": time.perf_counter() - started}
