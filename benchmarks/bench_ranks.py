"""One process against a ``torchrun`` job of N ranks, data-parallel and ``--spread``: the same stages, side by side.

    python benchmarks/bench_ranks.py                                   # smoke, layers 0 and 1, chain stage, 2 ranks
    python benchmarks/bench_ranks.py --preset nano --set cache.layers=[1,3] --ranks 8 --device cuda --rounds 1
    python benchmarks/bench_ranks.py --only chain formation drift crosscoder --rounds 3 --out ranks.json

The inputs (``saetrack run --only cache``: corpus, model, every layer's activation cache) are built once; then each
round runs, in a rotating order and each on a fresh copy of those inputs, the same ``saetrack run --only <stages>``
three ways:

* ``one``: one process (``python -m saetrack run``), all of the machine's threads;
* ``data-parallel``: ``torchrun --standalone --nproc-per-node N -m saetrack run``: each link, baseline and crosscoder
  trained by all ranks together, then rank 0 runs the notebooks (:mod:`saetrack.pipeline.ranked`);
* ``spread``: the same with ``--spread``: each rank takes whole units (:mod:`saetrack.pipeline.spread`).

On a CPU each rank gets ``threads // N`` threads (``OMP_NUM_THREADS``); on CUDA each rank drives ``cuda:LOCAL_RANK``.
Printed: each way's wall time per round, the median ratios of the per-round times (``one / data-parallel``,
``one / spread``, ``data-parallel / spread``), the resource plan's projection of each way (``--plan --ranks N`` and
``--plan --spread --ranks N``, the job's wall time until rank 0 is done) and, as a check that the three did the same
work, the largest difference of the chain's weights from the one-process run (spread: 0, data-parallel: float32
sums in another order, below 1e-5 on smoke). Every notebook of the selected stages runs in every way, as in a real
job: what differs is who computes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from saetrack import paths

WAYS = ("one", "data-parallel", "spread")


def _saetrack_run(args: argparse.Namespace, run_dir: Path, *extra: str) -> list[str]:
    """``-m saetrack run`` with the benchmark's preset, device and overrides into ``run_dir``, and ``extra``."""
    overrides = [option for item in args.overrides for option in ("--set", item)]
    return ["-m", "saetrack", "run", "--preset", args.preset, "--device", args.device, "--run-dir", str(run_dir),
            "--quiet", *overrides, *extra]  # fmt: skip


def _command(way: str, args: argparse.Namespace, run_dir: Path, *extra: str) -> list[str]:
    """The command line of one way (``extra``: more ``saetrack run`` options)."""
    run = _saetrack_run(args, run_dir, *extra)
    if way == "one":
        return [sys.executable, "-u", *run]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(args.ranks)]
    return [*launcher, *run, *(["--spread"] if way == "spread" else [])]


def _environment(way: str, args: argparse.Namespace, figures: Path) -> dict[str, str]:
    """The way's environment: its threads per process on a CPU, figures written under the benchmark's folder."""
    threads = args.threads if way == "one" else max(1, args.threads // args.ranks)
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "SAETRACK_FIGURES": str(figures)}


def _run(command: list[str], env: dict[str, str]) -> float:
    """Run ``command``; its wall seconds (a failure prints its output's tail and exits)."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=paths.REPO_ROOT)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}\n{(done.stdout + done.stderr)[-3000:]}")
    return time.perf_counter() - started


def _chain_weights(run_dir: Path) -> dict[str, np.ndarray]:
    """Every chain weight under ``run_dir`` (every layer's), keyed by its path."""
    files = sorted(run_dir.rglob("chain/step*/sae_weights.safetensors"))
    return {f"{file.relative_to(run_dir)}:{name}": value for file in files for name, value in load_file(file).items()}


def _differences(weights: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, float]:
    """The largest weight difference from ``reference`` per link (``layer0/chain/step4``, ...)."""
    out: dict[str, float] = {}
    for key, value in reference.items():
        link = str(Path(key.split(":")[0]).parent)
        out[link] = max(out.get(link, 0.0), float(np.abs(weights[key] - value).max()))
    return out


def _projection(args: argparse.Namespace, root: Path, spread: bool) -> str:
    """The resource plan's projection of the job over ``args.ranks`` ranks: its ``total`` line (data-parallel) or its
    ``spread over`` line (a FLOP-rate lower bound; at smoke size it rounds to seconds of nothing)."""
    plan = ["--only", *args.only, "--plan", "--ranks", str(args.ranks), *(["--spread"] if spread else [])]
    done = subprocess.run([sys.executable, *_saetrack_run(args, root / "plan", *plan)], capture_output=True,
                          text=True, cwd=paths.REPO_ROOT)  # fmt: skip
    wanted = r"^spread over" if spread else r"^total\b"
    lines = [" ".join(line.split()) for line in done.stdout.splitlines() if re.search(wanted, line)]
    return lines[-1] if lines else (done.stdout + done.stderr)[-300:]


def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """The benchmark (module doc); its numbers."""
    inputs = root / "inputs"
    print(f"building the inputs once (saetrack run --only cache) in {inputs} ...", flush=True)
    _run(_command("one", args, inputs, "--only", "cache"), _environment("one", args, root / "figures"))
    seconds: dict[str, list[float]] = {way: [] for way in WAYS}
    weights: dict[str, dict[str, np.ndarray]] = {}
    for round_ in range(args.rounds):
        for way in WAYS[round_ % 3 :] + WAYS[: round_ % 3]:  # rotating order: drift on the machine hits all alike
            run_dir = root / f"{way}-{round_}"
            shutil.copytree(inputs, run_dir)
            seconds[way].append(_run(_command(way, args, run_dir, "--only", *args.only),
                                     _environment(way, args, root / f"figures-{way}")))  # fmt: skip
            print(f"round {round_ + 1}/{args.rounds}: {way:<13} {seconds[way][-1]:8.1f} s", flush=True)
            weights[way] = _chain_weights(run_dir)
            shutil.rmtree(run_dir)
    ratios = {
        f"{a} / {b}": statistics.median(x / y for x, y in zip(seconds[a], seconds[b], strict=True))
        for a, b in (("one", "data-parallel"), ("one", "spread"), ("data-parallel", "spread"))
    }
    differences = {way: _differences(weights[way], weights["one"]) for way in ("data-parallel", "spread")}
    assert all(weights[way].keys() == weights["one"].keys() for way in WAYS), "the ways trained different links"
    return {
        "preset": args.preset, "overrides": args.overrides, "only": args.only, "ranks": args.ranks,
        "device": args.device, "threads": args.threads, "rounds": args.rounds, "seconds": seconds,
        "median_ratios": ratios, "chain_weight_difference_from_one": differences,
        "projection": {"data-parallel": _projection(args, root, False), "spread": _projection(args, root, True)},
    }  # fmt: skip


def main() -> int:
    """Parse the options, run the benchmark in a temporary folder and print (and write) its numbers."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--set", dest="overrides", action="append", default=None, metavar="FIELD=VALUE",
                        help="a config override for every way (default: cache.layers=[0,1])")  # fmt: skip
    parser.add_argument("--only", nargs="+", default=["chain"], help="the stages timed (default: chain)")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads of the one process")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=None, help="write the numbers here (JSON)")
    args = parser.parse_args()
    args.overrides = ["cache.layers=[0,1]"] if args.overrides is None else args.overrides
    if args.ranks < 2 or args.rounds < 1:
        parser.error("--ranks must be at least 2 and --rounds at least 1")
    root = args.work or Path(tempfile.mkdtemp(prefix="bench_ranks_"))
    root.mkdir(parents=True, exist_ok=True)
    numbers = measure(args, root)
    print(json.dumps(numbers, indent=1))
    if args.out:
        args.out.write_text(json.dumps(numbers, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
