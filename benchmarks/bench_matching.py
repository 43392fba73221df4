"""Benchmark: feature matching at the paper's dictionary size, in bounded memory, and its agreement with the exact one.

Measured in one run:

1. ``--features`` (default 65,536) random unit decoders of width ``--d-in`` (default 1024, pythia-410m) on each side,
   matched by :func:`saetrack.analysis.sparse_matching.sparse_assignment` on ``--device``: the time of each part
   (the candidate pool from blocks of cosines, float64 re-scoring, the sparse assignment, the certificate's
   potentials), the ``k`` reached, whether the answer is proven optimal (random dictionaries have no clear partners,
   the hardest case for the candidates), and the process's peak resident memory against what the dense matching
   would need (the full ``F x F'`` float64 cosine matrix alone);
2. at ``--compare`` features (default 2,048), the same, on random *and* on chain-like dictionaries (a noisy shuffled
   copy), side by side with the exact Hungarian assignment: the time ratio and whether the pairs are equal.

Run::

    python benchmarks/bench_matching.py                           # about 10 minutes on 2 CPU cores
    python benchmarks/bench_matching.py --features 16384 --d-in 512
    python benchmarks/bench_matching.py --device cuda
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from saetrack.analysis import sparse_matching
from saetrack.analysis.matching import match_features


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def _unit(n: int, d: int, seed: int) -> np.ndarray:
    w = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return w / np.linalg.norm(w, axis=1, keepdims=True)


def _timed_passes() -> dict[str, float]:
    """Wrap the sparse assignment's passes to add up their wall time."""
    spent: dict[str, float] = {}
    for name in ("candidate_pool", "pair_cosines", "min_weight_full_bipartite_matching", "residual_potentials"):
        inner = getattr(sparse_matching, name)

        def timed(*args, _inner=inner, _name=name, **kwargs):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            try:
                return _inner(*args, **kwargs)
            finally:
                spent[_name] = spent.get(_name, 0.0) + time.perf_counter() - start

        setattr(sparse_matching, name, timed)
    return spent


def large(features: int, d_in: int, device: str) -> None:
    """Part 1: the sparse matching of two random dictionaries of ``features`` rows."""
    a, b = _unit(features, d_in, 0), _unit(features, d_in, 1)
    base = _peak_rss_gb()
    spent = _timed_passes()
    start = time.perf_counter()
    found = sparse_matching.sparse_assignment(a, b, device=device)
    wall = time.perf_counter() - start
    print(f"F = {features:,} x {features:,}, d_in = {d_in}, device {device}")
    print(f"  total {wall:.0f} s: " + ", ".join(f"{k} {v:.0f} s" for k, v in spent.items()))
    print(f"  k reached {found.k}, certified optimal: {found.certified}, mean cosine {found.cosines.mean():.4f}")
    dense = features * features * 8 / 1e9
    print(f"  peak RSS {_peak_rss_gb():.2f} GB (inputs and interpreter {base:.2f} GB); "
          f"the dense float64 cosine matrix alone: {dense:.1f} GB")  # fmt: skip


def compare(features: int, d_in: int) -> None:
    """Part 2: sparse against exact, side by side, on random and on chain-like dictionaries."""
    rng = np.random.default_rng(2)
    a = _unit(features, d_in, 3)
    chain_like = a[rng.permutation(features)] + 0.05 * rng.normal(size=a.shape).astype(np.float32)
    for name, b in (("random", _unit(features, d_in, 4)), ("chain-like", chain_like)):
        timings, results = {}, {}
        for method in ("exact", "sparse"):
            start = time.perf_counter()
            results[method] = match_features(a, b, method=method)
            timings[method] = time.perf_counter() - start
        same = np.array_equal(results["exact"].index_b, results["sparse"].index_b)
        gap = results["exact"].cosines.sum() - results["sparse"].cosines.sum()
        print(f"F = {features:,} {name}: exact {timings['exact']:.1f} s, sparse {timings['sparse']:.1f} s "
              f"(ratio {timings['exact'] / timings['sparse']:.1f}x); certified {results['sparse'].certified}, "
              f"pairs equal {same}, summed-cosine gap {gap:.2e}")  # fmt: skip


def main() -> None:
    """Parse the options and run both parts."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--features", type=int, default=65536)
    parser.add_argument("--d-in", type=int, default=1024)
    parser.add_argument("--compare", type=int, default=2048)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    compare(args.compare, args.d_in)
    large(args.features, args.d_in, args.device)


if __name__ == "__main__":
    main()
