"""The plan of notebook 01's stage: the tokenised corpus, the model suite's training (presets that train their own),
the Hub checkpoints' download, and the activation cache (cached presets; streamed ones write none)."""

from __future__ import annotations

from saetrack.planning.common import PlanInputs, StagePlan

__all__ = ["plan", "suite_training"]


def suite_training(inputs: PlanInputs) -> tuple[int, float]:
    """``(tokens, seconds)`` of training the preset's own model suite (``6 x parameters`` FLOPs per token); zeros
    for a model that is not trained here."""
    run = inputs.run
    if run.model.source != "suite" or run.suite is None:
        return 0, 0.0
    tokens = run.suite.total_steps * run.suite.batch_size * run.suite.context_length
    return tokens, 6 * inputs.params * tokens / inputs.rates.forward_flops


def plan(inputs: PlanInputs) -> list[StagePlan]:
    """The ``corpus`` and ``cache`` lines (module doc)."""
    run = inputs.run
    token_bytes = 2 if inputs.vocab < 65_536 else 4
    train, analysis, heldout = (inputs.context_tokens(p) for p in ("train", "analysis", "heldout"))
    corpus = StagePlan("corpus", disk=(train + analysis + heldout) * token_bytes, owner="cache")
    cache = StagePlan("cache", owner="cache")
    if run.model.source == "hub":
        cache.disk += inputs.n_checkpoints * 2 * inputs.params  # float16 checkpoints in the Hugging Face cache
        cache.notes.append(
            f"downloads {inputs.n_checkpoints} float16 checkpoints into the Hugging Face cache (counted in disk)"
        )
    suite_tokens, cache.seconds = suite_training(inputs)
    if suite_tokens and run.suite is not None:
        cache.notes.append(f"trains the model suite: {run.suite.total_steps:,} steps, {suite_tokens:,} tokens")
    per_ckpt = (analysis + heldout) * inputs.n_checkpoints
    if run.cache.streamed:
        cache.notes.append("streamed: no activations written; later stages run the models on the fly")
    else:
        cache.forward_tokens = per_ckpt + train
        cache.disk += (per_ckpt + train) * inputs.row_bytes
        cache.seconds += cache.forward_tokens * inputs.forward_seconds
    return [corpus, cache]
