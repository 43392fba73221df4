"""Choosing the sparsity penalty for a target L0 instead of by hand: bisection over short training runs.

The L1 coefficient λ of Eq. 3 that gives usable links depends on the model, the hook and the activation scale: the
default that suits the nano suite left every link of a 768-wide GPT-NeoX model dead. A researcher knows the sparsity
they want (an L0, active features per token) better than a λ, so :func:`calibrate_coefficient` finds the λ whose
short run reaches that L0 on held-out tokens:

1. **Bracket.** From a starting λ, multiply or divide by ``factor`` until one λ gives an L0 above the target and
   another below it (L0 falls as λ grows).
2. **Bisect** geometrically between them until a run's L0 is within ``tolerance`` of the target (relative).
3. **Refine at the full budget** (:func:`refine_coefficient`), when the short runs are shorter than the run the λ is
   for: L1 keeps sparsifying as training goes on (a 768-wide model's λ for L0 35 after 262k tokens gave L0 12 after
   1M), so a few runs of the full length correct λ by secant steps in log λ - log L0, starting from the short runs'
   slope.

Each run trains a fresh SAE from the same seed on the same tokens (:func:`short_run_l0`), so L0(λ) is a deterministic
function and the search reproducible. A target that cannot be bracketed is an error naming what to change: L0 that
stays near zero even at a small λ means the SAE dies (too few tokens, or a learning rate too low for them); L0 that
stays above the target at a large λ means the penalty cannot bite (too few tokens to sparsify).

Architectures (``ChainConfig.architecture``): the coefficient searched is the architecture's sparsity coefficient,
the L1 λ of ``"standard"`` or the L0-penalty coefficient of ``"jumprelu"``. ``"topk"`` and ``"batchtopk"`` need no
search: their L0 is ``k = round(target_l0)`` by construction (:attr:`ChainConfig.searches_coefficient` is false), and
:func:`short_run_l0` answers ``k`` for every coefficient without training.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from saetrack.config.chain import ChainConfig
from saetrack.sae.model import build_sae
from saetrack.sae.training import train_sae
from saetrack.sae.weights import feature_activations

__all__ = [
    "DEFAULT_TARGET_L0",
    "Calibration",
    "CalibrationError",
    "calibrate_coefficient",
    "default_target_l0",
    "log_slope",
    "refine_coefficient",
    "short_run_l0",
]


#: The L0 a chain is calibrated to when the user sets neither a target nor a penalty (a watched run): the sparsity a
#: penalty set by hand is usually tuned towards (a few tens of features per token), at most a quarter of the
#: activation's width (:func:`default_target_l0`) so that a narrow model still gets a sparse code.
DEFAULT_TARGET_L0 = 32.0


def default_target_l0(d_model: int) -> float:
    """The default target L0 of a model of width ``d_model``: ``min(DEFAULT_TARGET_L0, d_model / 4)``."""
    return min(DEFAULT_TARGET_L0, d_model / 4)


class CalibrationError(ValueError):
    """No coefficient reaches the target L0 within the runs allowed (the message says which way it failed)."""


@dataclass(frozen=True)
class Calibration:
    """The calibrated coefficient, the L0 its run reached, the target, and every run's ``(coefficient, L0)``."""

    coefficient: float
    l0: float
    target_l0: float
    runs: tuple[tuple[float, float], ...]

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready record for a manifest."""
        return {
            "coefficient": self.coefficient,
            "l0": self.l0,
            "target_l0": self.target_l0,
            "runs": [list(run) for run in self.runs],
        }


def _within(l0: float, target: float, tolerance: float) -> bool:
    return abs(l0 / target - 1.0) <= tolerance


def calibrate_coefficient(
    l0_at: Callable[[float], float],
    target_l0: float,
    start: float,
    *,
    tolerance: float = 0.1,
    factor: float = 4.0,
    max_runs: int = 16,
) -> Calibration:
    """The coefficient λ whose run reaches ``target_l0`` within ``tolerance`` (relative), found by bracketing from
    ``start`` by ``factor`` and bisecting geometrically; ``l0_at(λ)`` trains a short run and returns its L0 (L0 must
    fall as λ grows). Raises :class:`CalibrationError` after ``max_runs`` runs without reaching the target."""
    if not target_l0 > 0 or not start > 0 or not factor > 1 or not 0 < tolerance < 1:
        raise ValueError("target_l0 and start must be > 0, factor > 1 and tolerance in (0, 1).")
    runs: list[tuple[float, float]] = []

    def run(coefficient: float) -> float:
        if len(runs) >= max_runs:
            raise _exhausted(runs, target_l0)
        l0 = float(l0_at(coefficient))
        runs.append((coefficient, l0))
        return l0

    l0 = run(start)
    if _within(l0, target_l0, tolerance):
        return Calibration(start, l0, float(target_l0), tuple(runs))
    while True:  # bracket: a λ whose L0 is above the target (too weak) and one whose L0 is below it (too strong)
        weak = [c for c, v in runs if v > target_l0]
        strong = [c for c, v in runs if v < target_l0]
        if weak and strong:
            break
        coefficient = max(weak) * factor if not strong else min(strong) / factor
        l0 = run(coefficient)
        if _within(l0, target_l0, tolerance):
            return Calibration(coefficient, l0, float(target_l0), tuple(runs))
    # bracketing moves outward from the extremes, so every weak λ lies below every strong one
    low = max(c for c, v in runs if v > target_l0)
    high = min(c for c, v in runs if v < target_l0)
    while True:  # bisect geometrically (L0 falls as λ grows)
        middle = math.sqrt(low * high)
        l0 = run(middle)
        if _within(l0, target_l0, tolerance):
            return Calibration(middle, l0, float(target_l0), tuple(runs))
        low, high = (middle, high) if l0 > target_l0 else (low, middle)


def log_slope(runs: Sequence[tuple[float, float]], target_l0: float) -> float:
    """d log L0 / d log λ between the runs nearest ``target_l0`` from above and from below (``-1`` when the runs do
    not bracket it with positive L0s): the local power law of L0 in λ the refinement starts from."""
    above = [(c, v) for c, v in runs if v > target_l0]
    below = [(c, v) for c, v in runs if 0 < v < target_l0]
    if not above or not below:
        return -1.0
    (c1, v1), (c2, v2) = min(above, key=lambda r: r[1]), max(below, key=lambda r: r[1])
    slope = (math.log(v1) - math.log(v2)) / (math.log(c1) - math.log(c2))
    return slope if math.isfinite(slope) and slope < 0 else -1.0


def refine_coefficient(
    l0_at: Callable[[float], float],
    target_l0: float,
    start: float,
    slope: float,
    *,
    tolerance: float = 0.1,
    max_runs: int = 4,
    max_factor: float = 4.0,
) -> Calibration:
    """Correct ``start`` (a λ found on shorter runs) with at most ``max_runs`` runs of ``l0_at`` (full-length runs):
    each run's L0 moves log λ by ``(log target - log L0) / slope``, the slope re-estimated from the last two runs once
    there are two (a secant step), each step at most a factor ``max_factor``. Returns the first run within
    ``tolerance``, else the run whose L0 is nearest the target in ratio (the caller reports how near)."""
    if not start > 0 or not slope < 0 or max_runs < 1:
        raise ValueError("start must be > 0, slope < 0 and max_runs >= 1.")
    runs: list[tuple[float, float]] = []
    coefficient, log_target, bound = float(start), math.log(target_l0), math.log(max_factor)
    for _ in range(max_runs):
        l0 = float(l0_at(coefficient))
        runs.append((coefficient, l0))
        if _within(l0, target_l0, tolerance):
            break
        if len(runs) >= 2 and runs[-1][1] > 0 and runs[-2][1] > 0 and runs[-1][1] != runs[-2][1]:
            secant = (math.log(runs[-1][1]) - math.log(runs[-2][1])) / (math.log(runs[-1][0]) - math.log(runs[-2][0]))
            slope = secant if math.isfinite(secant) and secant < 0 else slope
        if l0 <= 0:  # a dead run: weaken λ by the bound
            change = -bound
        else:  # L0 ~ λ^slope: the change of log λ that would land on the target
            change = min(max((log_target - math.log(l0)) / slope, -bound), bound)
        coefficient = coefficient * math.exp(change)
    best = min(runs, key=lambda r: abs(math.log(max(r[1], 1e-9) / target_l0)))
    return Calibration(best[0], best[1], float(target_l0), tuple(runs))


def _exhausted(runs: list[tuple[float, float]], target: float) -> CalibrationError:
    """The error after the last allowed run: which way L0 failed, and what to change."""
    if all(v < target for _, v in runs) and max(v for _, v in runs) < 0.5:
        why = "L0 stays near zero even at the smallest λ: the SAE dies; give the first link more tokens or a higher lr"
    elif all(v > target for _, v in runs):
        why = "L0 stays above the target even at the largest λ: too few tokens to sparsify; give the first link more"
    else:
        why = "the runs did not land within the tolerance; allow a wider tolerance or more runs"
    return CalibrationError(f"no sparsity penalty reached L0 {target:g} ({_tried(runs)}): {why}.")


def _tried(runs: list[tuple[float, float]]) -> str:
    return ", ".join(f"λ={c:.3g}: L0 {v:.3g}" for c, v in runs)


def short_run_l0(
    x_train: np.ndarray,
    x_heldout: np.ndarray,
    chain: ChainConfig,
    to_sae_l1: Callable[[float], float],
    *,
    n_tokens: int,
    seed: int,
    device: str = "cpu",
) -> Callable[[float], float]:
    """``l0_at(λ)`` for :func:`calibrate_coefficient`: a fresh SAE of ``chain``'s architecture, shape and seed ``seed``
    (the first link's initialisation, Eq. 1-5) trained for ``n_tokens`` tokens of ``x_train`` with the SAELens
    sparsity coefficient ``to_sae_l1(λ)`` (the chain's normalisation of λ, Eq. 3; JumpReLU's L0 coefficient), its mean
    L0 measured on ``x_heldout`` with the architecture's own encoding. TopK and BatchTopK: ``k`` for every λ, with no
    training (their L0 is set by ``k``; a caller skips the search when ``chain.searches_coefficient`` is false)."""
    if chain.topk_k is not None:
        k = float(chain.topk_k)
        return lambda _coefficient: k
    heldout = torch.as_tensor(np.array(x_heldout, dtype=np.float32))  # a copy: the rows may be a read-only map

    def l0_at(coefficient: float) -> float:
        shaped = dataclasses.replace(chain, l1_coefficient=to_sae_l1(coefficient))
        sae = build_sae(x_train.shape[1], shaped, seed=seed, device=device)
        train_sae(
            sae, x_train, n_tokens=n_tokens, lr=chain.lr_first, warmup_steps=chain.warmup_steps_first,
            batch_size=chain.batch_size, seed=seed, keep_optimizer_state=False, progress=False,
        )  # fmt: skip
        acts = feature_activations(sae, heldout)
        return float((acts > 0).float().sum(dim=1).mean())

    return l0_at
