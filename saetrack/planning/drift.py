"""The plan of notebook 04's stage: each link's decoder cosine to the final link, the sampled features'
trajectories, and the noise floor (links retrained on the final checkpoint, ``drift.noise_floor_links``)."""

from __future__ import annotations

from saetrack.planning.common import PlanInputs, StagePlan, sae_training_device_bytes
from saetrack.stages.drift.decoders import drift_peak_bytes

__all__ = ["drift_host_bytes", "plan"]


def drift_host_bytes(inputs: PlanInputs) -> int:
    """Peak host bytes of the drift measures (:func:`saetrack.stages.drift.decoders.drift_peak_bytes`): the final
    and the current link's decoders, one link at a time, the per-link cosines, the sampled trajectories' rows and
    the noise floor's cosines."""
    run = inputs.run
    n_noise = inputs.n_checkpoints - 1 if run.drift.noise_floor_links is None else run.drift.noise_floor_links
    n_sample = 3 * run.drift.trajectories_per_pattern
    return drift_peak_bytes(inputs.n_checkpoints, inputs.d_sae, inputs.d_model, n_sample, n_noise=n_noise)


def plan(inputs: PlanInputs) -> list[StagePlan]:
    """The ``drift`` line."""
    run, n_ckpt = inputs.run, inputs.n_checkpoints
    n_noise = n_ckpt - 1 if run.drift.noise_floor_links is None else run.drift.noise_floor_links
    noise_tokens = n_noise * run.chain.tokens_for(n_ckpt - 1)
    line = StagePlan(
        "drift",
        forward_tokens=noise_tokens if run.cache.streamed else 0,
        sae_tokens=noise_tokens,
        host=drift_host_bytes(inputs),
        disk=n_ckpt * inputs.d_sae * 8 * 4,
        device=sae_training_device_bytes(inputs) if n_noise else 0,
        owner="drift",
    )
    line.seconds = noise_tokens * inputs.sae_step_seconds + line.forward_tokens * inputs.forward_seconds
    if n_noise:
        line.notes.append(f"noise floor: {n_noise} links of {run.chain.tokens_for(n_ckpt - 1):,} tokens")
    return [line]
