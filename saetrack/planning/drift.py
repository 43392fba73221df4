"""The plan of notebook 04's stage: each link's decoder cosine to the final link, the sampled features'
trajectories, and the noise floor (links retrained on the final checkpoint, ``drift.noise_floor_links``); and the
checkpoint-density study (``drift.density_strides``): the links of the chains over every s-th checkpoint, each trained
on ``chain.link_tokens`` and evaluated on the held-out tokens as a chain link is."""

from __future__ import annotations

from saetrack.planning.common import PlanInputs, StagePlan, sae_bytes, sae_training_device_bytes
from saetrack.stages.drift.decoders import drift_peak_bytes
from saetrack.stages.drift.density_rules import density_positions

__all__ = ["density_cost", "density_links", "drift_host_bytes", "noise_floor_cost", "plan"]


def drift_host_bytes(inputs: PlanInputs) -> int:
    """Peak host bytes of the drift measures (:func:`saetrack.stages.drift.decoders.drift_peak_bytes`): the final
    and the current link's decoders, one link at a time, the per-link cosines, the sampled trajectories' rows and
    the noise floor's cosines."""
    run = inputs.run
    n_noise = inputs.n_checkpoints - 1 if run.drift.noise_floor_links is None else run.drift.noise_floor_links
    n_sample = 3 * run.drift.trajectories_per_pattern
    return drift_peak_bytes(inputs.n_checkpoints, inputs.d_sae, inputs.d_model, n_sample, n_noise=n_noise)


def plan(inputs: PlanInputs) -> list[StagePlan]:
    """The ``drift`` line: the drift measures and the noise floor, plus the density study's links
    (:func:`density_cost`), whose tokens, time, disk and notes it adds."""
    run, n_ckpt = inputs.run, inputs.n_checkpoints
    noise = noise_floor_cost(inputs)
    n_noise = n_ckpt - 1 if run.drift.noise_floor_links is None else run.drift.noise_floor_links
    line = StagePlan(
        "drift",
        forward_tokens=noise.forward_tokens,
        sae_tokens=noise.sae_tokens,
        host=drift_host_bytes(inputs),
        disk=n_ckpt * inputs.d_sae * 8 * 4,
        device=noise.device,
        owner="drift",
        seconds=noise.seconds,
    )
    if n_noise:
        line.notes.append(f"noise floor: {n_noise} links of {run.chain.tokens_for(n_ckpt - 1):,} tokens")
    density = density_cost(inputs)
    if density is not None:
        line.forward_tokens += density.forward_tokens
        line.sae_tokens += density.sae_tokens
        line.disk += density.disk
        line.host = max(line.host, density.host)
        line.device = max(line.device, density.device)
        line.seconds += density.seconds
        line.notes += density.notes
    return [line]


def noise_floor_cost(inputs: PlanInputs) -> StagePlan:
    """The noise floor's share of the drift line: ``M`` links of the final link's budget retrained on the final
    checkpoint (streamed: the model runs for their tokens); what a spread job's ``noise_floor`` unit computes."""
    run, n_ckpt = inputs.run, inputs.n_checkpoints
    n_noise = n_ckpt - 1 if run.drift.noise_floor_links is None else run.drift.noise_floor_links
    tokens = n_noise * run.chain.tokens_for(n_ckpt - 1)
    line = StagePlan("noise floor", forward_tokens=tokens if run.cache.streamed else 0, sae_tokens=tokens,
                     device=sae_training_device_bytes(inputs) if n_noise else 0, owner="drift")  # fmt: skip
    line.seconds = tokens * inputs.sae_step_seconds + line.forward_tokens * inputs.forward_seconds
    return line


def density_links(n_checkpoints: int, strides: tuple[int, ...]) -> int:
    """Links the density study trains: per stride, its chain's links after the first (which is the run's own)."""
    return sum(len(density_positions(n_checkpoints, s)) - 1 for s in strides)


def density_cost(inputs: PlanInputs) -> StagePlan | None:
    """The density study's share of the drift line (None when the study is off): :func:`density_links` links of
    ``chain.link_tokens`` each, evaluated on the held-out tokens (streamed: the model runs for both), each saved."""
    run = inputs.run
    strides = run.drift.density_strides
    if not strides:
        return None
    n_links = density_links(inputs.n_checkpoints, strides)
    tokens = n_links * run.chain.link_tokens
    heldout = inputs.context_tokens("heldout") * n_links
    line = StagePlan(
        "density",
        forward_tokens=tokens + heldout if run.cache.streamed else 0,
        sae_tokens=tokens,
        disk=n_links * sae_bytes(inputs.d_model, inputs.d_sae),
        host=inputs.context_tokens("heldout") * inputs.d_model * 4 + 4 * inputs.params,
        device=sae_training_device_bytes(inputs) if n_links else 0,
        owner="drift",
    )
    line.seconds = tokens * inputs.sae_step_seconds + line.forward_tokens * inputs.forward_seconds
    line.notes.append(f"density study (strides {', '.join(map(str, strides))}): {n_links} links of "
                      f"{run.chain.link_tokens:,} tokens")  # fmt: skip
    return line
