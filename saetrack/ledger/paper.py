"""The SAE-Track paper's claims on the chain, the phases and the patterns (Sec. 1 (1)-(2), Sec. 3-4), each against
its control. Rules were fixed before the runs they judge were looked at (issue 20); each is stated in its spec.
"""

from __future__ import annotations

import numpy as np

from saetrack.ledger.claim import Claim, Results, Spec, fmt, three_way

__all__ = [
    "EFFICIENCY",
    "PATTERNS",
    "PATTERNS_ROBUST",
    "THREE_PHASES",
    "WARMUP",
    "link_efficiency",
    "patterns_exist",
    "patterns_robust",
    "three_phases",
    "warmup_not_boundary",
]


EFFICIENCY = Spec(
    "P1",
    "paper Sec. 1 (1), Sec. 3.2",
    "Later links converge within 1/20 of a from-scratch SAE's tokens",
    ("chain",),
    "median token ratio (recurrent probe / from-scratch SAE, to the from-scratch SAE's final loss) over non-trivial"
    " probes: holds if <= 0.05; does not hold if > 0.05; inconclusive with fewer than 2 non-trivial probes",
    ("S04",),
)
THREE_PHASES = Spec(
    "P2",
    "paper Sec. 1 (2), Sec. 4.1",
    "Training has three phases: the phase curves need three segments",
    ("seeds", "drift"),
    "over the seed study's runs (model x chain seeds), both curves (decoder drift, progress measure) on the "
    "checkpoint index: holds if BIC prefers exactly three segments (of 1 to drift.max_segments >= 6) in >= 80% of "
    "the fits; does not hold if in <= 20%; otherwise inconclusive",
    ("S08", "06a", "05p"),
)
WARMUP = Spec(
    "P2w",
    "paper Sec. 4.1 (control)",
    "The Emergent phase's start is not set by the end of the lr warm-up",
    ("seeds",),
    "per curve on the checkpoint index: shift = first three-segment boundary with the long warm-up minus with the "
    "default (same seeds), range = that boundary's range over the seed runs; it follows the warm-up if shift >= 2 "
    "and shift > range: holds if |shift| <= range for both curves; does not hold if it follows the warm-up for "
    "either; otherwise inconclusive",
    ("S08",),
)
PATTERNS = Spec(
    "P3",
    "paper Sec. 1 (2), Sec. 4.2",
    "Maintaining, shifting and grouping features all occur",
    ("formation",),
    "each pattern's share of live features (interrupted identities counted apart) at token shares 0.4, 0.5, 0.6: "
    "holds if all >= 1%; does not hold if one is < 1% at 0.5; otherwise inconclusive",
    ("02",),
)
PATTERNS_ROBUST = Spec(
    "P3r",
    "paper Sec. 4.2 (control)",
    "Each sub-pattern's count is robust to the token-share rule",
    ("formation",),
    "over the paper's sub-patterns (maintaining, shifting, grouping) with >= 5% of live features at 0.5 (none: "
    "inconclusive): holds if every "
    "count at 0.4 and 0.6 is within a factor 1.5 of its count at 0.5; does not hold if one is off by more than a "
    "factor 2; otherwise inconclusive",
    ("02",),
)


def link_efficiency(r: Results) -> Claim:
    """Paper Sec. 3.2 / App. C: with recurrent initialisation a later link needs about 1/20 of a from-scratch SAE's
    tokens to reach its loss (the convergence study's non-trivial probes)."""
    ratio = r.get("chain", "median_token_ratio_nontrivial")
    steps = r.get("chain", "convergence_summary", "nontrivial_steps")
    if ratio is None or steps is None:
        return EFFICIENCY.missing("no convergence study in this run")
    verdict = three_way(len(steps) >= 2 and ratio <= 0.05, len(steps) >= 2 and ratio > 0.05)
    about = f" (about 1/{1 / ratio:.0f})" if ratio > 0 else ""
    return EFFICIENCY.claim(ratio, f"median token ratio {fmt(ratio)}{about}", len(steps),
                            f"{len(steps)} non-trivial probes (steps {steps}) against from-scratch SAEs", verdict,
                            f"{fmt(ratio)} {'<=' if ratio <= 0.05 else '>'} 0.05")  # fmt: skip


def _seed_counts(r: Results, perspective: str) -> list[int]:
    runs = r.get("seeds", "runs") or []
    return [x["phases"][perspective]["index"]["preferred"] for x in runs if not str(x["name"]).startswith("warmup")]


def three_phases(r: Results) -> Claim:
    """Paper Sec. 4.1: feature evolution has three phases (Initialization & Warmup, Emergent, Convergent) - read as:
    piecewise-linear fits of the phase curves prefer three segments, over seeds."""
    drift, progress = _seed_counts(r, "drift"), _seed_counts(r, "progress")
    counts = drift + progress
    if not counts:
        return THREE_PHASES.missing("no seed study in this run")
    share = float(np.mean([c == 3 for c in counts]))
    nano = r.get("drift", "phases_from_drift", "index", "preferred_segments")
    return THREE_PHASES.claim(share, f"{share:.0%} of {len(counts)} fits prefer 3 segments (drift: {drift}; progress: "
                              f"{progress})", nano, f"the default run's drift curve prefers {nano}",
                              three_way(share >= 0.8, share <= 0.2), f"{share:.0%} prefer three")  # fmt: skip


def warmup_not_boundary(r: Results) -> Claim:
    """The warm-up control: the first phase boundary is not set by the end of the learning-rate warm-up."""
    control = r.get("seeds", "warmup_control")
    if not control:
        return WARMUP.missing("no warm-up control in this run")
    shifts = {p: control[p]["shift_checkpoints"] for p in ("drift", "progress")}
    ranges = {p: control[p]["seed_range_checkpoints"] for p in ("drift", "progress")}
    if any(v is None for v in (*shifts.values(), *ranges.values())):
        return WARMUP.missing("a three-segment fit is missing")
    follows = [p for p in shifts if shifts[p] >= 2 and shifts[p] > ranges[p]]
    steps = {p: f"step {control[p]['default_emergent_step']} -> {control[p]['control_emergent_step']}" for p in shifts}
    return WARMUP.claim(max(shifts.values(), key=abs),
                        f"warm-up {control['default_warmup']} -> {control['control_warmup']} steps moves the first "
                        f"boundary by {shifts['drift']} (drift: {steps['drift']}) and {shifts['progress']} checkpoints "
                        f"(progress: {steps['progress']})", max(ranges.values()),
                        f"range over the seed runs: drift {ranges['drift']}, progress {ranges['progress']} checkpoints",
                        three_way(all(abs(shifts[p]) <= ranges[p] for p in shifts), bool(follows)),
                        f"follows the warm-up: {follows or 'neither curve'}")  # fmt: skip


def _pattern_shares(r: Results, threshold: str) -> dict[str, float] | None:
    entry = r.get("formation", "pattern_sensitivity", threshold, "patterns")
    live = sum(entry.values()) if entry else 0
    return {k: v / live for k, v in entry.items()} if live else None


def patterns_exist(r: Results) -> Claim:
    """Paper Sec. 4.2: three evolution patterns - maintaining, shifting, grouping - at every token-share threshold."""
    shares = {t: _pattern_shares(r, t) for t in ("0.4", "0.5", "0.6")}
    if any(s is None for s in shares.values()):
        return PATTERNS.missing("no pattern sensitivity in this run")
    names = ("maintaining", "shifting", "grouping")
    low = min(s.get(p, 0.0) for s in shares.values() if s for p in names)
    default = shares["0.5"] or {}
    interrupted = r.get("formation", "interrupted", "count")
    return PATTERNS.claim(low, "shares at 0.5: " + ", ".join(f"{p} {default.get(p, 0):.0%}" for p in names),
                          interrupted, f"interrupted identities, counted apart: {fmt(interrupted)}",
                          three_way(low >= 0.01, min(default.get(p, 0.0) for p in names) < 0.01),
                          f"smallest share over thresholds {low:.1%}")  # fmt: skip


def patterns_robust(r: Results) -> Claim:
    """Sec. 4.2 read as a measurement: each sub-pattern's count does not hinge on the 50% token-share rule."""
    subs = {t: r.get("formation", "pattern_sensitivity", t, "sub_patterns") for t in ("0.4", "0.5", "0.6")}
    if any(not s for s in subs.values()):
        return PATTERNS_ROBUST.missing("no sub-pattern sensitivity in this run")
    live = sum(subs["0.5"].values())
    factors = {}
    for name, count in subs["0.5"].items():
        if count >= 0.05 * live and name.split(":")[0] in ("maintaining", "shifting", "grouping"):
            factors[name] = max(max(c, count) / max(min(c, count), 1) for c in (subs["0.4"].get(name, 0),
                                                                                subs["0.6"].get(name, 0)))  # fmt: skip
    worst_name = max(factors, key=lambda k: factors[k]) if factors else None
    worst = factors.get(worst_name, 1.0) if worst_name else 1.0
    counts = "/".join(str(subs[t].get(worst_name, 0)) for t in ("0.4", "0.5", "0.6")) if worst_name else ""
    return PATTERNS_ROBUST.claim(worst, f"largest change factor {worst:.2f} ({worst_name}: {counts} at 0.4/0.5/0.6)",
                                 None, "counts at token shares 0.4 and 0.6 beside 0.5",
                                 three_way(bool(factors) and worst <= 1.5, worst > 2),
                                 f"worst factor {worst:.2f}" if factors else "no sub-pattern reaches 5%")  # fmt: skip
