"""Benchmark: the formation stage's per-checkpoint feature statistics, old two-pass host reduction vs the one-pass
device reduction (:func:`saetrack.analysis.feature_scan.scan_features`), on the CPU, side by side.

* ``old``: a frozen copy of the reduction before the change: :func:`feature_statistics` (every batch's activations
  copied to the host as float64, summed there) and then :func:`top_k_datapoints` (a second encoding of every batch,
  ``cat([best, batch])`` values and an int64 ``[F, k + b]`` row-index tensor per batch, ``topk``).
* ``new``: one encoding per batch; count / float64 sum / max and the running top-k kept on the SAE's device (here
  the CPU) and copied back once.

Both run on the same seeded SAE and activations (default: d_in 512, d_sae 8192, 20 batches of 2048 rows, k 25) and
must give identical results (checked). Each measurement runs in a fresh subprocess, rounds alternate old/new, the
best time of each is kept; peak host memory is the process's peak resident set (``ru_maxrss``) minus its resident
set just before the reduction, the largest over the rounds. Prints one JSON object: the times, ``time_ratio =
old_s / new_s`` (> 1: the new one is faster), the peak memory of each and ``memory_ratio``.

    python benchmarks/bench_formation.py [--d-sae 8192] [--batch 2048] [--batches 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch

from saetrack.analysis.feature_scan import scan_features
from saetrack.sae.weights import SAEWeights, feature_activations


def old_reduction(weights: SAEWeights, x: np.ndarray, k: int, batch_size: int) -> tuple[np.ndarray, ...]:
    """The old statistics pass and top-k pass (frozen copy): ``(density, max, mean, values, indices)``."""
    n_features, n = weights.W_enc.shape[1], x.shape[0]
    count = torch.zeros(n_features, dtype=torch.float64)
    total = torch.zeros(n_features, dtype=torch.float64)
    maximum = torch.zeros(n_features, dtype=torch.float64)
    for start in range(0, n, batch_size):
        acts = feature_activations(weights, np.asarray(x[start : start + batch_size])).cpu().double()
        count += (acts > 0).sum(dim=0)
        total += acts.sum(dim=0)
        maximum = torch.maximum(maximum, acts.max(dim=0).values)
    cols = torch.arange(n_features)
    sub = SAEWeights(weights.W_enc[:, cols], weights.b_enc[cols], weights.W_dec[cols], weights.b_dec)
    best_val = torch.empty(n_features, 0, dtype=torch.float32)
    best_idx = torch.empty(n_features, 0, dtype=torch.int64)
    for start in range(0, n, batch_size):
        acts = feature_activations(sub, np.asarray(x[start : start + batch_size])).cpu().float().T
        rows = torch.arange(start, start + acts.shape[1], dtype=torch.int64).expand(n_features, -1)
        cand_val, cand_idx = torch.cat([best_val, acts], dim=1), torch.cat([best_idx, rows], dim=1)
        best_val, pos = torch.topk(cand_val, min(k, cand_val.shape[1]), dim=1, largest=True, sorted=True)
        best_idx = torch.gather(cand_idx, 1, pos)
    return (count / n).numpy(), maximum.numpy(), (total / n).numpy(), best_val.numpy(), best_idx.numpy()


def new_reduction(weights: SAEWeights, x: np.ndarray, k: int, batch_size: int) -> tuple[np.ndarray, ...]:
    """The one-pass device reduction: ``(density, max, mean, values, indices)``."""
    stats, values, indices = scan_features(weights, x, k=k, batch_size=batch_size)
    return stats.density, stats.max_activation, stats.mean_activation, values, indices


def _problem(d_in: int, d_sae: int, n: int, seed: int = 0) -> tuple[SAEWeights, np.ndarray]:
    """A seeded SAE whose ReLU codes are mostly zero, and ``[n, d_in]`` activations with repeated rows."""
    g = torch.Generator().manual_seed(seed)
    weights = SAEWeights(
        W_enc=torch.randn(d_in, d_sae, generator=g) / d_in**0.5,
        b_enc=torch.randn(d_sae, generator=g) - 1.5,
        W_dec=torch.randn(d_sae, d_in, generator=g),
        b_dec=torch.randn(d_in, generator=g) * 0.1,
    )
    x = torch.randn(n, d_in, generator=g).numpy()
    x[::64] = x[0]
    return weights, x


def _rss_bytes() -> int:
    """The current resident set of this process (Linux ``/proc``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _child(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process: prints time, peak memory above the start and a result digest."""
    torch.set_num_threads(args.threads)
    weights, x = _problem(args.d_in, args.d_sae, args.batch * args.batches)
    run = old_reduction if args.child == "old" else new_reduction
    before = _rss_bytes()
    start = time.perf_counter()
    out = run(weights, x, args.k, args.batch)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    digest = [float(np.asarray(a, dtype=np.float64).sum()) for a in out]
    print(json.dumps({"seconds": seconds, "peak_bytes": peak, "digest": digest}))


def _measure(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run ``kind`` in a fresh subprocess with the same arguments; return its JSON line."""
    flags = [f"--{name.replace('_', '-')}={getattr(args, name)}" for name in ("d_in", "d_sae", "batch", "batches")]
    cmd = [sys.executable, __file__, f"--child={kind}", *flags, f"--k={args.k}", f"--threads={args.threads}"]
    return dict(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]))


def main() -> None:
    """Parse the arguments; run the child measurement, or the alternating rounds and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--d-in", type=int, default=512)
    parser.add_argument("--d-sae", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--k", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", choices=("old", "new"), default=None)
    args = parser.parse_args()
    if args.child:
        return _child(args)
    weights, x = _problem(args.d_in, args.d_sae, args.batch * 2)  # identical results on a small case first
    for a, b in zip(
        old_reduction(weights, x, args.k, args.batch // 4),
        new_reduction(weights, x, args.k, args.batch // 4),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    runs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
    for r in range(args.rounds):
        for kind in ("old", "new") if r % 2 == 0 else ("new", "old"):
            runs[kind].append(_measure(kind, args))
            print(f"round {r} {kind}: {runs[kind][-1]['seconds']:.2f} s", file=sys.stderr)
    assert runs["old"][0]["digest"] == runs["new"][0]["digest"], "old and new results differ"
    best = {kind: min(m["seconds"] for m in ms) for kind, ms in runs.items()}
    peak = {kind: max(m["peak_bytes"] for m in ms) for kind, ms in runs.items()}
    print(json.dumps({
        "shape": {"d_in": args.d_in, "d_sae": args.d_sae, "batch": args.batch, "batches": args.batches, "k": args.k},
        "threads": args.threads, "rounds": args.rounds,
        "old_s": best["old"], "new_s": best["new"], "time_ratio": best["old"] / best["new"],
        "old_peak_host_bytes": peak["old"], "new_peak_host_bytes": peak["new"],
        "memory_ratio": peak["old"] / max(peak["new"], 1), "identical_results": True,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
