"""The paper's formation claims (Sec. 1 (3), Sec. 5) against their controls: the baseline-normalised measure, the
anchor swap, the flicker-tolerant formation rule and formation on the from-scratch SAEs (the reviewers' question).
Rules were fixed before the runs they judge were looked at (issue 20); each is stated in its spec.
"""

from __future__ import annotations

from typing import Any

from saetrack.ledger.claim import Claim, Results, Spec, fmt, three_way

__all__ = [
    "CONCEPT_FORMS",
    "TOKEN_AT_INIT",
    "WITHOUT_CHAIN",
    "concept_features_form",
    "formation_without_chain",
    "token_features_at_initialisation",
]


TOKEN_AT_INIT = Spec(
    "P4a",
    "paper Sec. 1 (3), Sec. 5",
    "Token-level features exist from initialisation",
    ("drift",),
    "share of the final token-level features (interrupted identities left out) formed at the first checkpoint by "
    "the flicker-tolerant rule: holds if >= 50%; does not hold if < 20%; otherwise inconclusive",
    ("05", "07"),
)
CONCEPT_FORMS = Spec(
    "P4b",
    "paper Sec. 1 (3), Sec. 5",
    "Concept-level features become coherent over training",
    ("formation",),
    "N = (within - baseline) / (1 - baseline) of the concept-level median within-set cosine; rise = N(final) - "
    "N(first) with the paper's sets (top-k at the final checkpoint); decay = N(first) - N(final) with the sets "
    "chosen at the first checkpoint: holds if rise >= 0.1 and decay <= rise / 2; does not hold if rise < 0.05 or "
    "decay >= rise (coherence falls away from whichever checkpoint chose the sets: a selection effect); otherwise "
    "inconclusive",
    ("05", "05a", "05n"),
)
WITHOUT_CHAIN = Spec(
    "R4",
    "review: continual-training artefact",
    "Formation is a property of the model, not of the chain",
    ("formation",),
    "concept-level median progress (Eq. 14) of each SAE's own top-k, first vs last baseline checkpoint: holds if "
    "the chain links rise (> 0) and the from-scratch SAEs' rise >= half the chain links' with every from-scratch SAE "
    "<= 20% dead; does not hold if the chain links rise by > 0.05 and the from-scratch SAEs' rise is <= a quarter of "
    "it with <= 20% dead; otherwise inconclusive (also when one is over 20% dead, or the chain links do not rise)",
    ("S07",),
)


def token_features_at_initialisation(r: Results) -> Claim:
    """Paper Sec. 5.3: token-level features exist from initialisation - read as: most features that are token-level
    at the end are already formed (same token, coherent) at the first checkpoint."""
    tolerant = r.get("drift", "formation", "tolerant", "token_level_formed_at_first_share")
    strict = r.get("drift", "formation", "strict", "token_level_formed_at_first_share")
    if tolerant is None:
        return TOKEN_AT_INIT.missing("no formation times in this run")
    return TOKEN_AT_INIT.claim(tolerant, f"{tolerant:.0%} formed at the first checkpoint (one-checkpoint dips "
                               "forgiven)",
                               strict, f"strict rule: {'n/a' if strict is None else f'{strict:.0%}'}",
                               three_way(tolerant >= 0.5, tolerant < 0.2), f"{tolerant:.0%} vs 50% / 20%")  # fmt: skip


def _normalised(within: float | None, baseline: float | None) -> float | None:
    """(S - B) / (1 - B): a median within-set similarity against the random baseline of its checkpoint."""
    if within is None or baseline is None or baseline >= 1:
        return None
    return (within - baseline) / (1 - baseline)


def _anchor_change(r: Results, anchor: str) -> float | None:
    """Normalised median concept-level coherence of ``anchor``'s sets: final checkpoint minus first checkpoint."""
    base = r.get("formation", "anchor_control", "baseline")
    entry = r.get("formation", "anchor_control", "anchors", anchor, "concept")
    if not base or not entry or not entry.get("n"):
        return None
    first, final = _normalised(entry["first"], base[0]), _normalised(entry["final"], base[-1])
    return None if first is None or final is None else final - first


def concept_features_form(r: Results) -> Claim:
    """Paper Sec. 5: concept-level features form progressively over training - read as: their coherence against the
    random baseline rises, and not merely because their datapoints were chosen at the end (the anchor swap)."""
    rise, change_first = _anchor_change(r, "final"), _anchor_change(r, "first")
    if rise is None or change_first is None:
        return CONCEPT_FORMS.missing("no anchor control in this run")
    decay, middle = -change_first, _anchor_change(r, "middle")
    return CONCEPT_FORMS.claim(rise, f"normalised concept-level coherence rises by {fmt(rise)} (sets chosen at the "
                               "final checkpoint)", decay, f"sets chosen at the first checkpoint: it falls by "
                               f"{fmt(decay)}; sets chosen mid-training: first-to-final change {fmt(middle)}",
                               three_way(rise >= 0.1 and decay <= rise / 2, rise < 0.05 or decay >= rise),
                               f"rise {fmt(rise)}, decay {fmt(decay)}")  # fmt: skip


def _dead_fraction(entry: dict[str, Any]) -> float | None:
    """A from-scratch SAE's dead fraction, wherever the formation stage put it."""
    flat = entry.get("dead_fraction_scratch")
    return flat if flat is not None else (entry.get("baseline") or {}).get("dead_fraction")


def formation_without_chain(r: Results) -> Claim:
    """The reviewers' question (is formation an artefact of the continual chain?): from-scratch SAEs show the same
    concept-level rise as the chain links at the same checkpoints (control (c))."""
    per_step = r.get("formation", "baseline_control", "per_step")
    if not per_step or len(per_step) < 2:
        return WITHOUT_CHAIN.missing("no from-scratch baselines in this run")
    key = "median_concept_activation_cosine"
    first, last = per_step[0], per_step[-1]
    try:
        scratch = last["baseline"][key] - first["baseline"][key]
        chain = last["chain"][key] - first["chain"][key]
    except (KeyError, TypeError):
        return WITHOUT_CHAIN.missing("a compared SAE has no concept-level feature")
    dead = [d for d in map(_dead_fraction, per_step) if d is not None]
    worst = max(dead) if dead else None
    clean = worst is not None and worst <= 0.2
    dead_text = "n/a" if worst is None else f"{worst:.0%}"
    span = f"step {first['step']} -> {last['step']}"
    return WITHOUT_CHAIN.claim(scratch, f"from-scratch SAEs' concept-level rise {fmt(scratch)} ({span})", chain,
                               f"chain links' rise {fmt(chain)}; most dead from-scratch SAE {dead_text}",
                               three_way(clean and chain > 0 and scratch >= chain / 2,
                                         clean and chain > 0.05 and scratch <= chain / 4),
                               f"scratch / chain rise {fmt(scratch)} / {fmt(chain)}")  # fmt: skip
