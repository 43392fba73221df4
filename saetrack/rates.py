"""The float32 matmul rates of a device, measured when a resource plan is made (:mod:`saetrack.resources` divides
each stage's FLOPs by them)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

__all__ = ["Rates", "measure_rates"]


@dataclass(frozen=True)
class Rates:
    """Measured float32 matmul rates of a device (FLOP/s) at an SAE step's and a model forward's shapes."""

    device: str
    sae_flops: float
    forward_flops: float


def measure_rates(device: str = "cpu", d_model: int = 512, d_sae: int = 4096, batch: int = 1024) -> Rates:
    """Measure the float32 matmul rate of ``device`` at an SAE step's shape and a forward's shape (best of 3)."""

    def rate(m: int, k: int, n: int) -> float:
        a = torch.randn(m, k, device=device)
        b = torch.randn(k, n, device=device)
        best = float("inf")
        for _ in range(3):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            a @ b
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        return 2 * m * k * n / best

    return Rates(device, rate(batch, d_model, d_sae), rate(batch, d_model, 4 * d_model))
