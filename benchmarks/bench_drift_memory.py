"""Peak host memory of the drift stage's decoder pass: the former ``[T, F, d]`` stack against one link at a time.

    python benchmarks/bench_drift_memory.py                       # T = 10 links, F = 16,384, d = 256
    python benchmarks/bench_drift_memory.py --links 29 --d-in 512 --expansion 64 --rounds 3

A chain of ``T`` SAELens-format links (random decoders drifting towards the last one) is written to a temporary
folder once. Each measurement runs in a fresh process: "old" stacks every decoder
(``stages.drift.decoder_stack``), takes the float64 ``analysis.drift.cosine_to_final`` of the stack and the sampled
features' rows from it; "new" is ``stages.drift.decoders.link_drift`` (the final link and one other in memory). Peak
host memory is measured two ways above the process's resident set before the pass (after the imports): the peak
resident set (``ru_maxrss``), which also counts the pages of the memory-mapped safetensors files the pass touched
(page cache, reclaimable; how many stay mapped varies with how recently the files were written), and the peak
anonymous resident memory (``RssAnon``, sampled every millisecond by a thread: the process's own allocations). Rounds
alternate old/new; both must give the same cosines and rows (checked, bit for bit). The new pass's anonymous peak is
printed beside ``drift_peak_bytes``' decoder terms (``2 F d 4 + 3 C d 8 + T F 8 + T n d 4``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saetrack.analysis.drift import COSINE_CHUNK_ROWS, cosine_to_final
from saetrack.config import get_preset
from saetrack.sae.io import save_sae
from saetrack.sae.model import build_sae
from saetrack.stages.drift import decoder_stack
from saetrack.stages.drift.decoders import link_drift

FEATURES = [0, 17, 123, 4000, 9001, 16000]


def write_chain(folder: Path, links: int, d_in: int, expansion: int, seed: int = 0) -> dict[int, Path]:
    """``links`` SAEs saved in ``folder``, decoders drifting towards the last one; step -> folder."""
    chain = get_preset("smoke").with_overrides({"chain.expansion_factor": expansion}).chain
    rng = np.random.default_rng(seed)
    final = rng.standard_normal((d_in * expansion, d_in)).astype(np.float32)
    folders = {}
    for t in range(links):
        sae = build_sae(d_in, chain, seed=t)
        noise = rng.standard_normal(final.shape).astype(np.float32)
        sae.W_dec.data = torch.from_numpy(final + (links - 1 - t) / links * noise)
        save_sae(sae, folder / f"step{t}")
        folders[t] = folder / f"step{t}"
    return folders


def _rss_bytes() -> int:
    """The current resident set of this process (Linux ``/proc``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _anon_bytes() -> int:
    """The current anonymous resident memory of this process (Linux ``/proc``)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))


class _AnonPeak(threading.Thread):
    """Samples :func:`_anon_bytes` every millisecond until stopped; ``peak`` is the largest value seen."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.done = _anon_bytes(), threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.001):
            self.peak = max(self.peak, _anon_bytes())


def _child(kind: str, folder: Path, links: int) -> None:
    """One pass in this (fresh) process: prints time, peak memory above the start and the results' digest."""
    torch.set_num_threads(1)
    folders = {t: folder / f"step{t}" for t in range(links)}
    before, anon_before, sampler = _rss_bytes(), _anon_bytes(), _AnonPeak()
    sampler.start()
    start = time.perf_counter()
    if kind == "old":
        stack = decoder_stack(folders, progress=False)
        cosine, rows = cosine_to_final(stack), stack[:, FEATURES].copy()
        del stack
    else:
        cosine, rows = link_drift(folders, FEATURES, progress=False)
    seconds = time.perf_counter() - start
    sampler.done.set()
    sampler.join()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    anon = max(sampler.peak, _anon_bytes()) - anon_before
    digest = [float(np.nansum(cosine)), float(np.nansum(np.abs(cosine))), float(rows.astype(np.float64).sum())]
    np.save(folder / f"{kind}_cosine.npy", cosine)
    print(json.dumps({"seconds": seconds, "peak_bytes": peak, "anon_peak_bytes": anon, "digest": digest}))


def _measure(kind: str, folder: Path, links: int) -> dict[str, Any]:
    """Run ``kind`` in a fresh subprocess; return its JSON line."""
    cmd = [sys.executable, __file__, f"--child={kind}", f"--folder={folder}", f"--links={links}"]
    return dict(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]))


def main() -> None:
    """Parse the arguments; run one child measurement, or write the chain, alternate rounds and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--links", type=int, default=10)
    parser.add_argument("--d-in", type=int, default=256)
    parser.add_argument("--expansion", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=("old", "new"), default=None)
    parser.add_argument("--folder", type=Path, default=None)
    args = parser.parse_args()
    if args.child:
        return _child(args.child, args.folder, args.links)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_chain(folder, args.links, args.d_in, args.expansion)
        runs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
        for r in range(args.rounds):
            for kind in ("old", "new") if r % 2 == 0 else ("new", "old"):
                runs[kind].append(_measure(kind, folder, args.links))
                m = runs[kind][-1]
                print(f"round {r} {kind}: peak RSS {m['peak_bytes'] / 1e6:,.0f} MB, anonymous "
                      f"{m['anon_peak_bytes'] / 1e6:,.0f} MB", file=sys.stderr)  # fmt: skip
        np.testing.assert_array_equal(np.load(folder / "old_cosine.npy"), np.load(folder / "new_cosine.npy"))
    assert runs["old"][0]["digest"] == runs["new"][0]["digest"], "old and new results differ"
    t, f, d = args.links, args.d_in * args.expansion, args.d_in
    formula = 2 * f * d * 4 + 3 * min(COSINE_CHUNK_ROWS, f) * d * 8 + t * f * 8 + t * len(FEATURES) * d * 4
    peak = {kind: max(m["peak_bytes"] for m in ms) for kind, ms in runs.items()}
    anon = {kind: max(m["anon_peak_bytes"] for m in ms) for kind, ms in runs.items()}
    best = {kind: min(m["seconds"] for m in ms) for kind, ms in runs.items()}
    print(json.dumps({
        "shape": {"links": t, "d_sae": f, "d_in": d, "sampled_features": len(FEATURES)}, "rounds": args.rounds,
        "stack_bytes_fp32": t * f * d * 4,
        "old_peak_rss_bytes": peak["old"], "new_peak_rss_bytes": peak["new"],
        "rss_ratio_old_over_new": peak["old"] / peak["new"],
        "old_peak_anon_bytes": anon["old"], "new_peak_anon_bytes": anon["new"],
        "anon_ratio_old_over_new": anon["old"] / anon["new"],
        "new_formula_bytes": formula, "new_anon_over_formula": anon["new"] / formula,
        "old_s": best["old"], "new_s": best["new"], "identical_results": True,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
