"""Controls of the crosscoder's emergence reading (issue 20, item 3): settling, fractions, nulls and the norm dip.

Ge et al. (2025) read a feature's *emergence* from its decoder norms ``||W_dec,i^θ||`` (:mod:`.evolution`): the
first snapshot where the norm reaches a fraction of its maximum. That reading can be made by the method rather than
the model, so it is set beside:

* **settling** (:func:`settling`): whether training ran long enough for the decoder norms to stop moving. The rule
  (:data:`SETTLING_CRITERION`): with ``R(s)`` the ``[F, T]`` decoder-norm matrix after ``s`` optimiser steps, each
  feature's row divided by its maximum over snapshots (all features), recorded during training, the norms have
  settled when ``||R(S) - R(S')||_F / ||R(S)||_F < 0.02`` for ``S`` the last step and ``S'`` the last record at
  or before ``S - 0.1 S`` (a window of at least 10% of the training steps). Row-normalised because that is what
  the emergence rule reads: a feature's absolute scale is free (scaling its encoder row, bias and threshold by
  ``1/a`` and its decoder rows by ``a`` leaves the loss unchanged), and on nano it keeps growing slowly with
  training while the normalised rows settle. The same change of the absolute matrix is reported beside it, and the
  change at every record gives the settling curve;
* **several fractions** (:func:`emergence_by_fraction`, :data:`EMERGENCE_FRACTIONS`): the rule at 0.3, 0.5, 0.7 and
  0.9 of the maximum, with the share of alive features at the first snapshot stated explicitly (every feature
  present from the start ties there; :func:`share_at_first`) and the whole histogram over snapshots;
* **snapshot labels permuted** (:func:`permuted_snapshot_null`): the crosscoder's loss is invariant under a joint
  permutation of the snapshots (inputs, per-snapshot encoder and decoder blocks, biases, scales) and its
  initialisation draws every snapshot's block i.i.d., so a crosscoder trained on permuted snapshots is, in
  distribution, the trained one with its snapshot columns permuted. The null applies the emergence rule to
  column-permuted decoder norms: what "emerging at the first snapshot" looks like when the order of the snapshots
  means nothing;
* **the dip** (:func:`median_norm_dip`): the depth of the dip of the median row-normalised norm inside a window of
  steps, ``1 - min_{θ in window} m(θ) / m(first)``, ``m(θ)`` the median over alive features of
  ``||W_dec,i^θ|| / max_θ' ||W_dec,i^θ'||``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from saetrack.analysis.evolution import emergence_index, present_mask

__all__ = [
    "EMERGENCE_FRACTIONS",
    "SETTLING_CRITERION",
    "SETTLING_TOLERANCE",
    "SETTLING_WINDOW",
    "Settling",
    "emergence_by_fraction",
    "emergence_during_training",
    "emergence_fractions",
    "emergence_histogram",
    "median_norm_dip",
    "permuted_snapshot_null",
    "relative_norm_changes",
    "settling",
    "share_at_first",
]


#: Settling window: a share of the training steps.
SETTLING_WINDOW = 0.1
#: Settled when the relative Frobenius change of the decoder-norm matrix over the window is below this.
SETTLING_TOLERANCE = 0.02
SETTLING_CRITERION = (
    "||R(S) - R(S')||_F / ||R(S)||_F < 0.02, R the [features, snapshots] decoder-norm matrix with each row divided "
    "by its maximum, S the last step, S' the last record at or before S - 10% of the training steps"
)
#: Fractions of a feature's maximum norm at which emergence is read (the stage's own fraction among them).
EMERGENCE_FRACTIONS: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)
#: Permutations of the null evaluated at once (bounds memory at ``F x NULL_CHUNK x T`` booleans).
NULL_CHUNK = 50


def relative_norm_changes(
    record_steps: Sequence[int], records: np.ndarray, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """Relative change of the decoder-norm matrix over ``window`` steps at every record, the settling curve.

    ``records`` ``[R, F, T]`` are the matrices after ``record_steps`` ``[R]`` (increasing) optimiser steps. At each
    record ``s`` with an earlier record at or before ``s - window``: ``||N(s) - N(s')||_F / ||N(s)||_F`` with ``s'``
    the last such record. Returns ``(steps, changes)``.
    """
    steps = np.asarray(record_steps, dtype=np.int64)
    records = np.asarray(records, dtype=np.float64)
    if records.ndim != 3 or len(records) != len(steps):
        raise ValueError(f"records have shape {records.shape}; expected [{len(steps)}, features, snapshots].")
    if np.any(np.diff(steps) <= 0):
        raise ValueError(f"record steps {steps.tolist()} must increase.")
    out_steps, changes = [], []
    for k, s in enumerate(steps):
        earlier = np.flatnonzero(steps[:k] <= s - window)
        if earlier.size == 0:
            continue
        now, then = records[k], records[earlier[-1]]
        out_steps.append(int(s))
        changes.append(float(np.linalg.norm(now - then) / max(np.linalg.norm(now), 1e-12)))
    return np.asarray(out_steps, dtype=np.int64), np.asarray(changes)


@dataclass(frozen=True)
class Settling:
    """The settling rule applied to one training run (see :data:`SETTLING_CRITERION`)."""

    total_steps: int
    window: int
    steps: np.ndarray  # records with a full window behind them
    changes: np.ndarray  # relative change of the row-normalised matrix over the window at each
    absolute_changes: np.ndarray  # the same for the absolute decoder-norm matrix
    settled: bool
    final_relative_change: float | None  # at the last step; None when training was shorter than one window

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the rule, the verdict, the final change and the curve."""
        return {
            "criterion": SETTLING_CRITERION,
            "steps": self.total_steps,
            "window_steps": self.window,
            "settled": self.settled,
            "final_relative_change": self.final_relative_change,
            "final_absolute_change": float(self.absolute_changes[-1]) if self.absolute_changes.size else None,
            "curve": {
                "step": self.steps.tolist(),
                "relative_change": self.changes.tolist(),
                "absolute_change": self.absolute_changes.tolist(),
            },
        }


def settling(record_steps: Sequence[int], records: np.ndarray, total_steps: int) -> Settling:
    """Whether the decoder norms ``records`` ``[R, F, T]`` recorded during ``total_steps`` of training settled
    (:data:`SETTLING_CRITERION`: each row divided by its maximum, then :func:`relative_norm_changes`).

    The last record must be at ``total_steps``; the window is ``ceil(SETTLING_WINDOW * total_steps)`` steps.
    """
    if len(record_steps) == 0 or int(record_steps[-1]) != total_steps:
        raise ValueError(f"the last norm record must be at the last step {total_steps}, got {list(record_steps)[-1:]}.")
    window = max(1, int(np.ceil(SETTLING_WINDOW * total_steps)))
    records = np.asarray(records, dtype=np.float64)
    rows = records / np.maximum(records.max(axis=2, keepdims=True), 1e-12) if records.ndim == 3 else records
    steps, changes = relative_norm_changes(record_steps, rows, window)
    _, absolute = relative_norm_changes(record_steps, records, window)
    final = float(changes[-1]) if steps.size and steps[-1] == total_steps else None
    settled = final is not None and final < SETTLING_TOLERANCE
    return Settling(int(total_steps), window, steps, changes, absolute, settled, final)


def emergence_fractions(fraction: float) -> tuple[float, ...]:
    """The fractions emergence is read at: :data:`EMERGENCE_FRACTIONS` and a run's own ``fraction``, ascending."""
    return tuple(sorted({*EMERGENCE_FRACTIONS, float(fraction)}))


def emergence_by_fraction(
    norms: np.ndarray, alive: np.ndarray, fractions: Sequence[float] = EMERGENCE_FRACTIONS
) -> dict[float, np.ndarray]:
    """The emergence snapshot of every feature (``-1``: not alive) at each fraction of its maximum norm, ``{f: [F]}``
    (:func:`saetrack.analysis.evolution.emergence_index`, Ge et al.'s emergence rule at several thresholds)."""
    return {float(f): emergence_index(norms, f, alive) for f in fractions}


def share_at_first(emergence: np.ndarray) -> float | None:
    """Share of the emerging features (index ``>= 0``) whose emergence snapshot is the first; None when none emerge."""
    emerged = np.asarray(emergence) >= 0
    return float(np.mean(np.asarray(emergence)[emerged] == 0)) if emerged.any() else None


def emergence_during_training(records: np.ndarray, fraction: float, alive: np.ndarray) -> list[float | None]:
    """The share of ``alive`` features emerging at the first snapshot in each decoder-norm record ``[R, F, T]`` taken
    during training: how the emergence reading moves as training goes on (the settling rule's records)."""
    return [share_at_first(emergence_index(record, fraction, alive)) for record in np.asarray(records)]


def emergence_histogram(emergence: np.ndarray, steps: Sequence[int]) -> dict[str, int]:
    """Features per emergence snapshot, ``{str(step): count}`` over every snapshot (dead features left out)."""
    emergence = np.asarray(emergence)
    counts = np.bincount(emergence[emergence >= 0], minlength=len(steps))
    return {str(int(s)): int(c) for s, c in zip(steps, counts, strict=True)}


def permuted_snapshot_null(
    norms: np.ndarray,
    alive: np.ndarray,
    fractions: Sequence[float] = EMERGENCE_FRACTIONS,
    *,
    permutations: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Emergence under permuted snapshot labels: the rule applied to column-permuted decoder norms (null (ii)).

    For ``permutations`` seeded permutations of the ``T`` snapshot columns of ``norms`` ``[F, T]`` (alive rows
    only), the share of alive features emerging at the (permuted) first snapshot and the histogram over snapshot
    positions. Returns per fraction (keys ``str(fraction)``) the mean share, its 2.5, 5, 95 and 97.5% quantiles and
    the mean histogram ``[T]``.
    """
    rows = np.asarray(norms, dtype=np.float64)[np.asarray(alive, dtype=bool)]
    t = rows.shape[1]
    rng = np.random.default_rng(seed)
    orders = np.stack([rng.permutation(t) for _ in range(permutations)])  # [P, T]
    out: dict[str, Any] = {"permutations": int(permutations), "seed": int(seed)}
    for fraction in fractions:
        present = present_mask(rows, fraction)  # [F, T]; every alive row is present somewhere (its maximum)
        shares, hist = np.zeros(permutations), np.zeros(t)
        for start in range(0, permutations, NULL_CHUNK):
            chunk = orders[start : start + NULL_CHUNK]
            first = np.argmax(present[:, chunk], axis=2)  # [F, P']: first permuted position where present
            shares[start : start + len(chunk)] = (first == 0).mean(axis=0) if len(rows) else np.nan
            hist += np.bincount(first.ravel(), minlength=t)
        out[str(fraction)] = {
            "emerged_at_first_mean": float(np.mean(shares)),
            "emerged_at_first_q025": float(np.quantile(shares, 0.025)),
            "emerged_at_first_q05": float(np.quantile(shares, 0.05)),
            "emerged_at_first_q95": float(np.quantile(shares, 0.95)),
            "emerged_at_first_q975": float(np.quantile(shares, 0.975)),
            "mean_histogram": (hist / permutations).tolist(),
        }
    return out


def median_norm_dip(
    norms: np.ndarray, alive: np.ndarray, steps: Sequence[int], window: tuple[int, int]
) -> dict[str, Any]:
    """The dip of the median row-normalised decoder norm inside ``window`` (training steps, inclusive).

    ``m(θ)`` is the median over alive features of ``||W_dec,i^θ|| / max_θ' ||W_dec,i^θ'||``; the dip is
    ``1 - min_{θ in window} m(θ) / m(first snapshot)`` (0: no dip; None when no snapshot lies in the window or
    nothing is alive). Returns ``{"dip", "step" (of the minimum), "median" [T]}``.
    """
    rows = np.asarray(norms, dtype=np.float64)[np.asarray(alive, dtype=bool)]
    steps_arr = np.asarray(steps)
    inside = (steps_arr >= window[0]) & (steps_arr <= window[1])
    if not len(rows) or not inside.any():
        return {"dip": None, "step": None, "median": [], "window": list(window)}
    relative = rows / np.maximum(rows.max(axis=1, keepdims=True), 1e-12)
    median = np.median(relative, axis=0)
    at = np.flatnonzero(inside)[int(np.argmin(median[inside]))]
    dip = 1.0 - float(median[at] / median[0]) if median[0] > 0 else None
    return {"dip": dip, "step": int(steps_arr[at]), "median": median.tolist(), "window": list(window)}
