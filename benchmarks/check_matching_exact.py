"""Check: on a finished run, the sparse matching gives the exact Hungarian answer for every matching the stages do.

For the run in ``--run-dir`` (default ``runs/nano``): every pair of consecutive chain links (the index stability of
the comparison stage), and at every baseline step the chain link against the from-scratch SAE and the second-seed
SAE against the first (the agreement of Fig. 16's control), each matched over all features and over the live ones
(firing frequency > 0). Each is solved by ``method="exact"`` and ``method="sparse"`` (certificate on, default ``k``)
and compared: the pairs must be identical and the mean cosine equal to 1e-12. Prints one line per matching with
the ``k`` the sparse method reached and whether it was proven optimal, then a summary; exits 1 on any difference.

Run::

    python benchmarks/check_matching_exact.py --run-dir runs/nano      # a few minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

from saetrack import paths
from saetrack.analysis import matching, sparse_matching
from saetrack.analysis.matching import match_features
from saetrack.sae.io import load_firing_frequency
from saetrack.sae.weights import SAEWeights
from saetrack.stages.chain.seed_control import seed_control_folder


def _pairs(run_dir: Path) -> list[tuple[str, Path, Path]]:
    """The (name, folder A, folder B) of every matching the stages make on this run."""
    chain = sorted((run_dir / paths.CHAIN_DIR).glob("step*"), key=lambda p: int(p.name[4:]))
    out = [(f"link {a.name} -> {b.name}", a, b) for a, b in itertools.pairwise(chain)]
    for base in sorted((run_dir / paths.BASELINE_DIR).glob("step*"), key=lambda p: int(p.name[4:])):
        out.append((f"chain vs scratch {base.name}", run_dir / paths.CHAIN_DIR / base.name, base))
        seed = seed_control_folder(run_dir, int(base.name[4:]))
        if seed.is_dir():
            out.append((f"seed 2 vs seed 1 {base.name}", seed, base))
    return out


def _live(folder: Path, n: int) -> np.ndarray:
    freq = load_firing_frequency(folder)
    return np.ones(n, dtype=bool) if freq is None else freq > 0


def main() -> int:
    """Compare exact and sparse on every matching; print and return 1 on any difference."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/nano"))
    args = parser.parse_args()
    reached: list[int] = []
    original = sparse_matching.sparse_assignment

    def recording(*a, **kw):  # type: ignore[no-untyped-def]
        found = original(*a, **kw)
        reached.append(found.k)
        return found

    sparse_matching.sparse_assignment = recording  # type: ignore[assignment]
    matching.sparse_assignment = recording  # type: ignore[assignment]  # the name match_features calls
    differ, total, start = 0, 0, time.perf_counter()
    for name, folder_a, folder_b in _pairs(args.run_dir):
        w_a, w_b = SAEWeights.load(folder_a).W_dec, SAEWeights.load(folder_b).W_dec
        for subset in ("all", "live"):
            kw = {} if subset == "all" else {
                "subset_a": _live(folder_a, w_a.shape[0]), "subset_b": _live(folder_b, w_b.shape[0])}  # fmt: skip
            exact = match_features(w_a, w_b, method="exact", **kw)
            sparse = match_features(w_a, w_b, method="sparse", **kw)
            same = np.array_equal(exact.index_a, sparse.index_a) and np.array_equal(exact.index_b, sparse.index_b)
            same = same and abs(exact.mean_cosine - sparse.mean_cosine) <= 1e-12
            differ += not same
            total += 1
            print(f"{name:32s} {subset:4s} n={exact.n_matched:5d} k={reached[-1]:4d} certified={sparse.certified} "
                  f"{'equal' if same else 'DIFFERENT'} (mean cosine {exact.mean_cosine:.4f})", flush=True)  # fmt: skip
    print(f"{total - differ}/{total} matchings equal to the exact assignment ({time.perf_counter() - start:.0f} s)")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
