"""The plan of notebook 07's stage: the explorer's shaded top contexts (one pass over each checkpoint's analysis set,
one dot product per shown token), the nearest features at the final link, and one data file per feature."""

from __future__ import annotations

from saetrack.planning.common import PlanInputs, StagePlan, forward_workspace_bytes, sae_bytes, streamed_model_bytes
from saetrack.stages.explorer.contexts import BLOCK_ROWS, PAIR_CHUNK
from saetrack.stages.explorer.nearest import NEAREST_CHUNK

__all__ = ["PAGE_SECONDS_PER_CELL", "explorer_disk_bytes", "plan"]

#: Host seconds to write one (feature, checkpoint) cell of the feature pages (JSON of its contexts and curves),
#: measured on nano in the pipeline: 2.3 s for 1,024 features x 28 checkpoints on a 2-core CPU.
PAGE_SECONDS_PER_CELL = 8e-5
#: Bytes of the plotting library copied into the site (Plotly.js basic bundle, minified).
PLOTLY_BYTES = 1_200_000


def explorer_disk_bytes(inputs: PlanInputs) -> int:
    """Bytes of the site (a bound): per feature and checkpoint its contexts (row, activation and a shade per token, as
    JSON) and its curves, per feature its distinct windows' token ids (at most one per shown context), plus the
    plotting library. The published copy under ``figures/`` doubles it."""
    cfg, n_ckpt, f = inputs.run.explorer, inputs.n_checkpoints, inputs.d_sae
    width = cfg.context_before + cfg.context_after + 1
    per_cell = cfg.contexts_per_checkpoint * (width * 4 + 24) + 60
    windows = n_ckpt * cfg.contexts_per_checkpoint * (width * 7 + 12)
    return f * (n_ckpt * per_cell + windows + 600) + PLOTLY_BYTES


def plan(inputs: PlanInputs) -> list[StagePlan]:
    """The ``explorer`` line."""
    run, d, f, n_ckpt = inputs.run, inputs.d_model, inputs.d_sae, inputs.n_checkpoints
    cfg = run.explorer
    width = cfg.context_before + cfg.context_after + 1
    cells = n_ckpt * f * cfg.contexts_per_checkpoint
    analysis = inputs.context_tokens("analysis")
    line = StagePlan(
        "explorer",
        # streamed: each checkpoint's analysis set is read once (only the batches holding a shown token)
        forward_tokens=analysis * n_ckpt if run.cache.streamed else 0,
        disk=explorer_disk_bytes(inputs),
        # the shaded windows of every checkpoint (uint8), their rows and activations, the per-feature arrays of every
        # stage ([T, F] float64: cosines, frequency, progress; labels), one block of rows
        host=cells * (width + 12) + n_ckpt * f * (6 * 8 + 40) + BLOCK_ROWS * d * 4,
        # one link, one block of rows, a chunk of gathered rows and encoder columns, the nearest-feature block
        device=(streamed_model_bytes(inputs) + forward_workspace_bytes(inputs) if run.cache.streamed else 0)
        + sae_bytes(d, f)
        + BLOCK_ROWS * d * 4
        + 2 * PAIR_CHUNK * d * 4
        + NEAREST_CHUNK * f * 4
        + f * d * 4,
        owner="explorer",
    )
    compute = (cells * width * 2 * d + 2 * f * f * d) / inputs.rates.sae_flops
    line.seconds = line.forward_tokens * inputs.forward_seconds + compute + n_ckpt * f * PAGE_SECONDS_PER_CELL
    line.notes.append(f"{f:,} feature pages, {cells * width:,} shaded tokens; the published copy doubles the disk")
    return [line]
