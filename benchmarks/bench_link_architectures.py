"""Benchmark: training steps per second of each link architecture (``ChainConfig.architecture``), side by side.

One SAELens ``SAETrainer.step`` as :func:`~saetrack.sae.training.train_sae` sets it up (fused Adam, unit-norm decoder,
the architecture's own hooks) for every architecture on the same batches and shape (default: the nano preset's,
d_in 128 -> d_sae 1024, batch 256, on the CPU):

* ``standard_fused``: the paper's L1 SAE with the fused step of :mod:`saetrack.sae.step` (the default path);
* ``standard_autograd``: the same SAE on SAELens' autograd forward pass (``fused_step = False``);
* ``topk``, ``batchtopk``, ``jumprelu``: SAELens' own training step of each (:mod:`saetrack.sae.architectures`).

Rounds are interleaved (each round times every architecture once) and the best round of each is kept, so a noisy
neighbour on a shared machine slows all of them alike. Prints steps/s and the ratio to ``standard_fused``. Run::

    python benchmarks/bench_link_architectures.py                 # about a minute on 2 CPU cores
    python benchmarks/bench_link_architectures.py --threads 1 --rounds 8
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from sae_lens import SAETrainer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from saetrack.config import ChainConfig
from saetrack.sae.model import build_sae
from saetrack.sae.training import sae_trainer, synthetic_activations

#: The variants timed: (label, architecture, fused standard step).
VARIANTS: tuple[tuple[str, str, bool], ...] = (
    ("standard_fused", "standard", True),
    ("standard_autograd", "standard", False),
    ("topk", "topk", False),
    ("batchtopk", "batchtopk", False),
    ("jumprelu", "jumprelu", False),
)


def _trainer(architecture: str, fused: bool, d_in: int, expansion: int, batch: int, k: int) -> SAETrainer[Any, Any]:
    """A trainer for one architecture's unit-norm SAE (the chain's default decoder) before its first step."""
    chain = ChainConfig(
        schedule=(0,),
        expansion_factor=expansion,
        architecture=architecture,  # type: ignore[arg-type]
        k=k if architecture in ("topk", "batchtopk") else None,
        l1_coefficient=1e-3,
    )
    sae = build_sae(d_in, chain, seed=0)
    if hasattr(sae, "fused_step"):
        sae.fused_step = fused
    sae.train()
    return sae_trainer(sae, iter(()), n_steps=10_000, batch_size=batch, lr=4e-4, warmup_steps=0)


def _time_steps(trainer: SAETrainer[Any, Any], batches: list[torch.Tensor]) -> float:
    """Seconds per step over ``batches``."""
    start = time.perf_counter()
    for batch in batches:
        trainer.step(batch)
        trainer.n_training_steps += 1
    return (time.perf_counter() - start) / len(batches)


def run(d_in: int, expansion: int, batch: int, k: int, steps: int, rounds: int) -> dict[str, float]:
    """Best-of-``rounds`` steps/s of every variant of :data:`VARIANTS`, interleaved, and the ratios to the fused
    standard step."""
    x, _ = synthetic_activations(steps * batch, d_in, seed=0)
    batches = list(torch.from_numpy(x).split(batch))
    trainers = {label: _trainer(arch, fused, d_in, expansion, batch, k) for label, arch, fused in VARIANTS}
    for trainer in trainers.values():  # warm-up: allocations, fused Adam's first step
        _time_steps(trainer, batches[:5])
    best = dict.fromkeys(trainers, float("inf"))
    for _ in range(rounds):
        for label, trainer in trainers.items():
            best[label] = min(best[label], _time_steps(trainer, batches))
    result = {f"{label}_steps_per_s": round(1.0 / seconds, 1) for label, seconds in best.items()}
    base = best["standard_fused"]
    result.update({f"{label}_vs_standard_fused": round(base / seconds, 3) for label, seconds in best.items()})
    return result


def main() -> None:
    """Parse the shape, time every architecture, print the results as JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d-in", type=int, default=128)
    parser.add_argument("--expansion", type=int, default=8)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--k", type=int, default=32, help="k of TopK and BatchTopK")
    parser.add_argument("--steps", type=int, default=40, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = run(args.d_in, args.expansion, args.batch, args.k, args.steps, args.rounds)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
