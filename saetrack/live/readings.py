"""What a watched run shows after each new link: the chain's drift so far and the phase estimate so far.

After link k the final link is not known yet, so "final" is read as "latest": the decoder cosine of every feature at
every link with the same feature at link k (Sec. 6.1's cosine to final, Fig. 6), its median over the features alive
at link k, the median cosine between link k and link k-1 (how far the last step moved), and the three phases of
Sec. 4.1 fitted to the median curve (:func:`saetrack.analysis.phases.find_phases` with the drift section's settings,
against the checkpoint index as in Fig. 6). Every number here changes as later links arrive; notebook 04 computes the
final ones on the finished chain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from saetrack.analysis import phases as ph
from saetrack.analysis.drift import link_cosine_to_final
from saetrack.config.run import RunConfig
from saetrack.sae.io import load_firing_frequency
from saetrack.sae.weights import load_decoder
from saetrack.stages.drift.decoders import link_drift

__all__ = ["PHASE_AXIS", "drift_so_far"]

#: The x axis the live phase estimate is fitted against (Fig. 6's).
PHASE_AXIS = "index"


def _median(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else None


def drift_so_far(run: RunConfig, folders: dict[int, Path]) -> dict[str, Any]:
    """The live readings of the chain whose links are ``folders`` (step -> link folder, at least one): per link the
    median cosine to the latest link over the features alive there, the latest link's median cosine to the one
    before, and the phase boundaries so far as steps (``None`` with the reason while too few links)."""
    steps = sorted(folders)
    cosine, _ = link_drift(folders, [], progress=False)  # [T, F] cosine of each link's features to the latest
    frequency = load_firing_frequency(folders[steps[-1]])
    alive = np.ones(cosine.shape[1], dtype=bool) if frequency is None else frequency > 0
    median_to_latest = [_median(row[alive]) for row in cosine]
    to_previous = None
    if len(steps) > 1:
        previous, latest = load_decoder(folders[steps[-2]]), load_decoder(folders[steps[-1]])
        to_previous = _median(link_cosine_to_final(previous, latest)[alive])
    curve = np.array([np.nan if v is None else v for v in median_to_latest])
    drift = run.drift
    x = ph.phase_axis(steps, PHASE_AXIS)
    finding = ph.find_phases(x, curve, axis=PHASE_AXIS, min_phase=drift.min_phase_checkpoints,
                             max_segments=drift.max_segments)  # fmt: skip
    phases = None
    if finding.phases is not None:
        emergent, convergent = finding.phases.boundaries
        phases = {"emergent_step": int(steps[emergent]), "convergent_step": int(steps[convergent])}
    return {
        "steps": [int(s) for s in steps],
        "alive_at_latest": int(alive.sum()),
        "median_cosine_to_latest": median_to_latest,
        "median_cosine_to_previous": to_previous,
        "phases": phases,
        "phase_note": finding.note,
    }
