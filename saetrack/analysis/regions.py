"""Feature regions in a toy 2-D activation space (Sec. 5.1, Def. 5.1-5.3, Eq. 8-11; the paper's Fig. 3).

For a standard SAE (Eq. 2) feature ``i`` fires at ``x`` with activation
``f_i(x) = ReLU(W_hat_i . x + b_hat_i)`` (Eq. 8), where ``W_hat_i = W_enc[:, i]`` and
``b_hat_i = b_enc[i] - c * W_enc[:, i] . b_dec``. Its *feature region* (Def. 5.1, Eq. 9) is the half-space
``{x : W_hat_i . x + b_hat_i > 0}``; the region *with activation level* ``[L, U)`` (Def. 5.2, Eq. 10) is the slab
``{x : L <= f_i(x) < U}``; the *faithful* region (Def. 5.3, Eq. 11) is ``R_i^[L_i, inf)``.

The paper does not say how ``L_i`` is chosen. Here ``L_i`` is the median (50% quantile) of feature ``i``'s
positive activations on the data it was trained on, so the faithful region holds the upper half of the points
that activate the feature; a feature that never fires gets ``L_i = inf`` (an empty faithful region).

:func:`toy_feature_regions` trains a small SAELens SAE (``d_in = 2``) on :func:`toy_activations` and evaluates
the pre-activations on a grid, for :func:`saetrack.plots.feature_regions_figure`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from saetrack.config.chain import ChainConfig
from saetrack.runtime import torch_threads
from saetrack.sae.model import build_sae
from saetrack.sae.training import train_sae
from saetrack.sae.weights import SAEWeights

__all__ = [
    "THRESHOLD_QUANTILE",
    "TOY_ANGLES_DEG",
    "ToyRegions",
    "faithful_thresholds",
    "pre_activations",
    "toy_activations",
    "toy_feature_regions",
]


#: Angles (degrees) of the three ground-truth unit directions of the toy data.
TOY_ANGLES_DEG: tuple[float, float, float] = (90.0, 210.0, 330.0)

#: Quantile of a feature's positive activations used as its faithful threshold L_i (Def. 5.3).
THRESHOLD_QUANTILE = 0.5


def toy_activations(
    n: int,
    seed: int,
    *,
    firing_probability: float = 0.3,
    noise: float = 0.05,
) -> np.ndarray:
    """``n`` synthetic 2-D activations ``x = sum_k a_k d_k + noise`` (float32, ``[n, 2]``).

    ``d_k`` are the unit directions at :data:`TOY_ANGLES_DEG`; each coefficient ``a_k`` is non-zero with
    ``firing_probability`` (independently), with magnitude uniform in ``[0.5, 2)``; the noise is isotropic
    Gaussian with standard deviation ``noise``. Seeded by ``seed`` (``numpy.random.default_rng``).
    """
    if n <= 0:
        raise ValueError(f"n = {n} is invalid: must be > 0.")
    if not 0.0 < firing_probability <= 1.0:
        raise ValueError(f"firing_probability = {firing_probability} is invalid: must be in (0, 1].")
    if noise < 0:
        raise ValueError(f"noise = {noise} is invalid: must be >= 0.")
    rng = np.random.default_rng(seed)
    angles = np.deg2rad(np.asarray(TOY_ANGLES_DEG))
    directions = np.stack([np.cos(angles), np.sin(angles)], axis=1)  # [3, 2]
    active = rng.random((n, 3)) < firing_probability
    magnitudes = rng.uniform(0.5, 2.0, size=(n, 3)) * active
    x = magnitudes @ directions + noise * rng.standard_normal((n, 2))
    return x.astype(np.float32)


def pre_activations(weights: SAEWeights, x: np.ndarray) -> np.ndarray:
    """The pre-activation ``W_hat_i . x + b_hat_i`` (Eq. 8) of every feature at every row of ``x`` (``[n, F]``).

    Computed as ``(x - c * b_dec) @ W_enc + b_enc`` with ``c = weights.apply_b_dec_to_input``.
    """
    w_enc = weights.W_enc.detach().cpu().double().numpy()
    b_enc = weights.b_enc.detach().cpu().double().numpy()
    b_dec = weights.b_dec.detach().cpu().double().numpy()
    c = 1.0 if weights.apply_b_dec_to_input else 0.0
    return (np.asarray(x, dtype=np.float64) - c * b_dec) @ w_enc + b_enc


def faithful_thresholds(activations: np.ndarray, quantile: float = THRESHOLD_QUANTILE) -> np.ndarray:
    """``L_i`` of Def. 5.3 for every feature: the ``quantile`` of its positive activations (``inf`` if it never fires).

    ``activations`` is ``[n, F]`` (post-ReLU feature activations on the data).
    """
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile = {quantile} is invalid: must be in [0, 1].")
    thresholds = np.full(activations.shape[1], np.inf)
    for i in range(activations.shape[1]):
        positive = activations[:, i][activations[:, i] > 0]
        if positive.size:
            thresholds[i] = float(np.quantile(positive, quantile))
    return thresholds


@dataclass
class ToyRegions:
    """A toy SAE's feature regions on a 2-D grid (inputs of Fig. 3)."""

    #: The data points the SAE was trained on, ``[n, 2]``.
    points: np.ndarray
    #: Grid coordinates along x (``[W]``) and y (``[H]``).
    grid_x: np.ndarray
    grid_y: np.ndarray
    #: ``W_hat_i . x + b_hat_i`` (Eq. 8) at every grid point, ``[F, H, W]``.
    pre_activation: np.ndarray
    #: Faithful thresholds ``L_i`` (Def. 5.3), ``[F]``: median positive activation on the data; ``inf`` if dead.
    thresholds: np.ndarray
    #: The three most frequently active features (shown in the figure), most frequent first.
    features: list[int]
    #: The SAE's weights (for recomputing the pre-activation).
    weights: SAEWeights

    def faithful_mask(self, feature: int) -> np.ndarray:
        """Boolean ``[H, W]`` mask of the faithful region ``{pre >= L_i}`` (Def. 5.3, Eq. 11) of ``feature``."""
        return self.pre_activation[feature] >= self.thresholds[feature]


def toy_feature_regions(
    seed: int = 0,
    n: int = 4000,
    d_sae: int = 6,
    *,
    n_steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-2,
    l1_coefficient: float = 0.1,
    grid_size: int = 200,
    device: str = "cpu",
) -> ToyRegions:
    """Train a ``2 -> d_sae`` SAE on :func:`toy_activations` and evaluate its feature regions on a grid.

    The SAE is SAE-Track's standard SAE (unit-norm decoder, Eq. 5, plain L1 ``l1_coefficient``) trained with
    :func:`saetrack.sae_training.train_sae` for ``n_steps`` batches. Returns the pre-activations (Eq. 8) of all
    features on a ``grid_size x grid_size`` grid spanning the data (plus a 10% margin), the thresholds ``L_i``
    (:func:`faithful_thresholds`) and the three features that fire most often on the data.
    """
    if d_sae < 3 or d_sae % 2:
        raise ValueError(f"d_sae = {d_sae} is invalid: must be an even number >= 3 (d_sae = expansion * d_in = 2k).")
    if grid_size < 2:
        raise ValueError(f"grid_size = {grid_size} is invalid: must be >= 2.")
    points = toy_activations(n, seed)
    chain = ChainConfig(schedule=(0,), expansion_factor=d_sae // 2, l1_coefficient=l1_coefficient, l1_scale="none")
    sae = build_sae(2, chain, seed=seed, device=device)
    with torch_threads(1):  # a 2 -> 6 SAE: one thread avoids the OpenMP overhead that dominates at this size
        train_sae(
            sae,
            points,
            n_tokens=n_steps * batch_size,
            lr=lr,
            warmup_steps=min(100, n_steps // 10),
            batch_size=batch_size,
            seed=seed,
            progress=False,
            desc="toy SAE",
        )
    weights = SAEWeights.from_sae(sae)
    acts = np.maximum(pre_activations(weights, points), 0.0)
    frequency = (acts > 0).mean(axis=0)
    features = [int(i) for i in np.argsort(-frequency, kind="stable")[:3]]
    lo, hi = points.min(axis=0), points.max(axis=0)
    margin = 0.1 * (hi - lo)
    grid_x = np.linspace(lo[0] - margin[0], hi[0] + margin[0], grid_size)
    grid_y = np.linspace(lo[1] - margin[1], hi[1] + margin[1], grid_size)
    xx, yy = np.meshgrid(grid_x, grid_y)  # [H, W]
    grid = np.stack([xx.ravel(), yy.ravel()], axis=1)
    pre = pre_activations(weights, grid).T.reshape(-1, grid_size, grid_size)
    with torch.no_grad():
        weights = SAEWeights(
            W_enc=weights.W_enc.detach().cpu().clone(),
            b_enc=weights.b_enc.detach().cpu().clone(),
            W_dec=weights.W_dec.detach().cpu().clone(),
            b_dec=weights.b_dec.detach().cpu().clone(),
            apply_b_dec_to_input=weights.apply_b_dec_to_input,
        )
    return ToyRegions(
        points=points,
        grid_x=grid_x,
        grid_y=grid_y,
        pre_activation=pre,
        thresholds=faithful_thresholds(acts),
        features=features,
        weights=weights,
    )
