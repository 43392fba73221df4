"""The explorer's data, one payload per view: the index of every feature, one page per feature, one per checkpoint.

Payloads are plain JSON-able dicts with compact arrays (floats rounded to 4 significant digits, ``None`` for missing).
A feature page holds Fig. 2's cell at every checkpoint (its top contexts, each token shaded by the activation of
Eq. 2), Sec. 6.1's decoder cosines with the noise floor, Eq. 14's progress measure with its baseline term, the
crosscoder's decoder-norm curve of the matched feature (Fig. X02's row) and the nearest features at the final link.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from saetrack.analysis.phases import PHASE_NAMES
from saetrack.stages.explorer.arrays import RunArrays
from saetrack.stages.explorer.contexts import SHADES, ContextWindows

__all__ = [
    "checkpoint_page",
    "feature_page",
    "index_table",
    "phase_of",
    "rounded",
    "run_description",
    "search_text",
    "shade_string",
    "token_texts",
    "window_ids",
]

#: Bins of a checkpoint page's histograms of the decoder cosine (to final, to the previous link) over live features.
HISTOGRAM_BINS = 40
#: A token's shade level 0..SHADES as one character (its index in this string); "." marks a token past the edge of its
#: context.
SHADE_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_"
#: Label codes of a feature page's per-checkpoint label string (Def. 4.1-4.2).
LABEL_CODE = {"token": "t", "concept": "c", "inactive": "i"}


def rounded(values: Any, digits: int = 4) -> Any:
    """``values`` (a number or array) as JSON: floats to ``digits`` significant digits, NaN/inf as ``None``."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 0:
        value = float(array)
        return float(f"{value:.{digits}g}") if np.isfinite(value) else None
    return [rounded(v, digits) for v in array]


def phase_of(position: int, phases: dict[str, int] | None) -> str | None:
    """The training phase (Sec. 6.2: Initialization & Warmup, Emergent, Convergent) of checkpoint ``position`` from
    the drift stage's boundaries, ``None`` when no phases were fitted."""
    if phases is None:
        return None
    if position < phases["emergent"]:
        return PHASE_NAMES[0]
    return PHASE_NAMES[1] if position < phases["convergent"] else PHASE_NAMES[2]


def _alive(arrays: RunArrays) -> np.ndarray:
    """Whether each feature fired at each link ``[T, F]``: its firing frequency on the link's training tokens, or its
    label (active on the analysis set) where the link recorded no frequency."""
    recorded = np.isfinite(arrays.frequency)
    return np.where(recorded, arrays.frequency > 0, arrays.labels != "inactive")


def index_table(arrays: RunArrays, token_text: Callable[[int], str]) -> dict[str, Any]:
    """The index: one row per feature (columns as lists) — pattern and sub-pattern (Sec. 4.2), label and dominant
    token at the first and final checkpoint (Def. 4.1-4.2), formation step and decoder cosine to final there
    (Sec. 6.1), final firing frequency, alive at each link (a 0/1 string), and the matched crosscoder feature with its
    emergence step (Ge et al. 2025)."""
    n = arrays.labels.shape[1]
    formed = arrays.formation_step >= 0
    position = np.searchsorted(arrays.steps, np.maximum(arrays.formation_step, 0))
    at_formation = np.where(formed, arrays.to_final[np.minimum(position, len(arrays.steps) - 1), np.arange(n)], np.nan)
    alive = _alive(arrays)
    table: dict[str, Any] = {
        "feature": list(range(n)),
        "live": [bool(v) for v in arrays.live],
        "pattern": [str(v) for v in arrays.patterns],
        "sub_pattern": [str(v) for v in arrays.sub_patterns],
        "first_label": [str(v) for v in arrays.labels[0]],
        "first_token": [token_text(int(v)) for v in arrays.dominant[0]],
        "final_label": [str(v) for v in arrays.labels[-1]],
        "final_token": [token_text(int(v)) for v in arrays.dominant[-1]],
        "formation_step": [int(v) if v >= 0 else None for v in arrays.formation_step],
        "cosine_at_formation": rounded(at_formation, 3),
        "final_frequency": rounded(arrays.frequency[-1], 3),
        "alive": ["".join("1" if a else "0" for a in alive[:, f]) for f in range(n)],
    }
    cc = arrays.crosscoder
    if cc is not None:
        table["crosscoder_feature"] = [int(v) if v >= 0 else None for v in cc.match]
        table["crosscoder_cosine"] = rounded(cc.match_cosine, 3)
        emergence = [int(cc.emergence_step[v]) if v >= 0 and cc.emergence_step[v] >= 0 else None for v in cc.match]
        table["crosscoder_emergence"] = emergence
    return table


def shade_string(levels: np.ndarray) -> str:
    """Shade levels ``[W]`` (0..SHADES, 255 outside the context) as a string of :data:`SHADE_ALPHABET` characters."""
    return "".join("." if level == 255 else SHADE_ALPHABET[int(level)] for level in levels)


def _contexts(windows: ContextWindows, feature: int) -> tuple[list[int], list[list[list[Any]]]]:
    """A feature's shown contexts: the distinct rows of their activating tokens and, per checkpoint, its contexts as
    ``[row, activation, shade string]`` (:func:`shade_string`)."""
    rows = windows.rows[:, feature]
    contexts = []
    for t in range(rows.shape[0]):
        shown = [
            [int(rows[t, c]), rounded(windows.values[t, feature, c], 3), shade_string(windows.shading[t, feature, c])]
            for c in range(rows.shape[1])
            if rows[t, c] >= 0
        ]
        contexts.append(shown)
    return sorted({int(r) for r in rows.reshape(-1) if r >= 0}), contexts


def feature_page(
    arrays: RunArrays, windows: ContextWindows, feature: int, window_tokens: Callable[[int], list[int]]
) -> dict[str, Any]:
    """Feature ``feature``'s page: its label, dominant token and share, firing frequency and top activation at every
    checkpoint; decoder cosine to the final and the previous link (Sec. 6.1) with its noise floor (the drift stage's
    links retrained on the final checkpoint); M_i(t) (Eq. 14) with the baseline B(t); the formation step; the top
    contexts of every checkpoint (token ids per window, ``window_tokens(row)``; -1 outside the context); the nearest
    features at the final link; the matched crosscoder feature's decoder norms and emergence step."""
    f = int(feature)
    used, contexts = _contexts(windows, f)
    page: dict[str, Any] = {
        "feature": f,
        "live": bool(arrays.live[f]),
        "pattern": str(arrays.patterns[f]),
        "sub_pattern": str(arrays.sub_patterns[f]),
        "labels": "".join(LABEL_CODE.get(str(v), "i") for v in arrays.labels[:, f]),
        "dominant": [int(v) for v in arrays.dominant[:, f]],
        "share": rounded(arrays.shares[:, f], 3),
        "frequency": rounded(arrays.frequency[:, f], 4),
        "max_activation": rounded(windows.values[:, f, 0], 4),
        "to_final": rounded(arrays.to_final[:, f], 4),
        "adjacent": rounded(arrays.adjacent[:, f], 4),
        "noise_to_final": rounded(arrays.noise_to_final[:, f], 4),
        "progress": rounded(arrays.progress[:, f], 4) if arrays.live[f] else None,
        "formation_step": int(arrays.formation_step[f]) if arrays.formation_step[f] >= 0 else None,
        "nearest": [[int(i), rounded(c, 3)] for i, c in zip(arrays.nearest[f], arrays.nearest_cosine[f], strict=True)],
        "windows": {str(row): window_tokens(row) for row in used},
        "contexts": contexts,
        "crosscoder": None,
    }
    cc = arrays.crosscoder
    if cc is not None and cc.match[f] >= 0:
        other = int(cc.match[f])
        page["crosscoder"] = {
            "feature": other,
            "cosine": rounded(cc.match_cosine[f], 3),
            "same": bool(cc.match_cosine[f] >= cc.threshold),
            "norms": rounded(cc.norms[other], 4),
            "emergence_step": int(cc.emergence_step[other]) if cc.emergence_step[other] >= 0 else None,
        }
    return page


def _histogram(values: np.ndarray) -> dict[str, Any]:
    """Counts of ``values`` (finite ones) in :data:`HISTOGRAM_BINS` equal bins over [min, 1]."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"edges": [], "counts": []}
    low = float(min(finite.min(), 0.999))
    counts, edges = np.histogram(finite, bins=HISTOGRAM_BINS, range=(low, 1.0))
    return {"edges": rounded(edges, 4), "counts": counts.tolist()}


def checkpoint_page(arrays: RunArrays, position: int) -> dict[str, Any]:
    """Checkpoint ``position``'s page: its link's quality (chain stage, held-out tokens) and dead share (App. A.1),
    its phase, the label counts (Def. 4.1-4.2), histograms of the live features' decoder cosine to final and to the
    previous link (Fig. 6a's histogram at this step), and the features that form here (Sec. 6.1) by pattern."""
    t, live = int(position), arrays.live
    formed_here = np.flatnonzero(arrays.formation_step == arrays.steps[t])
    counts = Counter(str(v) for v in arrays.labels[t])
    return {
        "step": int(arrays.steps[t]),
        "position": t,
        "phase": phase_of(t, arrays.phases),
        "metrics": {key: rounded(value, 4) for key, value in arrays.link_metrics[t].items()},
        "dead_fraction": rounded(arrays.dead_fraction[t], 4) if arrays.dead_fraction.size else None,
        "labels": {label: int(counts.get(label, 0)) for label in LABEL_CODE},
        "to_final": _histogram(arrays.to_final[t, live]),
        "adjacent": _histogram(arrays.adjacent[t - 1, live]) if t > 0 else None,
        "formed": [[int(f), str(arrays.patterns[f])] for f in formed_here],
        "formed_patterns": dict(Counter(str(arrays.patterns[f]) for f in formed_here)),
    }


def search_text(windows: ContextWindows, feature: int, render: Callable[[int], str], limit: int = 20) -> str:
    """The text of feature ``feature``'s shown contexts (distinct windows, latest checkpoint first, at most ``limit``)
    joined by `` | ``, for the index's text search (``render(row)`` gives a window's text)."""
    rows: list[int] = []
    for t in range(windows.rows.shape[0] - 1, -1, -1):
        for row in windows.rows[t, feature]:
            if row >= 0 and int(row) not in rows:
                rows.append(int(row))
    return " | ".join(render(r) for r in rows[:limit])


def window_ids(tokens: np.ndarray, offsets: Sequence[int]) -> Callable[[int], list[int]]:
    """``row -> token ids`` of the window around flat analysis row ``row`` (-1 where it runs past its context)."""
    flat, context_length = np.asarray(tokens).reshape(-1), int(np.asarray(tokens).shape[1])
    offsets = np.asarray(offsets, dtype=np.int64)

    def ids(row: int) -> list[int]:
        position = row % context_length + offsets
        inside = (position >= 0) & (position < context_length)
        return [int(flat[row + o]) if ok else -1 for o, ok in zip(offsets, inside, strict=True)]

    return ids


def run_description(run: Any, arrays: RunArrays, offsets: np.ndarray) -> dict[str, Any]:
    """What every view needs about the run: preset, checkpoint steps, dictionary size, the phases (Sec. 6.2) with their
    boundary steps, the context window's offsets and shading scale, the noise floor's link count, the crosscoder's
    snapshot steps and matching threshold, and the explorer's config."""
    phases = None
    if arrays.phases is not None:
        phases = {
            "names": list(PHASE_NAMES),
            "emergent_step": int(arrays.steps[min(arrays.phases["emergent"], len(arrays.steps) - 1)]),
            "convergent_step": int(arrays.steps[min(arrays.phases["convergent"], len(arrays.steps) - 1)]),
        }
    cc = arrays.crosscoder
    return {
        "preset": arrays.preset,
        "steps": [int(s) for s in arrays.steps],
        "n_features": int(arrays.labels.shape[1]),
        "n_live": int(arrays.live.sum()),
        "phases": phases,
        "offsets": [int(o) for o in offsets],
        "shades": SHADES,
        "noise_links": int(arrays.noise_to_final.shape[0]),
        "baseline": rounded(arrays.baseline, 4),
        "crosscoder": None
        if cc is None
        else {"steps": [int(s) for s in cc.steps], "threshold": cc.threshold, "final_step": cc.final_step},
        "explorer": run.config.to_dict()["explorer"],
    }


def token_texts(tokenizer: Any) -> Callable[[int], str]:
    """``token id -> text`` with the run's tokenizer, each id decoded once (``""`` for -1, a position past the edge
    of a context)."""
    cache: dict[int, str] = {}

    def text(token: int) -> str:
        if token < 0:
            return ""
        if token not in cache:
            cache[token] = tokenizer.decode([int(token)])
        return cache[token]

    return text
