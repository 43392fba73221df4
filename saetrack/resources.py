"""The resource plan of a run: before any work, what each stage will process and need, and whether it fits.

For every stage: the tokens it runs through the model (forward passes), the SAE training tokens, the disk, host
memory and device memory it needs at its peak, and a projected time. Everything is computed from the config alone
(no model, dataset or tokenizer is loaded) and from two rates measured on this machine when the plan is made: the
device's float32 matmul rate at an SAE step's shape and at a model forward's shape (:func:`measure_rates`). A
projection is ``FLOPs / measured rate``: the FLOPs of a model forward up to the hooked layer (``2 x parameters``
per token: attention and MLP of the blocks before the hook) and of an SAE training step (``12 x d_in x d_sae`` per
token, the forward and backward matmuls). It ignores data loading and elementwise work, so on a quiet machine it is
a lower bound; ``benchmarks/bench_streaming.py`` measures whole runs, and ``run_all.py --plan`` prints each
notebook's measured time from a run directory's last execution beside it.

Notebook 06's stages are planned the same way. ``crosscoder``: the activations of ``crosscoder.train_contexts``
training contexts at every snapshot, cached once (``N x T x d`` values of the cache's storage dtype; forwards
``N x T``), and a training compute per token and epoch of ``12 d_sae T d`` FLOPs on a GPU (the dense step: the
forward and backward products of encoder and decoder, whose parameters are ``2 d_sae T d``) and of ``2 d_sae T d``
on a CPU (the encoder forward, the one dense product of the sparse step, :mod:`saetrack.crosscoder.sparse`; its work
over active features only is not counted, so this too is a lower bound), once more for every control crosscoder
(``crosscoder.controls``, trained alike, each counted with all T snapshots); device memory: the parameters, their
gradients and Adam's two moments, one ``[batch, T, d]`` batch and its reconstruction and the batch's feature
activations. ``statistics``: a full forward with logits of every chain checkpoint over at
most 256 held-out contexts and the corpus's unigram and bigram counts.

The ``cache`` stage of a preset that trains its own model suite also counts the suite's training (``6 x parameters``
FLOPs per token of its ``total_steps x batch_size x context_length`` tokens). Notebook 05's ``scale`` stage is the
sum of the whole-pipeline plans (notebooks 01-04) of the scale study's other sizes and of the seed study's runs
(each with :data:`~saetrack.stages.scale.seeds.LIGHT_OVERRIDES`; a chain-seed variant shares its model suite, so its
suite training is not counted again). The jobs run two at a time on separate threads, which shares the same
machine: the projection is the work's total, not divided.

:func:`check_fits` refuses (:class:`ResourceError`, one message with the numbers) when a stage needs more disk,
host memory or device memory than the machine has; ``run_all.py --ignore-resources`` goes on anyway.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from saetrack.config.presets import get_preset
from saetrack.config.run import RunConfig
from saetrack.data.cache_plan import NUMPY_DTYPES, TokenPlan, plan_tokens
from saetrack.pipeline.shape import stage_of_output
from saetrack.rates import Rates, measure_rates
from saetrack.stages.crosscoder import EVAL_TOKENS
from saetrack.stages.crosscoder.controls import control_inputs
from saetrack.stages.crosscoder.statistics import DEFAULT_HELDOUT_CONTEXTS, LOGITS_BUDGET_BYTES
from saetrack.stages.scale.seeds import seed_variants

__all__ = [
    "Rates",
    "ResourceError",
    "StagePlan",
    "check_fits",
    "crosscoder_cache_bytes",
    "format_plan",
    "human_time",
    "machine_limits",
    "measure_rates",
    "plan_run",
    "planned_for",
]

GB = 1e9
#: A run projected longer than this on a CPU is told that its preset is meant for a GPU.
CPU_DAY_S = 24 * 3600.0


class ResourceError(RuntimeError):
    """A stage needs more disk, host memory or device memory than the machine has (the message has the numbers)."""


@dataclass
class StagePlan:
    """What one stage will do and need (bytes; tokens; seconds projected from :class:`Rates`)."""

    stage: str
    forward_tokens: int = 0
    sae_tokens: int = 0
    disk: int = 0
    host: int = 0
    device: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _shapes(run: RunConfig) -> tuple[int, int, int, int]:
    """``(d_model, n_layers, vocab, d_sae)`` from the config (the suite's, or the model section's)."""
    d_model = run.model.d_model or (run.suite.d_model if run.suite else 0)
    n_layers = run.model.n_layers or (run.suite.n_layers if run.suite else 0)
    if not d_model or not n_layers:
        raise ResourceError(f"preset {run.preset!r} does not state model.d_model and model.n_layers; cannot plan.")
    vocab = run.corpus.vocab_size if run.suite and run.corpus else 50_304  # Pythia's embedding rows
    return d_model, n_layers, vocab, run.chain.expansion_factor * d_model


def _sae_bytes(d_model: int, d_sae: int) -> int:
    """Bytes of one saved SAE (float32 encoder, decoder, biases, sparsity)."""
    return 4 * (2 * d_model * d_sae + 2 * d_sae + d_model)


def _forward_flops_per_token(run: RunConfig, d_model: int) -> float:
    """FLOPs per token of a forward pass up to the hooked layer: ``2 x 12 d_model^2`` per block before it."""
    return 2 * 12 * d_model**2 * max(run.cache.layer, 1)


def crosscoder_cache_bytes(run: RunConfig, d_model: int) -> int:
    """Bytes of the crosscoder's aligned activations: ``train_contexts x context_length x T x d_model x itemsize``."""
    n_tokens = run.crosscoder.train_contexts * run.cache.context_length
    return n_tokens * len(run.crosscoder_steps) * d_model * NUMPY_DTYPES[run.cache.dtype].itemsize


def _crosscoder_plan(run: RunConfig, rates: Rates, d_model: int, fwd_seconds: float) -> StagePlan:
    """Notebook 06's crosscoder: aligned activations cached once, then ``epochs`` passes of training (module doc)."""
    cc = run.crosscoder
    n_snap, batch = len(run.crosscoder_steps), cc.batch_size
    d_sae = (cc.expansion_factor or run.chain.expansion_factor) * d_model
    tokens = cc.train_contexts * run.cache.context_length
    params = 2 * n_snap * d_model * d_sae + 2 * d_sae + n_snap * d_model  # W_enc, W_dec, b_enc, threshold, b_dec
    eval_rows = min(EVAL_TOKENS, run.cache.heldout_tokens)
    cache = crosscoder_cache_bytes(run, d_model)
    stage = StagePlan(
        "crosscoder",
        forward_tokens=tokens * n_snap + (eval_rows * n_snap if run.cache.streamed else 0),
        sae_tokens=tokens * cc.epochs,
        # the cache, the saved crosscoder and the training state (weights and Adam's two moments)
        disk=cache + 4 * (params + n_snap) + 3 * 4 * params,
        # the held-out rows of every snapshot (quality metrics), the loaded crosscoder and one batch read from disk
        host=eval_rows * n_snap * d_model * 4 + 4 * params + 4 * batch * n_snap * d_model,
        # parameters, gradients, Adam's two moments; the batch and its reconstruction; the feature activations
        device=4 * 4 * params + 2 * 4 * batch * n_snap * d_model + 3 * 4 * batch * d_sae,
    )
    trainings = 1 + len(control_inputs(run))  # the control crosscoders train exactly like the main one
    stage.sae_tokens *= trainings
    per_token = 2 if rates.device == "cpu" else 12  # the sparse step on a CPU (its dense encoder forward), else dense
    train_flops = per_token * tokens * cc.epochs * trainings * d_sae * n_snap * d_model
    stage.seconds = stage.forward_tokens * fwd_seconds + train_flops / rates.sae_flops
    size = f"{cache / 1e12:,.1f} TB" if cache >= 1e12 else f"{cache / GB:,.2f} GB"
    stage.notes.append(
        f"caches {cc.train_contexts:,} contexts x {run.cache.context_length} tokens at {n_snap} snapshots ({size}, "
        f"{run.cache.dtype}), then trains {cc.epochs} epoch(s) of a {d_sae:,}-feature crosscoder "
        f"({params:,} parameters)" + (f", and {trainings - 1} control crosscoder(s) alike" if trainings > 1 else "")
    )
    return stage


def _statistics_plan(
    run: RunConfig, rates: Rates, plan: TokenPlan, shapes: tuple[int, int, int], train_tokens: int
) -> StagePlan:
    """Notebook 06's statistical-learning stage: a forward with logits of every checkpoint, corpus n-gram counts."""
    d_model, n_layers, vocab = shapes
    params = 12 * d_model**2 * n_layers + 2 * vocab * d_model
    contexts = min(DEFAULT_HELDOUT_CONTEXTS, plan.heldout[1])
    stage = StagePlan(
        "statistics",
        forward_tokens=len(run.sae_steps) * contexts * plan.context_length,
        disk=len(run.sae_steps) * 5 * 8 + 4096,
        # one model and the unigram counts; the sparse bigram counts are only bounded (a note): one entry per distinct
        # pair, unknown before counting and far below the number of training tokens once a corpus repeats its pairs
        host=4 * params + 8 * vocab,
        # one model; a forward batch's float32 logits and float64 log-probabilities (LOGITS_BUDGET_BYTES)
        device=4 * params + 2 * LOGITS_BUDGET_BYTES,
    )
    full_forward = 2 * (12 * d_model**2 * n_layers + d_model * vocab)  # every block and the unembedding, per token
    stage.seconds = stage.forward_tokens * full_forward / rates.forward_flops
    bound = 2 * 12 * min(train_tokens, vocab**2)  # 12 bytes an entry, twice while a chunk's counts are added
    if bound > GB:
        stage.notes.append(
            f"plus the corpus's bigram counts: one entry per distinct pair of its {train_tokens:,} training tokens, "
            f"at most {bound / GB:,.1f} GB (far less when pairs repeat; not counted above)"
        )
    return stage


def _suite_training(run: RunConfig, rates: Rates) -> tuple[int, float]:
    """``(tokens, seconds)`` of training the preset's own model suite (``6 x parameters`` FLOPs per token); zeros
    for a model that is not trained here."""
    if run.model.source != "suite" or run.suite is None:
        return 0, 0.0
    d_model, n_layers, vocab, _ = _shapes(run)
    tokens = run.suite.total_steps * run.suite.batch_size * run.suite.context_length
    return tokens, 6 * (12 * d_model**2 * n_layers + 2 * vocab * d_model) * tokens / rates.forward_flops


def plan_run(run: RunConfig, rates: Rates) -> list[StagePlan]:
    """The resource plan of every stage of ``run`` (module doc), from the config and the measured ``rates``."""
    d_model, n_layers, vocab, d_sae = _shapes(run)
    plan = plan_tokens(run)
    ctx, n_ckpt = plan.context_length, len(run.sae_steps)
    train_tokens = sum(n for _, n in plan.train.values()) * ctx
    analysis_tokens = plan.analysis[1] * ctx
    heldout_tokens = plan.heldout[1] * ctx
    row = d_model * NUMPY_DTYPES[run.cache.dtype].itemsize
    fwd = _forward_flops_per_token(run, d_model) / rates.forward_flops
    sae_step = 12 * d_model * d_sae / rates.sae_flops
    params = 12 * d_model**2 * n_layers + 2 * vocab * d_model
    token_bytes = 2 if vocab < 65_536 else 4
    chain_tokens = sum(run.chain.tokens_for(p) for p in range(n_ckpt))
    # the from-scratch baselines and the second-seed SAEs of the seed-to-seed control (comparison stage)
    n_scratch = len(run.baseline_steps) + len(run.chain.seed_control_indices)
    baseline_tokens = run.chain.baseline_token_budget * n_scratch
    # the drift stage's noise floor: links retrained on the final checkpoint (drift.noise_floor_links; None: T - 1)
    n_noise = n_ckpt - 1 if run.drift.noise_floor_links is None else run.drift.noise_floor_links
    noise_tokens = n_noise * run.chain.tokens_for(n_ckpt - 1)
    buffer_rows = run.cache.buffer_tokens or max(run.chain.first_tokens, run.chain.baseline_token_budget)
    sae_device = 4 * _sae_bytes(d_model, d_sae) + 3 * 4 * run.chain.batch_size * d_sae  # weights, grads, Adam, acts

    corpus = StagePlan("corpus", disk=(train_tokens + analysis_tokens + heldout_tokens) * token_bytes)
    cache = StagePlan("cache")
    if run.model.source == "hub":
        cache.disk += n_ckpt * 2 * params  # float16 checkpoints in the Hugging Face cache
        cache.notes.append(f"downloads {n_ckpt} float16 checkpoints into the Hugging Face cache (counted in disk)")
    suite_tokens, cache.seconds = _suite_training(run, rates)
    if suite_tokens:
        cache.notes.append(f"trains the model suite: {run.suite.total_steps:,} steps, {suite_tokens:,} tokens")
    per_ckpt = (analysis_tokens + heldout_tokens) * n_ckpt
    if run.cache.streamed:
        cache.notes.append("streamed: no activations written; later stages run the models on the fly")
    else:
        cache.forward_tokens = per_ckpt + train_tokens
        cache.disk += (per_ckpt + train_tokens) * row
        cache.seconds += cache.forward_tokens * fwd
    streamed_fwd = chain_tokens + baseline_tokens + heldout_tokens * (n_ckpt + n_scratch)
    chain = StagePlan(
        "chain",
        forward_tokens=streamed_fwd if run.cache.streamed else 0,
        sae_tokens=chain_tokens + baseline_tokens,
        disk=(n_ckpt + n_scratch) * _sae_bytes(d_model, d_sae),
        host=heldout_tokens * d_model * 4 + 4 * params,
        device=sae_device + (4 * buffer_rows * d_model + 4 * params if run.cache.streamed else 0),
    )
    chain.seconds = chain.sae_tokens * sae_step + chain.forward_tokens * fwd
    k = run.formation.top_k
    formation = StagePlan(
        "formation",
        # streamed: the analysis set's rows are computed when read: two full passes (statistics, top-k), one for the
        # datapoints D_i, and the random and UMAP rows
        forward_tokens=4 * analysis_tokens * n_ckpt if run.cache.streamed else 0,
        disk=n_ckpt * d_sae * k * 12,
        # streamed: one forward batch of the analysis set at a time; cached: its memory map (paged, not counted)
        host=d_sae * k * d_model * 4 + n_ckpt * d_sae * k * 12 + 8192 * (d_model + d_sae) * 8,
        device=(4 * params if run.cache.streamed else 0) + _sae_bytes(d_model, d_sae) + 256 * k * d_sae * 4 * 3,
    )
    encode = 2 * analysis_tokens * 2 * d_model * d_sae  # two passes encode the analysis set
    similarities = 2 * d_sae * k * d_model * d_sae + 8 * d_sae * k * k * d_sae  # Eq. 15/18 over every feature's D_i
    formation.seconds = formation.forward_tokens * fwd + n_ckpt * (encode + similarities) / rates.sae_flops
    drift = StagePlan(
        "drift",
        forward_tokens=noise_tokens if run.cache.streamed else 0,
        sae_tokens=noise_tokens,
        host=n_ckpt * d_sae * d_model * 4 * 2,
        disk=n_ckpt * d_sae * 8 * 4,
        device=(sae_device + (4 * buffer_rows * d_model + 4 * params if run.cache.streamed else 0)) if n_noise else 0,
    )
    drift.seconds = drift.sae_tokens * sae_step + drift.forward_tokens * fwd
    if n_noise:
        drift.notes.append(f"noise floor: {n_noise} links of {run.chain.tokens_for(n_ckpt - 1):,} tokens")
    if not run.cache.streamed:
        formation.notes.append("reads the cached analysis set of one checkpoint at a time")
    statistics = _statistics_plan(run, rates, plan, (d_model, n_layers, vocab), train_tokens)
    notebook_06 = [_crosscoder_plan(run, rates, d_model, fwd), statistics] if run.crosscoder.enabled else []
    scale = _scale_plan(run, rates)
    return [corpus, cache, chain, formation, drift, *([scale] if scale else []), *notebook_06]


PIPELINE_STAGES = ("corpus", "cache", "chain", "formation", "drift")  #: what a scale or seed-study run plans


def planned_for(stages: list[StagePlan], only: list[str] | None, run: RunConfig) -> list[StagePlan]:
    """The plan lines of the pipeline stages that will run (``only``: ``saetrack run --only``; all when None); a line
    named after an output folder (``corpus``, ``statistics``) belongs to the stage that writes it."""
    return [s for s in stages if not only or stage_of_output(s.stage, run) in only]


def _pipeline_sum(name: str, runs: list[tuple[RunConfig, bool]], rates: Rates) -> StagePlan:
    """One plan line for whole pipelines (notebooks 01-04) of ``runs``: ``(config, trains its own suite)``."""
    total = StagePlan(name)
    for run, own_suite in runs:
        stages = [s for s in plan_run(run.with_overrides({"scale.presets": (), "scale.seed_preset": ""}), rates)
                  if s.stage in PIPELINE_STAGES]  # fmt: skip
        if not own_suite:  # the suite is adopted from the variant that trained it
            total.seconds -= _suite_training(run, rates)[1]
        total.forward_tokens += sum(s.forward_tokens for s in stages)
        total.sae_tokens += sum(s.sae_tokens for s in stages)
        total.disk += sum(s.disk for s in stages)
        total.host = max(total.host, *(s.host for s in stages))
        total.device = max(total.device, *(s.device for s in stages))
        total.seconds += sum(s.seconds for s in stages)
    return total


def _scale_plan(run: RunConfig, rates: Rates) -> StagePlan | None:
    """Notebook 05: the scale study's other sizes and the seed study's runs, each a whole pipeline (module doc)."""
    sizes = [p for p in run.scale.presets if p != run.preset]
    if not sizes and not run.scale.seed_preset:
        return None
    jobs = [(get_preset(p), True) for p in sizes]
    folders = {p: Path(p) for p in (*run.scale.presets, run.preset)}
    variants = [v for v in seed_variants(run, Path("."), folders) if not v.shared]
    jobs += [(v.run, v.model == v.name) for v in variants]
    scale = _pipeline_sum("scale", jobs, rates)
    scale.notes.append(f"{len(sizes)} other size(s) and {len(variants)} seed-study run(s), each notebooks 01-04")
    return scale


def machine_limits(run_dir: Path, device: str) -> dict[str, int]:
    """Free disk at ``run_dir``, physical host memory and (CUDA) device memory, in bytes."""
    folder = Path(run_dir)
    while not folder.exists():
        folder = folder.parent
    limits = {
        "disk": shutil.disk_usage(folder).free,
        "host": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        limits["device"] = torch.cuda.get_device_properties(torch.device(device)).total_memory
    return limits


def check_fits(stages: list[StagePlan], limits: dict[str, int]) -> None:
    """Raise :class:`ResourceError` naming every stage and resource whose need exceeds the machine's ``limits``."""
    total_disk = sum(s.disk for s in stages)
    problems = []
    if total_disk > 0.9 * limits["disk"]:
        problems.append(f"disk: the run needs {total_disk / GB:,.1f} GB, {limits['disk'] / GB:,.1f} GB are free")
    for s in stages:
        for key in ("host", "device"):
            need = getattr(s, key)
            if key in limits and need > 0.9 * limits[key]:
                problems.append(
                    f"{s.stage}: needs {need / GB:,.1f} GB of {key} memory, the machine has {limits[key] / GB:,.1f} GB"
                )
    if problems:
        raise ResourceError(
            "the run does not fit this machine: " + "; ".join(problems) + ". Lower the budgets (--set), use a "
            "bigger machine, or pass --ignore-resources to go on anyway."
        )


def human_time(seconds: float) -> str:
    """A duration as a reader takes it in: seconds under 2 min, minutes under 2 h, then hours."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_plan(run: RunConfig, stages: list[StagePlan], rates: Rates, limits: dict[str, int]) -> str:
    """The plan as a table: one line per stage, totals, the machine's limits and where the rates come from."""
    lines = [
        f"resource plan of preset {run.preset} ({run.cache.mode} activations, hook {run.cache.hook_name})",
        f"{'stage':<10} {'model fwd tokens':>17} {'SAE tokens':>14} {'disk GB':>9} {'host GB':>9} "
        f"{'device GB':>10} {'projected':>10}   (memory: peak of the stage)",
    ]
    for s in stages:
        lines.append(
            f"{s.stage:<10} {s.forward_tokens:>17,} {s.sae_tokens:>14,} {s.disk / GB:>9.2f} {s.host / GB:>9.2f} "
            f"{s.device / GB:>10.2f} {human_time(s.seconds):>10}"
        )
        lines += [f"{'':<10} - {note}" for note in s.notes]
    lines.append(
        f"{'total':<10} {sum(s.forward_tokens for s in stages):>17,} {sum(s.sae_tokens for s in stages):>14,} "
        f"{sum(s.disk for s in stages) / GB:>9.2f} {max(s.host for s in stages) / GB:>9.2f} "
        f"{max(s.device for s in stages) / GB:>10.2f} {human_time(sum(s.seconds for s in stages)):>10}"
    )
    have = ", ".join(f"{k} {v / GB:,.1f} GB" for k, v in limits.items())
    lines.append(f"this machine: {have}")
    try:
        check_fits(stages, limits)
        lines.append("the run fits this machine (every need under 90% of what it has)")
    except ResourceError as error:
        lines.append(str(error))
    total = sum(s.seconds for s in stages)
    if rates.device == "cpu" and total > CPU_DAY_S:
        lines.append(f"on this CPU the run projects {human_time(total)}: the preset is meant for a GPU "
                     "(run it with --device cuda on a machine that has one)")  # fmt: skip
    lines.append(
        f"rates measured now on {rates.device}: {rates.sae_flops / 1e9:,.0f} GFLOP/s at an SAE step's shape, "
        f"{rates.forward_flops / 1e9:,.0f} GFLOP/s at a forward's; times are FLOPs / rate (data movement and "
        "elementwise work left out)"
    )
    return "\n".join(lines)
