"""The paper's drift claims (Sec. 1 (4), Sec. 6) against the drift noise floor and the random-walk null, and the
scale study's "same behaviour at every size" (App. C.3). Rules were fixed before the runs they judge were looked at
(issue 20); each is stated in its spec.
"""

from __future__ import annotations

from saetrack.ledger.claim import Claim, Results, Spec, fmt, three_way

__all__ = [
    "AFTER_FORMATION",
    "DIRECTED",
    "EVERY_SIZE",
    "SETTLES",
    "drift_continues_after_formation",
    "drift_settles",
    "every_size",
    "trajectories_directed",
]


SETTLES = Spec(
    "P5a",
    "paper Sec. 1 (4), Sec. 6.1",
    "Directions drift early, then settle to within SAE-training noise",
    ("drift",),
    "m0 = median decoder cosine to final at the first checkpoint; per checkpoint within the noise floor's reach, "
    "whether the median lies below the floor's 5% quantile at the same distance (beyond noise): holds if m0 <= 0.5 "
    "and the checkpoints are beyond noise up to some step and within it at every later one; does not hold if m0 > "
    "0.8 or no checkpoint is within the floor; otherwise inconclusive",
    ("06a", "06b"),
)
AFTER_FORMATION = Spec(
    "P5b",
    "paper Sec. 1 (4), Sec. 6",
    "Directions keep drifting after a feature has formed",
    ("drift",),
    "c_f = median decoder cosine to final at formation (features formed after the first checkpoint), against the "
    "noise floor after all its links (the most drift SAE training alone makes): holds if c_f < the floor's 5% "
    "quantile; does not hold if c_f >= the floor's median; otherwise inconclusive",
    ("06b", "07"),
)
DIRECTED = Spec(
    "P5c",
    "paper Sec. 6.2, Fig. 7",
    "Feature trajectories are directed, not random walks",
    ("drift",),
    "share of Fig. 7's trajectories whose straightness (end-to-end distance / path length) exceeds the 95% quantile"
    " of 200 random walks on the sphere with its step sizes: holds if >= 50%; does not hold if <= 10%; otherwise "
    "inconclusive",
    ("07", "07n"),
)
EVERY_SIZE = Spec(
    "P6",
    "paper Sec. 1 (5), App. C.3",
    "The drift and formation readings repeat at every model size",
    ("scale",),
    "per size: (i) median decoder cosine to final at the first checkpoint <= 0.5 and (ii) the concept-level "
    "normalised coherence rises (final > first): holds if both at every size; does not hold if either fails at >= 2"
    " sizes; otherwise inconclusive",
    ("S06", "10", "11", "14", "15"),
)


def _settling(flags: list[bool]) -> str:
    """ "settles" when the compared checkpoints are beyond the floor up to some point and within it after (both
    present), "never" when none is within it, "alternates" otherwise."""
    if all(flags):
        return "never"
    first_within = flags.index(False)
    return "settles" if first_within > 0 and not any(flags[first_within:]) else "alternates"


def drift_settles(r: Results) -> Claim:
    """Paper Sec. 6: decoder directions drift substantially early and stabilise at the end - read against the noise
    floor of links retrained on the unchanged final checkpoint."""
    first = r.get("drift", "median_cosine_to_final", "first", "value")
    per = r.get("drift", "noise_floor", "per_checkpoint")
    if first is None or not per:
        return SETTLES.missing("no noise floor in this run")
    shape = _settling([bool(c["beyond_noise"]) for c in per])
    within = r.get("drift", "noise_floor", "steps_within_noise") or []
    last = r.get("drift", "noise_floor", "last_checkpoint_beyond_noise")
    return SETTLES.claim(first, f"median cosine to final {fmt(first)} at the first checkpoint; last step beyond the "
                         f"floor: {last}", min(within) if within else None, f"within the noise floor at steps "
                         f"{within or 'none'}", three_way(first <= 0.5 and shape == "settles",
                                                          first > 0.8 or shape == "never"),
                         f"m0 {fmt(first)}; the drift {shape} into the floor")  # fmt: skip


def drift_continues_after_formation(r: Results) -> Claim:
    """Paper Sec. 6: directions keep drifting after a feature has formed - more than SAE training noise alone."""
    value = r.get("drift", "drift_after_formation", "median_cosine_at_formation")
    q05 = r.get("drift", "noise_floor", "q05_after_all_links")
    median = r.get("drift", "noise_floor", "median_after_all_links")
    if value is None or q05 is None or median is None:
        return AFTER_FORMATION.missing("no formation times or noise floor in this run")
    features = r.get("drift", "drift_after_formation", "features")
    links = r.get("drift", "noise_floor", "links")
    return AFTER_FORMATION.claim(value, f"median cosine to final at formation {fmt(value)} ({fmt(features)} features "
                                 "formed after the first checkpoint)", q05, f"noise floor after {links} links: 5% "
                                 f"quantile {fmt(q05)}, median {fmt(median)}", three_way(value < q05, value >= median),
                                 f"{fmt(value)} against {fmt(q05)} / {fmt(median)}")  # fmt: skip


def trajectories_directed(r: Results) -> Claim:
    """Paper Def. 6.1 / Fig. 7: a feature's trajectory goes from where it starts to its final direction - read as:
    straighter than random walks with the same step sizes."""
    t = r.get("drift", "trajectories")
    if not t or not t.get("trajectories"):
        return DIRECTED.missing("no trajectories in this run")
    share = t["share_straightness_beyond_null_q95"]
    return DIRECTED.claim(share, f"{share:.0%} of {t['trajectories']} trajectories straighter than their null "
                          f"(median straightness {fmt(t['median_straightness'])}, PC1 {t['median_pc1']:.0%})",
                          t["null_median_straightness"], f"random walks: median straightness "
                          f"{fmt(t['null_median_straightness'])}, PC1 {t['null_median_pc1']:.0%}",
                          three_way(share >= 0.5, share <= 0.1), f"{share:.0%} beyond the null")  # fmt: skip


def _size_reads(size: dict) -> bool:
    """Whether one size of the scale study shows both readings of :data:`EVERY_SIZE`."""
    first = size["drift"]["median_cosine_to_final"]["first"]["value"]
    concept = (size.get("normalised_progress") or {}).get("concept") or {}
    if concept.get("first") is None or concept.get("final") is None:
        return False
    return first <= 0.5 and concept["final"] > concept["first"]


def every_size(r: Results) -> Claim:
    """Paper App. C.3: the behaviour is the same at every model size (the scale study's sizes)."""
    sizes = r.get("scale", "sizes")
    if not sizes:
        return EVERY_SIZE.missing("no scale study in this run")
    failing = [s["preset"] for s in sizes if not _size_reads(s)]
    shown = len(sizes) - len(failing)
    return EVERY_SIZE.claim(shown, f"{shown} of {len(sizes)} sizes show both readings", None,
                            f"sizes failing a reading: {failing or 'none'}",
                            three_way(not failing, len(failing) >= 2), f"failing: {failing or 'none'}")  # fmt: skip
