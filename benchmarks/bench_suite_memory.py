"""Suite training with bounded logits buffers and glibc keeping freed memory, against the plain step.

    python benchmarks/bench_suite_memory.py                  # nano's shapes, 5 rounds of 20 steps per variant
    python benchmarks/bench_suite_memory.py --steps 40 --rounds 7

The plain step (one 16 x 128-token batch, 32 MiB of float32 logits, glibc's default malloc) and the project's
step (``nanolm.microbatches`` micro-batches and ``runtime.keep_freed_memory``) each run in a fresh process
(``mallopt`` cannot be undone within one), alternated A B A B ... so that noise from a shared machine hits both
alike. Each process measures, per optimizer step: wall time, user and kernel (system) CPU time, and minor page
faults (``getrusage``). The printed ratios are medians of the per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from saetrack.config import get_preset
from saetrack.data.nanolm import adamw_optimizer, build_model, lm_loss, microbatches
from saetrack.runtime import keep_freed_memory


def measure(variant: str, preset: str, steps: int, seed: int = 0) -> dict[str, float]:
    """Per-step wall, user and system seconds and minor faults of ``steps`` suite training steps of ``variant``."""
    run = get_preset(preset)
    assert run.suite is not None and run.corpus is not None
    suite, vocab = run.suite, run.corpus.vocab_size
    n_micro = 1
    if variant == "project":
        keep_freed_memory()
        n_micro = microbatches(suite.batch_size, suite.context_length, vocab)
    model = build_model(suite, vocab, seed)
    optimizer = adamw_optimizer(model, suite)
    rng = np.random.default_rng(seed)

    def step() -> None:
        tokens = torch.as_tensor(rng.integers(0, vocab, size=(suite.batch_size, suite.context_length + 1)))
        optimizer.zero_grad(set_to_none=True)
        for part in tokens.chunk(n_micro):
            (lm_loss(model, part) / n_micro).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    for _ in range(3):  # warm-up: the heap grows, kernels are chosen
        step()
    before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        step()
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
    return {
        "wall": wall / steps,
        "user": (after.ru_utime - before.ru_utime) / steps,
        "sys": (after.ru_stime - before.ru_stime) / steps,
        "faults": (after.ru_minflt - before.ru_minflt) / steps,
        "micro": n_micro,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", choices=("plain", "project"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.preset, args.steps)))
        return
    results: dict[str, list[dict[str, float]]] = {"plain": [], "project": []}
    for r in range(args.rounds):
        for variant in ("plain", "project"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", variant, "--preset", args.preset, "--steps", str(args.steps)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            results[variant].append(json.loads(out.strip().splitlines()[-1]))
            m = results[variant][-1]
            print(
                f"round {r + 1} {variant:>7}: {m['wall'] * 1e3:7.1f} ms/step wall, user {m['user'] * 1e3:6.1f} ms, "
                f"system {m['sys'] * 1e3:6.1f} ms, {m['faults']:8.0f} minor faults/step ({m['micro']:.0f} micro)"
            )
    for key, name in (("wall", "wall time"), ("sys", "system CPU"), ("faults", "minor faults")):
        ratios = [p[key] / max(q[key], 1e-12) for p, q in zip(results["plain"], results["project"], strict=True)]
        print(f"plain / project {name}: median {statistics.median(ratios):.2f}x over {len(ratios)} rounds")
    for variant, rows in results.items():
        share = statistics.median(m["sys"] / (m["sys"] + m["user"]) for m in rows)
        print(f"{variant}: kernel share of CPU time {share:.0%}")


if __name__ == "__main__":
    main()
