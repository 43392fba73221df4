"""The crosscoder paper's claims (Ge et al. 2025) on the same checkpoints, each against its null or control, and
whether the two methods agree (notebook 06). Rules were fixed before the runs they judge were looked at (issue 20);
each is stated in its spec.
"""

from __future__ import annotations

from saetrack.ledger.claim import Claim, Results, Spec, fmt, three_way

__all__ = [
    "AGREES",
    "BIGRAM",
    "FIRST_SNAPSHOT",
    "INFORMATIVE",
    "NORMALISATION",
    "SAME_FEATURES",
    "STATISTICS_FIRST",
    "TURNING",
    "beats_bigram_statistics",
    "emergence_agrees_with_formation",
    "emergence_informative",
    "emergence_not_first_snapshot_artefact",
    "emergence_robust_to_normalisation",
    "same_features",
    "statistical_learning_first",
    "turning_point",
]

#: The emergence fraction the claims read (the crosscoder's default rule).
FRACTION = "0.5"

INFORMATIVE = Spec(
    "X1",
    "Ge et al. 2025: emergence",
    "Crosscoder decoder norms time the emergence of features",
    ("crosscoder",),
    "s = share of alive features whose decoder norm reaches 0.5 of its maximum at the first snapshot, against the "
    "same share with the snapshot labels permuted (5-95% over permutations) and with one snapshot repeated T times:"
    " holds if s is below the permutation null's 5% quantile and at least 0.1 below the repeated-snapshot null; "
    "does not hold if s lies within the permutation null's 5-95% range; otherwise inconclusive",
    ("X02", "X03"),
)
FIRST_SNAPSHOT = Spec(
    "X2",
    "Ge et al. 2025: emergence (control)",
    "Emergence does not pile onto whichever snapshot comes first",
    ("crosscoder",),
    "with steps <= 8 dropped, d = share emerging at the new first snapshot, c = share of the same (matched) "
    "features the full crosscoder had emerged by that step: holds if d <= c + 0.1; does not hold if d >= c + 0.25; "
    "otherwise inconclusive",
    ("X03",),
)
NORMALISATION = Spec(
    "X3",
    "Ge et al. 2025: emergence (control)",
    "Emergence does not depend on the input normalisation",
    ("crosscoder",),
    "share at the first snapshot with centred (RMS) normalisation against the uncentred mean-norm one: holds if "
    "they differ by <= 0.1; does not hold if by > 0.25; otherwise inconclusive",
    ("X02", "X03"),
)
AGREES = Spec(
    "X4",
    "this project: crosscoder vs chain",
    "Crosscoder emergence and chain formation agree on timing",
    ("crosscoder",),
    "Kendall tau-b (ties handled) over features matched between the crosscoder and the final link, with a "
    "permutation p-value: holds if tau >= 0.3 and p < 0.01; does not hold if p >= 0.05; otherwise inconclusive",
    ("X06",),
)
STATISTICS_FIRST = Spec(
    "X5",
    "Ge et al. 2025: statistical learning",
    "Unigram statistics are learned before features emerge",
    ("crosscoder", "drift"),
    "the step at which the unigram KL of the mean prediction falls below 10% of its start, against the chain's "
    "Emergent boundary (three-segment fit of decoder drift, checkpoint index): holds if at or before it; does not "
    "hold if 2 or more checkpoints after it; otherwise inconclusive",
    ("X05", "X07"),
)
BIGRAM = Spec(
    "X6",
    "Ge et al. 2025: statistical learning",
    "By the end the model beats the bigram statistics",
    ("crosscoder",),
    "held-out loss at the final checkpoint against the conditional bigram entropy H(B|A) of the training stream: "
    "holds if below it by more than 0.05 nats; does not hold if above it by more than 0.05 nats; otherwise "
    "inconclusive",
    ("X05",),
)
TURNING = Spec(
    "X7",
    "Ge et al. 2025: directional turning point",
    "Features turn sharply at one point of training",
    ("crosscoder",),
    "lowest median cosine between consecutive snapshots' decoder directions: holds if <= 0.5; does not hold if >= "
    "0.8; otherwise inconclusive",
    ("X04",),
)
SAME_FEATURES = Spec(
    "X8",
    "this project: crosscoder vs chain",
    "Crosscoder and chain find the same features",
    ("crosscoder",),
    "median Hungarian-matched decoder cosine between the crosscoder (final snapshot) and the final chain link, "
    "minus the same against random unit vectors: holds if >= 0.3; does not hold if <= 0.1; otherwise inconclusive",
    ("X08",),
)


def emergence_informative(r: Results) -> Claim:
    """Ge et al.: features emerge at different times, read from decoder norms - against the nulls of a snapshot
    repeated T times and of permuted snapshot labels."""
    share = r.get("crosscoder", "emergence_at_first", FRACTION)
    perm = r.get("crosscoder", "nulls", "permuted") or {}
    repeated = r.get("crosscoder", "nulls", "repeated", "emerged_at_first", FRACTION)
    q05 = (perm.get("emerged_at_first_q05") or {}).get(FRACTION)
    q95 = (perm.get("emerged_at_first_q95") or {}).get(FRACTION)
    if share is None or repeated is None or q05 is None or q95 is None:
        return INFORMATIVE.missing("no crosscoder nulls in this run")
    mean = (perm.get("emerged_at_first_mean") or {}).get(FRACTION)
    return INFORMATIVE.claim(share, f"{share:.0%} of features reach half their maximum norm at the first snapshot",
                             mean, f"permuted labels: {fmt(mean)} (5-95% {fmt(q05)}-{fmt(q95)}); one snapshot "
                             f"repeated: {fmt(repeated)}", three_way(share < q05 and share <= repeated - 0.1,
                                                                     q05 <= share <= q95),
                             f"{fmt(share)} against {fmt(q05)}-{fmt(q95)}")  # fmt: skip


def emergence_not_first_snapshot_artefact(r: Results) -> Claim:
    """Null (iii): with the earliest snapshots (steps 0-8) dropped, emergence does not pile onto the new first one."""
    dropped = r.get("crosscoder", "nulls", "dropped_early") or {}
    d = (dropped.get("emerged_at_first") or {}).get(FRACTION)
    c = dropped.get("same_features_in_full_emerged_by_first_step")
    if d is None or c is None:
        return FIRST_SNAPSHOT.missing("no dropped-snapshot crosscoder in this run")
    return FIRST_SNAPSHOT.claim(d, f"{d:.0%} emerge at the new first snapshot (step {dropped.get('first_step')})", c,
                                f"the full crosscoder had {c:.0%} of the same {dropped.get('matched')} features by "
                                "then", three_way(d <= c + 0.1, d >= c + 0.25),
                                f"{fmt(d)} against {fmt(c)}")  # fmt: skip


def emergence_robust_to_normalisation(r: Results) -> Claim:
    """The emergence reading does not hinge on normalising each snapshot by its uncentred mean norm."""
    share = r.get("crosscoder", "emergence_at_first", FRACTION)
    centred = r.get("crosscoder", "nulls", "centred", "emerged_at_first", FRACTION)
    if share is None or centred is None:
        return NORMALISATION.missing("no centred crosscoder in this run")
    gap = abs(share - centred)
    return NORMALISATION.claim(share, f"uncentred: {share:.0%} at the first snapshot", centred, f"centred: "
                               f"{centred:.0%}", three_way(gap <= 0.1, gap > 0.25),
                               f"difference {fmt(gap)}")  # fmt: skip


def emergence_agrees_with_formation(r: Results) -> Claim:
    """The two methods on one question: does crosscoder emergence order features as the chain's formation does?"""
    e = r.get("crosscoder", "emergence_vs_formation") or {}
    tau, p = e.get("kendall_tau_b"), e.get("permutation_p")
    if tau is None or p is None:
        return AGREES.missing("no rank correlation in this run")
    tied = fmt(e.get("tied_at_first_share"))
    return AGREES.claim(tau, f"Kendall tau-b {fmt(tau)} over {e.get('n')} matched features ({tied} tied at the first "
                        "snapshot)", p, f"permutation p = {fmt(p, 3)}; null 95%: "
                        f"{fmt(e.get('null_q025'))} to {fmt(e.get('null_q975'))}", three_way(tau >= 0.3 and p < 0.01,
                                                                                              p >= 0.05),
                        f"tau {fmt(tau)}, p {fmt(p, 3)}")  # fmt: skip


def statistical_learning_first(r: Results) -> Claim:
    """Ge et al.: training first learns unigram (and bigram) statistics, then features - read as: the unigram KL has
    settled by the time the chain's Emergent phase starts."""
    settled = r.get("crosscoder", "statistical_learning", "unigram_kl_settled_step")
    emergent = r.get("drift", "phases_from_drift", "index", "emergent_step")
    steps = r.get("crosscoder", "statistical_learning", "steps") or []
    if settled is None or emergent is None or settled not in steps or emergent not in steps:
        return STATISTICS_FIRST.missing("a step is missing")
    lag = steps.index(settled) - steps.index(emergent)
    return STATISTICS_FIRST.claim(settled, f"unigram KL below 10% of its start by step {settled}", emergent,
                                  f"the chain's Emergent phase starts at step {emergent}",
                                  three_way(lag <= 0, lag >= 2), f"{lag:+d} checkpoints")  # fmt: skip


def beats_bigram_statistics(r: Results) -> Claim:
    """Ge et al.'s phase transition read on the loss: by the end the model predicts held-out text better than the
    bigram statistics of its training stream."""
    sl = r.get("crosscoder", "statistical_learning") or {}
    if not sl.get("loss") or sl.get("bigram_entropy") is None:
        return BIGRAM.missing("no statistical-learning measures in this run")
    loss, entropy = sl["loss"][-1], sl["bigram_entropy"]
    gap = loss - entropy
    return BIGRAM.claim(loss, f"held-out loss {loss:.3f} nats at step {sl['steps'][-1]}", entropy,
                        f"bigram entropy {entropy:.3f} nats", three_way(gap < -0.05, gap > 0.05),
                        f"{gap:+.3f} nats")  # fmt: skip


def turning_point(r: Results) -> Claim:
    """Ge et al.: nearly all features turn at once to nearly orthogonal directions (the directional turning point)."""
    value = r.get("crosscoder", "min_adjacent_median_cosine")
    if value is None:
        return TURNING.missing("no crosscoder in this run")
    step = r.get("crosscoder", "turning_point_step")
    emergent = r.get("drift", "phases_from_drift", "index", "emergent_step")
    return TURNING.claim(value, f"median adjacent cosine {fmt(value)} into step {step}", emergent,
                         f"the chain's Emergent phase starts at step {emergent}", three_way(value <= 0.5, value >= 0.8),
                         fmt(value))  # fmt: skip


def same_features(r: Results) -> Claim:
    """Do the two methods find the same features? The crosscoder's decoders matched to the final chain link, against
    matching them to random directions."""
    matching = r.get("crosscoder", "matching") or {}
    baseline = matching.get("random_baseline_median")
    steps = [k for k in matching if str(k).isdigit()]
    if baseline is None or not steps:
        return SAME_FEATURES.missing("no matching baseline in this run")
    final = matching[max(steps, key=int)]["median_cosine"]
    margin = final - baseline
    return SAME_FEATURES.claim(final, f"median matched cosine {fmt(final)} at the final checkpoint", baseline,
                               f"random directions: {fmt(baseline)}", three_way(margin >= 0.3, margin <= 0.1),
                               f"margin {fmt(margin)}")  # fmt: skip
