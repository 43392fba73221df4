"""The plan of notebook 03's stage: per checkpoint, the feature statistics and top-k contexts of the analysis set,
the similarity measures of Eq. 15/18 over every feature's datapoints, and the progress measures. The statistics
and top-k are one fused scan on the device (:mod:`saetrack.analysis.feature_scan`)."""

from __future__ import annotations

from saetrack.analysis.feature_scan import scan_host_bytes
from saetrack.planning.common import (
    GB,
    PlanInputs,
    StagePlan,
    forward_workspace_bytes,
    sae_bytes,
    streamed_model_bytes,
)

#: Rows the formation stage's scan encodes at a time (:func:`saetrack.analysis.feature_scan.scan_device`'s default).
SCAN_BATCH_ROWS = 8192

__all__ = ["plan"]


def plan(inputs: PlanInputs) -> list[StagePlan]:
    """The ``formation`` line."""
    run, d, f = inputs.run, inputs.d_model, inputs.d_sae
    k, n_ckpt, analysis = run.formation.top_k, inputs.n_checkpoints, inputs.context_tokens("analysis")
    traffic = scan_host_bytes(analysis, d, f, k)
    batch = SCAN_BATCH_ROWS
    line = StagePlan(
        "formation",
        # streamed: the analysis set's rows are computed when read: one pass for the statistics and top-k (fused,
        # on the device), one for the datapoints D_i, and the random and UMAP rows
        forward_tokens=3 * analysis * n_ckpt if run.cache.streamed else 0,
        disk=n_ckpt * f * k * 12,
        # the [F, k, d] datapoints of every feature (gathered once), the per-checkpoint tables, one batch of rows
        host=f * k * d * 4 + n_ckpt * f * k * 12 + batch * d * 4,
        # the model (streamed), the SAE, a [b, F] activation block, the running top-k merged with it ([F, k + b]
        # values, the top-k's output) and the float64 sums, counts and maxima (analysis.feature_scan)
        device=(streamed_model_bytes(inputs) + forward_workspace_bytes(inputs) if run.cache.streamed else 0)
        + sae_bytes(d, f)
        + 3 * 4 * batch * f
        + 2 * 12 * f * k
        + 24 * f,
        owner="formation",
    )
    line.notes.append(
        f"host traffic a checkpoint: {traffic['h2d'] / GB:,.1f} GB of rows up, {traffic['d2h'] / 1e6:,.1f} MB of "
        "statistics and top-k down (one copy)"
    )
    encode = analysis * 2 * d * f  # one pass encodes the analysis set
    encode = 2 * analysis * 2 * d * f  # two passes encode the analysis set
    similarities = 2 * f * k * d * f + 8 * f * k * k * f  # Eq. 15/18 over every feature's D_i
    compute = n_ckpt * (encode + similarities) / inputs.rates.sae_flops
    line.seconds = line.forward_tokens * inputs.forward_seconds + compute
    if not run.cache.streamed:
        line.notes.append("reads the cached analysis set of one checkpoint at a time")
    return [line]
