"""The formation stage's numbers (notebook 03 writes them to results.json, section ``formation``; paper Sec. 4-5).

Medians of the progress measure by feature type (Def. 5.4, Eq. 14-19), control (d) (the measure's two terms), the
baseline-normalised measure N_i(t) beside Eq. 14, the anchor-swap control (:mod:`saetrack.analysis.anchors`),
the chain links' dead fractions, interrupted identities, and the pattern counts. Everything is computed from a
:class:`~saetrack.stages.formation.FormationResult` (read, never recomputed) and returned as plain JSON.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from saetrack.analysis import formation as fm
from saetrack.analysis.anchors import ANCHOR_NAMES, anchor_summary, median_curve
from saetrack.analysis.progress import normalised_progress, within_set_similarity

if TYPE_CHECKING:  # the stage module imports this one
    from saetrack.stages.formation import FormationResult

__all__ = [
    "ANCHOR_PREFIX",
    "DEAD_RULE",
    "NORMALISED_RULE",
    "TERMS_KEYS",
    "anchor_numbers",
    "median_progress",
    "normalised_curves",
    "normalised_numbers",
    "progress_terms",
    "summary_numbers",
]


#: Progress measures split into their two terms for control (d) (Fig. 5d).
TERMS_KEYS: tuple[str, ...] = ("activation_cosine", "feature_cosine")
#: Prefix of the anchor control's arrays in the stage's ``arrays.npz``.
ANCHOR_PREFIX = "anchor__"
NORMALISED_RULE = (
    "N_i(t) = (S_i(t) - B(t)) / (1 - B(t)) = M_i(t) / (1 - B(t)), activation space, cosine: S the within-set "
    "similarity of the paper's D_i (top-k under the final SAE at the final checkpoint, Eq. 15), B the random "
    "baseline (Eq. 16), M the progress measure (Eq. 14); medians over live features typed by their final label; "
    "peak = the largest median, peak_step its checkpoint"
)
DEAD_RULE = (
    "per chain link on its own checkpoint's analysis set: dead = share of features never active; ultra_low = share "
    "active but below the App. A.1 density / max-activation thresholds on that checkpoint alone"
)


def median_progress(result: FormationResult, kind: str | None, key: str = "activation_cosine") -> np.ndarray:
    """Median progress measure M_i(t) (Def. 5.4) per checkpoint over live features whose final label is ``kind``
    (``None``: all live features); NaN at every checkpoint when there is no such feature."""
    values = np.asarray(result.progress[key], dtype=np.float64)
    rows = np.ones(values.shape[1], dtype=bool) if kind is None else result.final_types == kind
    return median_curve(values, rows)


def progress_terms(result: FormationResult, key: str = "activation_cosine") -> dict[str, np.ndarray]:
    """Control (d): the progress measure M_i(t) (Def. 5.4, Eq. 14 / 17) split into its two terms, per checkpoint.

    ``within_token`` / ``within_concept``: the median within-set similarity S(A_i^t) (Eq. 15 / 18) of live features
    typed by their final label; ``random_baseline``: the random baseline (Eq. 16 / 19), one number per checkpoint;
    ``progress_token`` / ``progress_concept``: the median M_i(t) (= median within-set similarity - baseline). Each
    ``[T]``; NaN where a type has no feature.
    """
    baseline = np.asarray(result.progress[f"baseline_{key}"], dtype=np.float64)
    within = within_set_similarity(result.progress[key], baseline)
    out = {"random_baseline": baseline}
    for kind in ("token", "concept"):
        out[f"within_{kind}"] = median_curve(within, result.final_types == kind)
        out[f"progress_{kind}"] = median_progress(result, kind, key)
    return out


def normalised_curves(result: FormationResult) -> dict[str, np.ndarray]:
    """The baseline-normalised measure N_i(t) (:data:`NORMALISED_RULE`) beside Eq. 14, activation space: its median
    over live token- and concept-level features (final label) per checkpoint (``normalised_token`` /
    ``normalised_concept``, ``[T]``) and N itself (``per_feature``, ``[T, L]``)."""
    baseline = np.asarray(result.progress["baseline_activation_cosine"], dtype=np.float64)
    values = normalised_progress(within_set_similarity(result.progress["activation_cosine"], baseline), baseline)
    out = {"per_feature": values}
    for kind in ("token", "concept"):
        out[f"normalised_{kind}"] = median_curve(values, result.final_types == kind)
    return out


def _float(value: float) -> float | None:
    """``value`` as a float, ``None`` when NaN."""
    return float(value) if np.isfinite(value) else None


def normalised_numbers(result: FormationResult) -> dict[str, Any]:
    """results.json ``normalised_progress``: per type, the median N_i(t) at the first checkpoint, its peak, the
    peak's step, the final value and the whole curve (``None`` where undefined), with the rule."""
    curves = normalised_curves(result)
    out: dict[str, Any] = {"rule": NORMALISED_RULE}
    for kind in ("token", "concept"):
        curve = curves[f"normalised_{kind}"]
        finite = np.isfinite(curve)
        peak = int(np.nanargmax(curve)) if finite.any() else None
        out[kind] = {
            "n": int((result.final_types == kind).sum()),
            "first": _float(curve[0]),
            "peak": None if peak is None else float(curve[peak]),
            "peak_step": None if peak is None else int(result.steps[peak]),
            "final": _float(curve[-1]),
            "curve": [_float(v) for v in curve],
        }
    return out


def anchor_numbers(result: FormationResult) -> dict[str, Any] | None:
    """results.json ``anchor_control`` (:func:`saetrack.analysis.anchors.anchor_summary`) from the stage's
    ``anchor__`` arrays; ``None`` for a stage folder written before the control existed."""
    arrays = result.anchors
    names = [n for n in ANCHOR_NAMES if f"{ANCHOR_PREFIX}{n}__within" in arrays]
    if not names:
        return None
    within = {n: arrays[f"{ANCHOR_PREFIX}{n}__within"] for n in names}
    types = {n: arrays[f"{ANCHOR_PREFIX}{n}__types"] for n in names}
    return anchor_summary(result.steps.tolist(), within, types, result.progress["baseline_activation_cosine"])


def _terms_numbers(result: FormationResult) -> dict[str, Any]:
    """Control (d)'s numbers: each term of :func:`progress_terms` at the first checkpoint, the start of the
    Emergent phase (decoder-drift phases, when fitted) and the final checkpoint."""
    emergent = result.checkpoint_choice.get("emergent")
    at = {"first": 0, "emergent_start": emergent, "final": len(result.steps) - 1}
    out: dict[str, Any] = {"emergent_start_step": None if emergent is None else int(result.steps[emergent])}
    for key in TERMS_KEYS:
        terms = progress_terms(result, key)
        out[key] = {
            name: {where: None if t is None else _float(curve[t]) for where, t in at.items()}
            for name, curve in terms.items()
            if not name.startswith("progress_")
        }
    return out


def _choice_numbers(choice: dict[str, Any], steps: np.ndarray) -> dict[str, Any]:
    """The checkpoints Fig. 2 and Fig. 4 show, with the rule and each one's phase and reason."""
    if not choice:
        return {}
    emergent, convergent = choice.get("emergent"), choice.get("convergent")
    return {
        "rule": choice["rule"],
        "fallback": choice.get("fallback"),
        "emergent_start_step": None if emergent is None else int(steps[emergent]),
        "convergent_start_step": None if convergent is None else int(steps[convergent]),
        **{fig: [{k: e[k] for k in ("step", "phase", "why")} for e in choice[fig]] for fig in ("fig2", "fig4")},
    }


def _dead_numbers(result: FormationResult) -> dict[str, Any] | None:
    """Every chain link's dead and ultra-low fraction on its own checkpoint (``None`` for old stage folders)."""
    if result.link_dead_fraction.size == 0:
        return None
    return {
        "rule": DEAD_RULE,
        "steps": [int(s) for s in result.steps],
        "dead": [_float(v) for v in result.link_dead_fraction],
        "ultra_low": [_float(v) for v in result.link_ultra_low_fraction],
    }


def _type_medians(result: FormationResult, key: str) -> dict[str, Any]:
    """Median M_i(t) of token- and concept-level features (final label) at the first and final checkpoints, and at
    every checkpoint (``curve_token``, ``curve_concept``)."""
    token, concept = median_progress(result, "token", key), median_progress(result, "concept", key)
    first_concept, final_concept = _float(concept[0]), _float(concept[-1])
    return {
        "curve_token": [_float(v) for v in token],
        "curve_concept": [_float(v) for v in concept],
        "median_token_first": _float(token[0]),
        "median_concept_first": first_concept,
        "median_token_final": _float(token[-1]),
        "median_concept_final": final_concept,
        "concept_rise": None if first_concept is None or final_concept is None else final_concept - first_concept,
    }


def summary_numbers(result: FormationResult) -> dict[str, Any]:
    """The numbers behind the paper's formation claims (issue 4, issue 20): results.json section ``formation``.

    For every progress-measure key: the median M_i(t) of token-level and of concept-level features (typed by
    their label at the final checkpoint) at the first and final checkpoints, and the concept-level rise. Also the
    pattern counts (``interrupted`` among them) and sub-pattern counts, the counts at other token-share thresholds
    (Sec. 4.2), interrupted identities with their rule, the checkpoints Fig. 2 and Fig. 4 show and why, control (c)
    (formation on the from-scratch SAEs, with every SAE's dead fraction), control (d) (the progress measure's two
    terms), the baseline-normalised measure, the anchor-swap control and every chain link's dead fraction.
    """
    manifest = result.manifest
    out: dict[str, Any] = {
        "filter_counts": manifest["filter_counts"],
        "pattern_counts": manifest["pattern_counts"],
        "label_counts": manifest["label_counts"],
        "sub_pattern_counts": manifest.get("sub_pattern_counts"),
        "pattern_sensitivity": manifest.get("pattern_sensitivity"),
        "interrupted": manifest.get("interrupted"),
        "checkpoint_choice": _choice_numbers(result.checkpoint_choice, result.steps),
        "baseline_control": manifest.get("baseline_control"),
        "progress_terms": _terms_numbers(result),
        "normalised_progress": normalised_numbers(result),
        "anchor_control": anchor_numbers(result),
        "chain_dead_fraction": _dead_numbers(result),
    }
    for key in fm.PROGRESS_KEYS:
        out[key] = _type_medians(result, key)
    return out
