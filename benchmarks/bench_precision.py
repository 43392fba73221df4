"""Benchmark: SAE training with bf16 matrix products against fp32 (``ChainConfig.matmul_precision``), side by side.

The same seeded SAE (default d_in 64 -> d_sae 512, unit-norm decoder) is trained on the same seeded
:func:`~saetrack.sae.training.synthetic_activations` for the same steps with ``matmul_precision="fp32"`` and
``"bf16"`` (and ``"tf32"``, which on the CPU must equal fp32 bit for bit). Printed, as JSON:

* ``final_*``: the last logged training losses (MSE, L1) of each run and their relative difference;
* ``heldout_*``: MSE, explained variance, L1 and L0 of each final SAE on held-out rows (evaluated in float32) and
  relative differences;
* ``decoder_cosine_mean`` / ``_min``: cosine of each feature's decoder direction between the two runs (same
  initialisation, so feature ``i`` of one run is feature ``i`` of the other);
* ``bf16_time_ratio``: bf16 wall time over fp32 (best of ``--rounds``, interleaved). On the CPU the bf16 products are
  *emulated* (bf16-rounded operands multiplied in float32), so this ratio is > 1 and says nothing about a GPU, where
  the products run on bf16 tensor cores.

Run::

    python benchmarks/bench_precision.py                  # about a minute on one CPU core
    python benchmarks/bench_precision.py --steps 600 --d-in 128 --expansion 8
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from saetrack.config import ChainConfig
from saetrack.sae.model import SAETrackSAE, build_sae
from saetrack.sae.training import TrainResult, synthetic_activations, train_sae


def _train(x: np.ndarray, args: argparse.Namespace, precision: str) -> tuple[TrainResult, float]:
    """One seeded training run in ``precision``; returns the result and its wall time."""
    chain = ChainConfig(schedule=(0,), expansion_factor=args.expansion, l1_coefficient=args.l1, decoder_norm="unit")
    sae = build_sae(args.d_in, chain, seed=0, device=args.device)
    start = time.perf_counter()
    result = train_sae(sae, x, n_tokens=args.steps * args.batch, lr=args.lr, warmup_steps=20, batch_size=args.batch,
                       seed=1, matmul_precision=precision, log_every=10, progress=False)  # fmt: skip
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


@torch.no_grad()
def _heldout(sae: SAETrackSAE, x: torch.Tensor) -> dict[str, float]:
    """MSE (summed over dimensions, mean over rows), the fraction of variance explained (``1 - MSE / E||x - mean||^2``),
    L1 (Eq. 5: sum of activations) and L0 of ``sae`` on ``x``."""
    sae_in = x - sae.b_dec if sae.cfg.apply_b_dec_to_input else x
    feats = torch.relu(sae_in @ sae.W_enc + sae.b_enc)
    recon = feats @ sae.W_dec + sae.b_dec
    mse = (recon - x).pow(2).sum(-1).mean()
    return {
        "mse": float(mse),
        "explained_variance": float(1 - mse / (x - x.mean(0)).pow(2).sum(-1).mean()),
        "l1": float(feats.sum(-1).mean()),
        "l0": float((feats > 0).float().sum(-1).mean()),
    }


def _relative(a: float, b: float) -> float:
    return abs(b - a) / max(abs(a), 1e-30)


def main() -> None:
    """Train fp32, bf16 and tf32 side by side and print the differences (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d-in", type=int, default=64)
    parser.add_argument("--expansion", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--l1", type=float, default=1e-3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x, _ = synthetic_activations(args.steps * args.batch // 2 + 8192, args.d_in, seed=0)
    train_rows, heldout = x[:-8192], torch.from_numpy(x[-8192:]).to(args.device)
    runs: dict[str, TrainResult] = {}
    times: dict[str, float] = {"fp32": float("inf"), "bf16": float("inf")}
    for _ in range(args.rounds):  # interleaved, best of rounds
        for precision in ("fp32", "bf16"):
            runs[precision], wall = _train(train_rows, args, precision)
            times[precision] = min(times[precision], wall)
    runs["tf32"], _ = _train(train_rows, args, "tf32")
    exact, low = runs["fp32"], runs["bf16"]
    out: dict[str, Any] = {"shape": {"d_in": args.d_in, "d_sae": args.d_in * args.expansion, "batch": args.batch,
                                     "steps": args.steps, "device": args.device}}  # fmt: skip
    for key in ("mse_loss", "l1_loss"):
        a, b = exact.loss_curve[key][-1], low.loss_curve[key][-1]
        out[f"final_{key}"] = {"fp32": a, "bf16": b, "relative_difference": _relative(a, b)}
    held_exact, held_low = _heldout(exact.sae, heldout), _heldout(low.sae, heldout)
    for key in held_exact:
        a, b = held_exact[key], held_low[key]
        out[f"heldout_{key}"] = {"fp32": a, "bf16": b, "relative_difference": _relative(a, b)}
    cosines = torch.nn.functional.cosine_similarity(exact.sae.W_dec.detach(), low.sae.W_dec.detach(), dim=1)
    out["decoder_cosine_mean"], out["decoder_cosine_min"] = float(cosines.mean()), float(cosines.min())
    out["tf32_equals_fp32_bitwise"] = all(
        torch.equal(a, b) for a, b in zip(exact.sae.parameters(), runs["tf32"].sae.parameters(), strict=True)
    )
    out["bf16_time_ratio"] = times["bf16"] / times["fp32"]
    out["bf16_emulated"] = not args.device.startswith("cuda")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
