"""Every feature's top contexts at every checkpoint with the feature's activation on each token of the window.

The formation stage stores each feature's top-k analysis datapoints per checkpoint (their rows and activations, Sec. 4)
but not the activations of the tokens around them. The explorer shades every token of a context by the feature's
activation ``f_i(x) = ReLU((x - b_dec) W_enc[:, i] + b_enc[i])`` (Eq. 2) on it, as Fig. 2's cells would if they were
shaded, so this module recomputes those activations link by link.

**One pass over each checkpoint's analysis set, per feature only its own column.** The (feature, row) pairs are sorted
by row and read in blocks of the analysis set, so a streamed checkpoint (:class:`~saetrack.data.stream.LazyActivations`)
runs each forward batch at most once, and only the batches holding a shown row. Each pair costs one dot product of
``d_in`` (the feature's encoder column), never a full ``[rows, d_sae]`` encoding. The activating token's recomputed
activation is checked against the formation stage's stored value: a mismatch means the links or the analysis set
changed under the formation stage, and raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from saetrack.sae.weights import SAEWeights

__all__ = [
    "SHADES",
    "ContextWindows",
    "check_activating_tokens",
    "context_windows",
    "pair_activations",
    "shade",
    "window_rows",
]

#: Shading is stored as a share of the feature's top activation at that checkpoint, in levels 0..SHADES (one
#: character each in a feature page, :data:`saetrack.stages.explorer.pages.SHADE_ALPHABET`).
SHADES = 63
#: Rows of the analysis set read at once (one block holds at most this many activations in host memory).
BLOCK_ROWS = 65_536
#: (feature, row) pairs whose dot products are formed at once on the device.
PAIR_CHUNK = 131_072


@dataclass(frozen=True)
class ContextWindows:
    """The top contexts of every feature at every checkpoint (``T`` checkpoints, ``F`` features, ``C`` contexts, ``W``
    tokens per window): what a feature page shows for Fig. 2's cells at any checkpoint."""

    #: flat analysis row of each context's activating token ``[T, F, C]`` (-1: fewer than C active datapoints)
    rows: np.ndarray
    #: the feature's activation on it (the formation stage's ``top_values``) ``[T, F, C]``
    values: np.ndarray
    #: activation on every window token as a share of the feature's top activation at that checkpoint, in
    #: ``0..SHADES`` (255: the window runs past its context's edge) ``[T, F, C, W]``
    shading: np.ndarray
    #: the window's offsets from the activating token ``[W]``
    offsets: np.ndarray
    #: the activations themselves ``[T, F, C, W]`` (float32, 0 outside the context), kept only when asked for
    activations: np.ndarray | None = None


def window_rows(top_rows: np.ndarray, offsets: np.ndarray, context_length: int) -> tuple[np.ndarray, np.ndarray]:
    """The analysis rows of every window ``[..., W]`` around the datapoints ``top_rows`` ``[...]`` (flat rows
    ``c * context_length + q``; negative: no datapoint), and which of them lie inside the datapoint's own context."""
    top = np.asarray(top_rows, dtype=np.int64)[..., None]
    rows = top + np.asarray(offsets, dtype=np.int64)
    position = top % context_length + np.asarray(offsets, dtype=np.int64)
    valid = (top >= 0) & (position >= 0) & (position < context_length)
    return np.where(valid, rows, -1), valid


def _blocks(sorted_rows: np.ndarray, block_rows: int) -> Iterator[tuple[int, int]]:
    """``(first, stop)`` index ranges of ``sorted_rows`` falling in consecutive ``block_rows``-row blocks."""
    if sorted_rows.size == 0:
        return
    block_of = sorted_rows // block_rows
    starts = np.flatnonzero(np.r_[True, block_of[1:] != block_of[:-1]])
    for first, stop in zip(starts, np.r_[starts[1:], sorted_rows.size], strict=True):
        yield int(first), int(stop)


@torch.no_grad()
def pair_activations(
    weights: SAEWeights,
    read_rows: Callable[[np.ndarray], np.ndarray],
    rows: np.ndarray,
    features: np.ndarray,
    *,
    block_rows: int = BLOCK_ROWS,
    pair_chunk: int = PAIR_CHUNK,
) -> np.ndarray:
    """The activation ``f_i(x_r)`` (Eq. 2) of feature ``features[p]`` on analysis row ``rows[p]`` for every pair ``p``.

    ``read_rows(sorted_unique_rows)`` returns those rows' activations ``[n, d_in]`` (a memory map or a streamed
    checkpoint indexed with the rows). Rows are read block by block in order, so each is read once; each pair costs one
    dot product with the feature's encoder column on the weights' device. Returns float32 ``[P]``.
    """
    rows, features = np.asarray(rows, dtype=np.int64), np.asarray(features, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    out = np.zeros(rows.size, dtype=np.float32)
    device = weights.W_enc.device
    encoder = weights.W_enc.T  # [d_sae, d_in]: feature i's column as a row
    shift = weights.b_dec if weights.apply_b_dec_to_input else torch.zeros_like(weights.b_dec)
    for first, stop in _blocks(rows[order], block_rows):
        chosen = order[first:stop]
        unique, where = np.unique(rows[chosen], return_inverse=True)
        x = torch.as_tensor(np.asarray(read_rows(unique), dtype=np.float32), device=device)
        x = x.to(encoder.dtype) - shift
        for start in range(0, chosen.size, pair_chunk):
            part = chosen[start : start + pair_chunk]
            f = torch.as_tensor(features[part], device=device)
            r = torch.as_tensor(where[start : start + pair_chunk], device=device)
            pre = (x[r] * encoder[f]).sum(dim=1) + weights.b_enc[f]
            out[part] = torch.relu(pre).float().cpu().numpy()
    return out


def check_activating_tokens(recomputed: np.ndarray, stored: np.ndarray, step: int, rtol: float = 1e-3) -> None:
    """Raise when the activating tokens' recomputed activations ``[F, C]`` differ from the formation stage's stored
    top-k activations ``stored`` ``[F, C]`` (the links or the analysis set changed since the formation stage ran).

    The allowed difference is ``rtol`` of each feature's top activation, or of the link's median top activation when
    that is larger: float32 sums in another order differ by a share of the terms' size, not of a near-zero result.
    """
    tops = np.abs(stored[:, 0]) if stored.size else np.zeros(0)
    typical = float(np.median(tops[tops > 0])) if np.any(tops > 0) else 1.0
    scale = np.maximum(tops, typical)[:, None]
    error = np.abs(recomputed - stored) / scale
    worst = float(np.nanmax(error)) if error.size else 0.0
    if worst > rtol:
        feature = int(np.unravel_index(int(np.nanargmax(error)), error.shape)[0])
        raise RuntimeError(
            f"at step {step} the recomputed activation of feature {feature} on its top datapoint differs from the "
            f"formation stage's by {100 * worst:.2f}% of its scale (its top activation, or the link's median top "
            f"activation if larger; allowed {100 * rtol:.2f}%): the chain or the analysis set changed after notebook "
            "03 ran; rerun notebook 03 (formation) first."
        )


def shade(activations: np.ndarray, top: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Activations ``[..., W]`` as shares of the top activation ``top`` ``[..., 1]`` in ``0..SHADES`` (uint8);
    tokens outside ``valid`` get 255."""
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(top > 0, activations / top, 0.0)
    levels = np.clip(np.rint(share * SHADES), 0, SHADES).astype(np.uint8)
    return np.where(valid, levels, np.uint8(255))


def context_windows(
    analysis: Callable[[int], Any],
    link_weights: Callable[[int], SAEWeights],
    steps: Sequence[int],
    top_values: np.ndarray,
    top_indices: np.ndarray,
    *,
    context_length: int,
    n_contexts: int,
    before: int,
    after: int,
    progress: bool = False,
    keep_activations: bool = False,
) -> ContextWindows:
    """The first ``n_contexts`` top datapoints of every feature at every checkpoint (``top_values`` / ``top_indices``
    ``[T, F, k]`` of the formation stage), each with the ``before`` tokens before and ``after`` after it shaded by the
    feature's activation (Eq. 2) under that checkpoint's link.

    ``analysis(step)`` is the checkpoint's analysis set (indexable by row arrays), ``link_weights(step)`` its link on
    the device the dot products run on. One link and one block of rows are held at a time. ``keep_activations`` also
    returns the activations themselves (float32, ``T x F x C x W``: for an export, not for the site).
    """
    values = np.asarray(top_values[:, :, :n_contexts], dtype=np.float32)
    rows = np.where(values > 0, np.asarray(top_indices[:, :, :n_contexts]), -1).astype(np.int64)
    values = np.where(rows >= 0, values, 0.0).astype(np.float32)
    offsets = np.arange(-before, after + 1, dtype=np.int64)
    n_steps, n_features = values.shape[:2]
    shading = np.full((n_steps, n_features, n_contexts, offsets.size), 255, dtype=np.uint8)
    kept = np.zeros(shading.shape, dtype=np.float32) if keep_activations else None
    features = np.broadcast_to(np.arange(n_features)[:, None, None], (n_features, n_contexts, offsets.size))
    for t, step in enumerate(tqdm(steps, desc="explorer contexts", unit="link", disable=not progress)):
        windows, valid = window_rows(rows[t], offsets, context_length)
        acts = analysis(int(step))
        flat = pair_activations(link_weights(int(step)), lambda r, acts=acts: acts[r], windows[valid], features[valid])
        activation = np.zeros(windows.shape, dtype=np.float32)
        activation[valid] = flat
        check_activating_tokens(np.where(rows[t] >= 0, activation[:, :, before], 0.0), values[t], int(step))
        shading[t] = shade(activation, values[t][:, :1, None], valid)
        if kept is not None:
            kept[t] = activation
    return ContextWindows(rows=rows, values=values, shading=shading, offsets=offsets, activations=kept)
