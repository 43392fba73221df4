"""Feature drift (paper Sec. 6): decoder cosine to final, formation times, trajectories and training phases.

* :func:`cosine_to_final` — Sec. 6.1 / Fig. 6: cosine between feature i's decoder direction at checkpoint t and at
  the final checkpoint, index i against index i (the chain's recurrent initialisation keeps identities), for a
  ``[T, F, d]`` stack in float64; :func:`link_cosine_to_final` is the same numbers for one link at a time, a few
  thousand rows in float64 at once, on the tensors' own device (what the drift stage uses: it never holds more than
  two links).
* :func:`formed_mask` and :func:`formation_times` — when a feature gains the semantics it keeps to the end,
  built on the token/concept labels (Def. 4.1-4.2) and the progress measure (Def. 5.4) of notebook 03.
* :func:`trajectory_projection` — Def. 6.1 / Fig. 7: a feature's decoder vectors across checkpoints in 2-D (PCA).
* :func:`beyond_noise_floor` — which checkpoints drift further from the final direction than SAE training alone
  moves it (the drift noise floor: links retrained on the unchanged final checkpoint, Fig. 6a).
* :func:`detect_phases` — the three phases of Sec. 4.1 (Initialization & Warmup, Emergent, Convergent) as the two
  knots of the best continuous three-segment linear fit of a curve; :func:`phase_agreement` compares two sets.
  Both live in :mod:`saetrack.analysis.phases` (with the 1-to-6-segment comparison by BIC) and
  are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from saetrack.analysis.phases import PHASE_NAMES, Phases, detect_phases, phase_agreement, phase_labels

__all__ = [
    "COSINE_CHUNK_ROWS",
    "PHASE_NAMES",
    "Phases",
    "beyond_noise_floor",
    "cosine_to_final",
    "detect_phases",
    "formation_times",
    "formed_mask",
    "link_cosine_to_final",
    "phase_agreement",
    "phase_labels",
    "sample_features",
    "torch_link_cosine",
    "trajectory_projection",
]


def cosine_to_final(decoders: np.ndarray) -> np.ndarray:
    """Cosine between each feature's decoder vector at every checkpoint and at the last one (Sec. 6.1, Fig. 6).

    Args:
        decoders: ``[T, F, d]``, row i of ``W_dec`` (the paper's column ``W^dec_{:,i}``) of each of T links.

    Returns:
        ``[T, F]``; the last row is 1 for every non-zero decoder vector. A zero vector gives NaN.
    """
    w = np.asarray(decoders, dtype=np.float64)
    if w.ndim != 3:
        raise ValueError(f"decoders must be [T, F, d], got shape {w.shape}.")
    norms = np.linalg.norm(w, axis=-1)
    dots = np.einsum("tfd,fd->tf", w, w[-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dots / (norms * norms[-1])
    cos[(norms == 0) | (norms[-1] == 0)[None, :]] = np.nan
    return np.clip(cos, -1.0, 1.0)


#: Rows of a link's decoder compared at a time by :func:`link_cosine_to_final` (bounds its float64 temporaries).
COSINE_CHUNK_ROWS = 4096


def link_cosine_to_final(decoder: torch.Tensor | np.ndarray, final: torch.Tensor | np.ndarray) -> np.ndarray:
    """One row of :func:`cosine_to_final` (Sec. 6.1, Fig. 6): each feature's decoder cosine between one link and the
    final link, ``[F]`` float64, from two ``[F, d]`` decoders (``W_dec`` rows, arrays or tensors of any float dtype).

    The rows are compared :data:`COSINE_CHUNK_ROWS` at a time in float64, so only those rows are ever copied to
    float64. On the CPU (arrays, CPU tensors) this is :func:`cosine_to_final`'s own computation row for row: the same
    numbers, bit for bit. Tensors on an accelerator are compared there, in float64 (float32 on Apple's ``mps``, which
    has no float64: within 1e-5 of the float64 value). A zero vector on either side gives NaN; values are clipped to
    [-1, 1].
    """
    if decoder.ndim != 2 or tuple(decoder.shape) != tuple(final.shape):
        raise ValueError(f"decoder and final must share one [F, d] shape, got {tuple(decoder.shape)} and "
                         f"{tuple(final.shape)}.")  # fmt: skip
    on_device = [x.device for x in (decoder, final) if isinstance(x, torch.Tensor) and x.device.type != "cpu"]
    if on_device:
        dtype = torch.float32 if on_device[0].type == "mps" else torch.float64
        return torch_link_cosine(*(torch.as_tensor(x, device=on_device[0]).detach() for x in (decoder, final)), dtype)
    a, b = (x.detach().numpy() if isinstance(x, torch.Tensor) else x for x in (decoder, final))
    out = np.empty(a.shape[0])
    for lo in range(0, a.shape[0], COSINE_CHUNK_ROWS):
        w, f = (np.asarray(x[lo : lo + COSINE_CHUNK_ROWS], dtype=np.float64) for x in (a, b))
        norm_w, norm_f = np.linalg.norm(w, axis=-1), np.linalg.norm(f, axis=-1)  # as cosine_to_final, row for row
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = np.einsum("fd,fd->f", w, f) / (norm_w * norm_f)
        cos[(norm_w == 0) | (norm_f == 0)] = np.nan
        out[lo : lo + COSINE_CHUNK_ROWS] = np.clip(cos, -1.0, 1.0)
    return out


@torch.no_grad()
def torch_link_cosine(decoder: torch.Tensor, final: torch.Tensor, dtype: torch.dtype = torch.float64) -> np.ndarray:
    """:func:`link_cosine_to_final` of two ``[F, d]`` tensors on their own device, :data:`COSINE_CHUNK_ROWS` rows at
    a time in ``dtype`` (dot products as batched ``[1, d] @ [d, 1]`` products, no ``[F, d]`` temporary): ``[F]``
    float64 on the host. Float64 agrees with :func:`cosine_to_final` to ~1e-15, float32 to float32 rounding."""
    out = torch.empty(decoder.shape[0], dtype=dtype, device=decoder.device)
    for lo in range(0, decoder.shape[0], COSINE_CHUNK_ROWS):
        a, b = decoder[lo : lo + COSINE_CHUNK_ROWS].to(dtype), final[lo : lo + COSINE_CHUNK_ROWS].to(dtype)
        dots, norm_a, norm_b = (torch.einsum("fd,fd->f", x, y) for x, y in ((a, b), (a, a), (b, b)))
        norm_a, norm_b = norm_a.sqrt(), norm_b.sqrt()
        cos = torch.where((norm_a == 0) | (norm_b == 0), torch.full_like(dots, float("nan")), dots / (norm_a * norm_b))
        out[lo : lo + COSINE_CHUNK_ROWS] = cos.clamp(-1.0, 1.0)
    return out.cpu().numpy().astype(np.float64)


def formed_mask(
    labels: np.ndarray,
    dominant: np.ndarray,
    progress: np.ndarray,
    formed_fraction: float = 0.5,
) -> np.ndarray:
    """Whether each feature has its final semantics at each checkpoint (the rule behind Fig. 7's colours).

    Feature i counts as formed at checkpoint t when (1) its label at t equals its final label, which is
    ``"token"`` or ``"concept"`` (Def. 4.1-4.2), (2) for a token-level feature, its dominant token at t is the
    final one, and (3) its progress measure M_i(t) (Def. 5.4) is at least ``formed_fraction`` of M_i(final),
    which must be positive (its final datapoints are more alike than random ones).

    Args:
        labels: ``[T, F]`` "token" / "concept" / "inactive" per checkpoint.
        dominant: ``[T, F]`` dominant token id per checkpoint.
        progress: ``[T, F]`` progress measure M_i(t) (NaN allowed: not formed there).
        formed_fraction: the share of the final progress measure that counts as formed.

    Returns:
        ``[T, F]`` boolean.
    """
    labels, dominant = np.asarray(labels), np.asarray(dominant)
    progress = np.asarray(progress, dtype=np.float64)
    if not labels.shape == dominant.shape == progress.shape or labels.ndim != 2:
        raise ValueError(
            f"labels, dominant and progress must share one [T, F] shape; got {labels.shape}, {dominant.shape}, "
            f"{progress.shape}."
        )
    if not 0 < formed_fraction <= 1:
        raise ValueError(f"formed_fraction must lie in (0, 1], got {formed_fraction}.")
    final_label, final_progress = labels[-1], progress[-1]
    same_label = (labels == final_label[None, :]) & np.isin(final_label, ("token", "concept"))[None, :]
    same_token = (final_label != "token")[None, :] | (dominant == dominant[-1][None, :])
    with np.errstate(invalid="ignore"):
        coherent = (final_progress > 0)[None, :] & (progress >= formed_fraction * final_progress[None, :])
    return same_label & same_token & coherent


def formation_times(formed: np.ndarray, flicker: int = 0) -> np.ndarray:
    """Formation time of each feature: the first checkpoint index from which it stays formed to the end.

    ``formed`` is ``[T, F]`` (see :func:`formed_mask`). A feature that is not formed at the final checkpoint never
    formed and gets -1. ``flicker`` tolerates runs of at most that many consecutive unformed checkpoints after the
    formation time (a one-checkpoint dip of a noisy measure does not restart the clock); 0 is the strict rule.
    """
    formed = np.asarray(formed, dtype=bool)
    if formed.ndim != 2 or formed.shape[0] == 0:
        raise ValueError(f"formed must be a non-empty [T, F] array, got shape {formed.shape}.")
    if flicker < 0:
        raise ValueError(f"flicker must be >= 0, got {flicker}.")
    bridged = formed.copy()
    if flicker:
        # an unformed run of <= flicker checkpoints with formed checkpoints on both sides counts as formed
        n = formed.shape[0]
        for length in range(1, flicker + 1):
            for start in range(1, n - length):
                gap = ~formed[start : start + length].any(axis=0)
                bridged[start : start + length] |= (gap & formed[start - 1] & formed[start + length])[None, :]
    # stays_formed[t] = formed at every checkpoint >= t (a reversed cumulative AND)
    stays_formed = np.flip(np.logical_and.accumulate(np.flip(bridged, axis=0), axis=0), axis=0)
    first = np.argmax(stays_formed, axis=0)
    return np.where(formed[-1] & stays_formed[-1], first, -1).astype(np.int64)


def trajectory_projection(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Def. 6.1 / Fig. 7: one feature's decoder directions across checkpoints projected on their first two PCs.

    ``vectors`` is ``[T, d]`` (the feature's decoder vector at each checkpoint); each is scaled to unit length (the
    feature's direction, Sec. 6.1), centred over checkpoints and projected by PCA fitted on this trajectory alone.
    Returns the ``[T, 2]`` coordinates and the share of the trajectory's variance each axis explains.
    """
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] < 2:
        raise ValueError(f"vectors must be [T >= 2, d], got shape {v.shape}.")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    unit = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
    centred = unit - unit.mean(axis=0)
    _, sing, vt = np.linalg.svd(centred, full_matrices=False)
    total = float(np.sum(sing**2))
    k = min(2, vt.shape[0])
    coords = np.zeros((v.shape[0], 2))
    coords[:, :k] = centred @ vt[:k].T
    ratio = np.zeros(2)
    if total > 0:
        ratio[:k] = sing[:k] ** 2 / total
    # a fixed sign: the trajectory ends on the positive side of each axis
    signs = np.where(coords[-1] - coords[0] < 0, -1.0, 1.0)
    return coords * signs, ratio


def sample_features(candidates: Sequence[int], n: int, seed: int) -> np.ndarray:
    """``n`` features drawn without replacement from ``candidates`` with ``numpy.random.default_rng(seed)``, sorted."""
    pool = np.asarray(candidates, dtype=np.int64)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}.")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(pool, size=min(n, pool.size), replace=False)) if pool.size else pool


def beyond_noise_floor(median_cosine: Sequence[float], floor_low: Sequence[float]) -> np.ndarray:
    """Whether each checkpoint's median decoder cosine to final lies below the drift noise floor (Fig. 6a).

    ``median_cosine`` is ``[T]`` (the real chain); ``floor_low`` is ``[M]``: a low quantile (e.g. 5%) over features
    of the cosine between the final SAE and a chain of ``m = 1..M`` links retrained on the unchanged final
    checkpoint. Checkpoint ``t`` is ``m = T - 1 - t`` links before the final, so it is compared with
    ``floor_low[m - 1]``; True means drift beyond what SAE training alone causes. The final checkpoint and
    checkpoints more than M links back (no floor) are False.
    """
    real = np.asarray(median_cosine, dtype=np.float64)
    floor = np.asarray(floor_low, dtype=np.float64)
    if real.ndim != 1 or floor.ndim != 1:
        raise ValueError(f"median_cosine and floor_low must be 1-D, got {real.shape} and {floor.shape}.")
    distance = real.size - 1 - np.arange(real.size)
    has_floor = (distance >= 1) & (distance <= floor.size)
    below = np.zeros(real.size, dtype=bool)
    with np.errstate(invalid="ignore"):
        below[has_floor] = real[has_floor] < floor[distance[has_floor] - 1]
    return below
