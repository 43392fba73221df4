"""The plan of notebook 06's stage: the crosscoder (aligned activations cached once, then its training and its
controls'), the statistical-learning measures, and the method comparison.

``crosscoder``: the activations of ``crosscoder.train_contexts`` training contexts at every snapshot, cached once
(``N x T x d`` values of the cache's storage dtype; forwards ``N x T``), and a training compute per token and epoch
of ``12 d_sae T d`` FLOPs on a GPU (the dense step: the forward and backward products of encoder and decoder, whose
parameters are ``2 d_sae T d``) and of ``2 d_sae T d`` on a CPU (the encoder forward, the one dense product of the
sparse step, :mod:`saetrack.crosscoder.sparse`; its work over active features only is not counted, so this too is a
lower bound), once more for every control crosscoder (``crosscoder.controls``, trained alike, each counted with all T
snapshots); device memory: the parameters, their gradients and Adam's two moments, one ``[batch, T, d]`` batch and
its reconstruction and the batch's feature activations. Over several ranks (a ``torchrun`` job) every crosscoder
trains data-parallel: the training time is divided by the ranks, each rank holds its share of the batch, and a note
gives the gradient all-reduce per step; the aligned activations' forwards stay on rank 0.

``statistics``: a full forward with logits of every chain checkpoint over at most 256 held-out contexts and the
corpus's unigram and bigram counts. ``method comparison``: the matchings of the crosscoder's and the chain's
decoders over at most ``MAX_MATCH_FEATURES`` features a side.
"""

from __future__ import annotations

from saetrack.config.run import RunConfig
from saetrack.data.cache_plan import NUMPY_DTYPES
from saetrack.planning.common import GB, PlanInputs, StagePlan, sae_bytes
from saetrack.stages.crosscoder import EVAL_TOKENS
from saetrack.stages.crosscoder.controls import control_inputs
from saetrack.stages.crosscoder.method_comparison import MAX_MATCH_FEATURES
from saetrack.stages.crosscoder.statistics import DEFAULT_HELDOUT_CONTEXTS, LOGITS_BUDGET_BYTES

__all__ = ["crosscoder_cache_bytes", "plan"]


def crosscoder_cache_bytes(run: RunConfig, d_model: int) -> int:
    """Bytes of the crosscoder's aligned activations: ``train_contexts x context_length x T x d_model x itemsize``."""
    n_tokens = run.crosscoder.train_contexts * run.cache.context_length
    return n_tokens * len(run.crosscoder_steps) * d_model * NUMPY_DTYPES[run.cache.dtype].itemsize


def _crosscoder(inputs: PlanInputs) -> StagePlan:
    """The ``crosscoder`` line (module doc)."""
    run, d_model, rates = inputs.run, inputs.d_model, inputs.rates
    cc = run.crosscoder
    n_snap, batch = len(run.crosscoder_steps), cc.batch_size
    d_sae = (cc.expansion_factor or run.chain.expansion_factor) * d_model
    tokens = cc.train_contexts * run.cache.context_length
    params = 2 * n_snap * d_model * d_sae + 2 * d_sae + n_snap * d_model  # W_enc, W_dec, b_enc, threshold, b_dec
    eval_rows = min(EVAL_TOKENS, run.cache.heldout_tokens)
    cache = crosscoder_cache_bytes(run, d_model)
    trainings = 1 + len(control_inputs(run))  # the control crosscoders train exactly like the main one
    ranks = inputs.ranks
    stage = StagePlan(
        "crosscoder",
        forward_tokens=tokens * n_snap + (eval_rows * n_snap if run.cache.streamed else 0),
        sae_tokens=tokens * cc.epochs * trainings,
        # the cache, the saved crosscoder and the training state (weights and Adam's two moments)
        disk=cache + 4 * (params + n_snap) + 3 * 4 * params,
        # the held-out rows of every snapshot (quality metrics), the loaded crosscoder and one batch read from disk
        host=eval_rows * n_snap * d_model * 4 + 4 * params + 4 * batch * n_snap * d_model,
        # parameters, gradients, Adam's two moments; the batch and its reconstruction; the feature activations
        device=4 * 4 * params + (2 * 4 * batch * n_snap * d_model + 3 * 4 * batch * d_sae) // ranks,
        owner="crosscoder",
    )
    per_token = 2 if rates.device == "cpu" else 12  # the sparse step on a CPU (its dense encoder forward), else dense
    train_flops = per_token * tokens * cc.epochs * trainings * d_sae * n_snap * d_model
    stage.seconds = stage.forward_tokens * inputs.forward_seconds + train_flops / rates.sae_flops / ranks
    size = f"{cache / 1e12:,.1f} TB" if cache >= 1e12 else f"{cache / GB:,.2f} GB"
    stage.notes.append(
        f"caches {cc.train_contexts:,} contexts x {run.cache.context_length} tokens at {n_snap} snapshots ({size}, "
        f"{run.cache.dtype}), then trains {cc.epochs} epoch(s) of a {d_sae:,}-feature crosscoder "
        f"({params:,} parameters)" + (f", and {trainings - 1} control crosscoder(s) alike" if trainings > 1 else "")
    )
    if ranks > 1:
        steps = trainings * cc.epochs * (tokens // batch)
        stage.notes.append(
            f"data-parallel over {ranks} ranks: per step each rank all-reduces {4 * params / GB:.2f} GB of gradients "
            f"({2 * (ranks - 1) / ranks * 4 * params / GB:.2f} GB on the wire, {steps:,} steps), not in the projected "
            "time; the forwards of the aligned activations run on rank 0"
        )
    return stage


def _statistics(inputs: PlanInputs) -> StagePlan:
    """The ``statistics`` line: a forward with logits of every checkpoint, corpus n-gram counts."""
    d_model, n_layers, vocab = inputs.d_model, inputs.n_layers, inputs.vocab
    contexts = min(DEFAULT_HELDOUT_CONTEXTS, inputs.tokens.heldout[1])
    stage = StagePlan(
        "statistics",
        forward_tokens=inputs.n_checkpoints * contexts * inputs.tokens.context_length,
        disk=inputs.n_checkpoints * 5 * 8 + 4096,
        # one model and the unigram counts; the sparse bigram counts are only bounded (a note): one entry per distinct
        # pair, unknown before counting and far below the number of training tokens once a corpus repeats its pairs
        host=4 * inputs.params + 8 * vocab,
        # one model; a forward batch's float32 logits and float64 log-probabilities (LOGITS_BUDGET_BYTES)
        device=4 * inputs.params + 2 * LOGITS_BUDGET_BYTES,
        owner="crosscoder",
    )
    full_forward = 2 * (12 * d_model**2 * n_layers + d_model * vocab)  # every block and the unembedding, per token
    stage.seconds = stage.forward_tokens * full_forward / inputs.rates.forward_flops
    train_tokens = inputs.context_tokens("train")
    bound = 2 * 12 * min(train_tokens, vocab**2)  # 12 bytes an entry, twice while a chunk's counts are added
    if bound > GB:
        stage.notes.append(
            f"plus the corpus's bigram counts: one entry per distinct pair of its {train_tokens:,} training tokens, "
            f"at most {bound / GB:,.1f} GB (far less when pairs repeat; not counted above)"
        )
    return stage


def _method_comparison(inputs: PlanInputs) -> StagePlan:
    """The ``comparison`` line of the two methods: matchings over at most ``MAX_MATCH_FEATURES`` features a side."""
    run, n = inputs.run, min(MAX_MATCH_FEATURES, inputs.d_sae)
    n_snap = len(run.crosscoder_steps)
    line = StagePlan(
        "methods",
        host=2 * sae_bytes(inputs.d_model, inputs.d_sae) + 3 * 8 * n * n,
        owner="crosscoder",
    )
    line.seconds = (n_snap + 2) * 2 * n * n * inputs.d_model / inputs.rates.sae_flops
    line.notes.append(f"{n_snap + 2} matchings of at most {n:,} features a side (exact Hungarian)")
    return line


def plan(inputs: PlanInputs) -> list[StagePlan]:
    """The ``crosscoder``, ``statistics`` and ``methods`` lines (module doc)."""
    return [_crosscoder(inputs), _statistics(inputs), _method_comparison(inputs)]
