"""The drift stage's pass over the chain's decoders in bounded memory (paper Sec. 6.1, Fig. 6, Fig. 7).

The decoder cosine to final of every feature at every link (:func:`saetrack.analysis.drift.link_cosine_to_final`)
and the decoder rows of the few features Fig. 7 draws, read one link at a time: the final link's ``W_dec`` stays
loaded, each other link's ``W_dec`` (alone: not its encoder, :func:`saetrack.sae.weights.load_decoder`) is read onto
the run's device, compared with it a few thousand rows at a time in float64, and dropped. The ``[T, F, d]`` stack of
every decoder is never built. On the CPU the cosines are those of the stacked
:func:`~saetrack.analysis.drift.cosine_to_final`, bit for bit; on a CUDA device they agree to ~1e-15.

Peak host memory of the drift stage's decoder analysis (:func:`drift_peak_bytes`; ``T`` links, ``F`` features,
``d`` the SAE input width, ``n`` sampled features, ``M`` noise-floor links, ``C`` =
:data:`~saetrack.analysis.drift.COSINE_CHUNK_ROWS`), in bytes:

    2 F d 4            the final and the current link's decoder, float32 (on the device when it is not the CPU)
  + 3 C d 8            a chunk of both in float64 and a squared temporary (on the device, likewise)
  + 4 T F 8            the [T, F] cosine matrix in float64, with the live-column copy, a quantile's working copy
                       and the float32 copy written to arrays.npz
  + T n d 4            the sampled features' decoder rows, float32
  + 2 M F 8            the noise floor's [M, F] cosines and their quantiles' working copy

e.g. pythia-410m layer 4 (T = 29, F = 65,536, d = 1,024, n = 6, M = 8): 0.54 + 0.10 + 0.06 + 0.01 GB = 0.71 GB,
where the stack held 7.8 GB and its float64 copy and squared temporary 15.6 GB each (39 GB); pythia-1.4b layer 3
(F = 131,072, d = 2,048): 2.49 GB instead of 156 GB. The noise floor's training (an SAE, its gradients and Adam
moments) is on the device and counted by the plan's device column, as is the chain's; the formation stage's arrays
the drift stage reads (``[T, F]`` labels and tokens, ``[T, L]`` progress measures) come on top.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from saetrack.analysis.drift import COSINE_CHUNK_ROWS, link_cosine_to_final
from saetrack.sae.weights import load_decoder

__all__ = ["drift_peak_bytes", "link_drift"]


def link_drift(
    folders: dict[int, Path], features: list[int], *, device: str = "cpu", progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The decoder cosine to final (Sec. 6.1, Fig. 6) of every feature at every link of ``folders`` (step ->
    folder, taken in step order) and the decoder rows of ``features`` (Fig. 7's trajectories), two links in memory.

    Returns ``cosine`` ``[T, F]`` float64 (on the CPU equal to :func:`~saetrack.analysis.drift.cosine_to_final` of
    the stack, bit for bit) and ``rows`` ``[T, len(features), d]`` float32, row ``j`` the decoder vector of
    ``features[j]`` exactly as saved.
    """
    steps = sorted(folders)
    final = load_decoder(folders[steps[-1]], device)
    index = torch.as_tensor(features, dtype=torch.long, device=final.device)
    cosine = np.empty((len(steps), final.shape[0]))
    rows = np.empty((len(steps), len(features), final.shape[1]), dtype=np.float32)
    for t, step in enumerate(tqdm(steps, desc="decoders", disable=not progress)):
        decoder = final if t == len(steps) - 1 else load_decoder(folders[step], device)
        cosine[t] = link_cosine_to_final(decoder, final)
        rows[t] = decoder.index_select(0, index).float().cpu().numpy()
        del decoder
    return cosine, rows


def drift_peak_bytes(n_links: int, d_sae: int, d_in: int, n_sample: int, *, n_noise: int | None = None) -> int:
    """Peak host memory of the drift stage's decoder analysis, in bytes (the module docstring's formula):
    ``2 F d 4 + 3 C d 8 + 4 T F 8 + T n d 4 + 2 M F 8`` for ``T = n_links`` links of ``F = d_sae`` features of width
    ``d = d_in``, ``n = n_sample`` features whose decoder rows are kept (Fig. 7) and ``M = n_noise`` noise-floor
    links (default ``T - 1``, the stage's); ``C`` = :data:`~saetrack.analysis.drift.COSINE_CHUNK_ROWS` rows, at most
    ``F``."""
    if min(n_links, d_sae, d_in, n_sample) < 0 or (n_noise is not None and n_noise < 0):
        raise ValueError("drift_peak_bytes takes sizes >= 0.")
    m = max(n_links - 1, 0) if n_noise is None else n_noise
    chunk = 3 * min(COSINE_CHUNK_ROWS, d_sae) * d_in * 8
    return 2 * d_sae * d_in * 4 + chunk + 4 * n_links * d_sae * 8 + n_links * n_sample * d_in * 4 + 2 * m * d_sae * 8
