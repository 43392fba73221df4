"""The plan of notebook 02's stage: the chain's links, the from-scratch baselines, and the comparison stage's work
(the convergence probes, the second-seed SAEs, and the feature matchings of index stability and agreement).

A matching of two ``F``-feature dictionaries (:mod:`saetrack.analysis.sparse_matching`) computes ``2 F^2 d`` FLOPs of
decoder cosines per pass over blocks and keeps ``k`` candidates a side: consecutive links are proven optimal at the
first ``k`` (one pass; measured on nano), independent SAEs may need up to three passes (``k`` = 16, 64, 256). Its
host memory: the two SAEs and the candidate pairs at the largest ``k`` (indices, float32 and float64 cosines, the
sort's keys: 40 bytes a pair). Below :data:`~saetrack.analysis.matching.EXACT_MAX_CELLS` the exact assignment's
float64 cosine matrix is counted instead.
"""

from __future__ import annotations

from saetrack.analysis.matching import EXACT_MAX_CELLS
from saetrack.analysis.sparse_matching import MAX_CANDIDATES
from saetrack.planning.common import GB, PlanInputs, StagePlan, sae_bytes, sae_training_device_bytes

__all__ = ["matching_host_bytes", "matching_seconds", "plan"]

#: Bytes kept per candidate pair of a sparse matching (module doc).
CANDIDATE_PAIR_BYTES = 40


def matching_host_bytes(inputs: PlanInputs) -> int:
    """Peak host bytes of one matching of two of the run's SAEs (module doc)."""
    f = inputs.d_sae
    work = 3 * 8 * f * f if f * f <= EXACT_MAX_CELLS else CANDIDATE_PAIR_BYTES * 2 * f * MAX_CANDIDATES
    return 2 * sae_bytes(inputs.d_model, f) + work


def matching_seconds(inputs: PlanInputs, passes: int) -> float:
    """Seconds of ``passes`` passes of blocked decoder cosines between two of the run's SAEs (``2 F^2 d`` FLOPs)."""
    return passes * 2 * inputs.d_sae**2 * inputs.d_model / inputs.rates.sae_flops


def _trained(name: str, inputs: PlanInputs, n_saes: int, tokens_each: int, heldout: bool) -> StagePlan:
    """A line for ``n_saes`` SAEs trained on ``tokens_each`` tokens each (streamed: the model runs for each token)."""
    run = inputs.run
    tokens = n_saes * tokens_each
    heldout_tokens = inputs.context_tokens("heldout") * n_saes if heldout else 0
    line = StagePlan(
        name,
        forward_tokens=tokens + heldout_tokens if run.cache.streamed else 0,
        sae_tokens=tokens,
        disk=n_saes * sae_bytes(inputs.d_model, inputs.d_sae),
        host=inputs.context_tokens("heldout") * inputs.d_model * 4 + 4 * inputs.params,
        device=sae_training_device_bytes(inputs) if n_saes else 0,
        owner="chain",
    )
    line.seconds = tokens * inputs.sae_step_seconds + line.forward_tokens * inputs.forward_seconds
    return line


def _data_parallel(line: StagePlan, inputs: PlanInputs, steps: int) -> None:
    """Turn ``line`` (SAEs trained on all ranks together) into a data-parallel one: its time divided by the ranks and
    a note of the gradient all-reduce its ``steps`` optimizer steps add (bytes; the interconnect sets the time)."""
    ranks = inputs.ranks
    if ranks == 1:
        return
    line.seconds /= ranks
    line.device = sae_training_device_bytes(inputs, ranks) if line.sae_tokens else 0
    gradient = 4 * (2 * inputs.d_model * inputs.d_sae + inputs.d_sae + inputs.d_model)
    wire = 2 * (ranks - 1) / ranks * gradient  # a ring all-reduce sends and receives this much per rank
    line.notes.append(
        f"data-parallel over {ranks} ranks: per step each rank all-reduces {gradient / GB:.2f} GB of gradients "
        f"({wire / GB:.2f} GB on the wire, {steps:,} steps), not in the projected time"
    )


def plan(inputs: PlanInputs) -> list[StagePlan]:
    """The chain stage's lines: ``chain`` (every link), ``baselines`` (from scratch at the baseline steps),
    ``probes`` (the convergence study's recurrent probes), ``seed SAEs`` and ``matching`` (module doc). Over several
    ranks the chain and the baselines train data-parallel (:func:`_data_parallel`); the rest runs on rank 0."""
    run, chain = inputs.run, inputs.run.chain
    n_ckpt, n_base, n_seed = inputs.n_checkpoints, len(run.baseline_steps), len(chain.seed_control_indices)
    links = _trained("chain", inputs, 1, sum(chain.tokens_for(p) for p in range(n_ckpt)), heldout=False)
    links.forward_tokens += inputs.context_tokens("heldout") * n_ckpt if run.cache.streamed else 0
    links.disk = n_ckpt * sae_bytes(inputs.d_model, inputs.d_sae)
    links.seconds = links.sae_tokens * inputs.sae_step_seconds + links.forward_tokens * inputs.forward_seconds
    links.notes.append(f"{n_ckpt} links, each from the previous (recurrent init), {links.sae_tokens:,} tokens in all")
    _data_parallel(links, inputs, -(-links.sae_tokens // chain.batch_size))
    baselines = _trained("baselines", inputs, n_base, chain.baseline_token_budget, heldout=True)
    _data_parallel(baselines, inputs, -(-baselines.sae_tokens // chain.batch_size))
    probes = _trained("probes", inputs, n_base, chain.baseline_token_budget, heldout=False)
    probes.disk = 0
    probes.notes.append(f"{n_base} convergence probes of up to {chain.baseline_token_budget:,} tokens each")
    seeds = _trained("seed SAEs", inputs, n_seed, chain.baseline_token_budget, heldout=True)
    n_matchings = (n_ckpt - 1) + n_base + n_seed
    matching = StagePlan("matching", host=matching_host_bytes(inputs), owner="chain")
    matching.seconds = matching_seconds(inputs, n_ckpt - 1) + matching_seconds(inputs, 3 * (n_base + n_seed))
    exact = inputs.d_sae**2 <= EXACT_MAX_CELLS
    matching.notes.append(
        f"{n_matchings} matchings of {inputs.d_sae:,} features: "
        + ("exact (Hungarian)" if exact else f"sparse, up to {MAX_CANDIDATES} candidates a side, proven or flagged")
    )
    return [links, baselines, probes, seeds, matching]
