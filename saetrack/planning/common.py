"""What every stage's plan is computed from: the config's shapes and budgets and the rates measured on this machine.

:class:`PlanInputs` derives, once per plan, the numbers several stages share: the model's shapes, its parameters,
the token plan, the seconds per token of a forward up to the hook and of an SAE training step (FLOPs / measured
rate, :mod:`saetrack.rates`), and the device memory of training one SAE link (:func:`sae_training_device_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from saetrack.config.run import RunConfig
from saetrack.data.cache_plan import NUMPY_DTYPES, TokenPlan, plan_tokens
from saetrack.data.stream import stream_peak_bytes
from saetrack.rates import Rates

__all__ = [
    "GB",
    "PlanInputs",
    "ResourceError",
    "StagePlan",
    "forward_workspace_bytes",
    "plan_inputs",
    "sae_bytes",
    "sae_training_device_bytes",
    "streamed_model_bytes",
]

GB = 1e9


class ResourceError(RuntimeError):
    """A plan cannot be made (the config lacks the model's shapes), or a stage needs more disk, host memory or device
    memory than the machine has (the message has the numbers)."""


@dataclass
class StagePlan:
    """What one piece of a stage's work will do and need (bytes; tokens; seconds projected from :class:`Rates`).

    ``stage`` names the line (an output or a part of the stage's work); ``owner`` is the pipeline stage
    (:data:`saetrack.pipeline.shape.STAGES`) that runs it."""

    stage: str
    forward_tokens: int = 0
    sae_tokens: int = 0
    disk: int = 0
    host: int = 0
    device: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    owner: str = ""


@dataclass(frozen=True)
class PlanInputs:
    """The shapes, budgets and per-token costs shared by the stages' plans (module doc)."""

    run: RunConfig
    rates: Rates
    tokens: TokenPlan
    d_model: int
    n_layers: int
    vocab: int
    d_sae: int
    #: Ranks of a ``torchrun`` job (GPUs): the chain and the baselines train data-parallel over them
    #: (:mod:`saetrack.pipeline.ranked`), everything else runs on rank 0.
    ranks: int = 1

    @property
    def params(self) -> int:
        """Parameters of one checkpoint (blocks, embedding and unembedding)."""
        return 12 * self.d_model**2 * self.n_layers + 2 * self.vocab * self.d_model

    @property
    def n_checkpoints(self) -> int:
        """Links of the chain (checkpoints with an SAE)."""
        return len(self.run.sae_steps)

    @property
    def forward_seconds(self) -> float:
        """Seconds per token of a forward up to the hooked layer: ``2 x 12 d_model^2`` FLOPs per block before it."""
        return 2 * 12 * self.d_model**2 * max(self.run.cache.layer, 1) / self.rates.forward_flops

    @property
    def sae_step_seconds(self) -> float:
        """Seconds per token of an SAE training step (``12 d_in d_sae`` FLOPs)."""
        return 12 * self.d_model * self.d_sae / self.rates.sae_flops

    def context_tokens(self, part: str) -> int:
        """Tokens of the corpus part ``train``, ``analysis`` or ``heldout``."""
        if part == "train":
            return sum(n for _, n in self.tokens.train.values()) * self.tokens.context_length
        return getattr(self.tokens, part)[1] * self.tokens.context_length

    @property
    def row_bytes(self) -> int:
        """Bytes of one cached activation row."""
        return self.d_model * NUMPY_DTYPES[self.run.cache.dtype].itemsize


def plan_inputs(run: RunConfig, rates: Rates, ranks: int = 1) -> PlanInputs:
    """:class:`PlanInputs` of ``run`` over ``ranks`` ranks: ``(d_model, n_layers, vocab, d_sae)`` from the config (the
    suite's, or the model section's) and the token plan; raises :class:`ResourceError` when the model's shapes are
    not stated or ``ranks`` cannot split the chain's batch (or the crosscoder's, when it is on)."""
    if ranks < 1 or run.chain.batch_size % ranks:
        raise ResourceError(f"{ranks} ranks cannot split chain.batch_size = {run.chain.batch_size} evenly: plan for a "
                            "number of ranks that divides it.")  # fmt: skip
    if run.crosscoder.enabled and run.crosscoder.batch_size % ranks:
        raise ResourceError(f"{ranks} ranks cannot split crosscoder.batch_size = {run.crosscoder.batch_size} evenly: "
                            "plan for a number of ranks that divides it.")  # fmt: skip
    d_model = run.model.d_model or (run.suite.d_model if run.suite else 0)
    n_layers = run.model.n_layers or (run.suite.n_layers if run.suite else 0)
    if not d_model or not n_layers:
        raise ResourceError(f"preset {run.preset!r} does not state model.d_model and model.n_layers; cannot plan.")
    vocab = run.corpus.vocab_size if run.suite and run.corpus else 50_304  # Pythia's embedding rows
    d_sae = run.chain.expansion_factor * d_model
    return PlanInputs(run, rates, plan_tokens(run), d_model, n_layers, vocab, d_sae, ranks)


def sae_bytes(d_model: int, d_sae: int) -> int:
    """Bytes of one saved SAE (float32 encoder, decoder, biases, sparsity)."""
    return 4 * (2 * d_model * d_sae + 2 * d_sae + d_model)


def streamed_model_bytes(inputs: PlanInputs) -> int:
    """Device bytes of a model loaded to stream activations: float32 embedding and the blocks up to the hook (the
    evaluation's spliced loss needs the rest of the model too: counted in full, the conservative bound)."""
    return 4 * inputs.params


def forward_workspace_bytes(inputs: PlanInputs) -> int:
    """Device bytes of one forward batch's working memory (a bound): a block's float32 intermediates (residual,
    QKV, attention output, the 4x MLP: 12 ``[rows, d_model]``) and the attention scores and pattern of
    ``d_model / 64`` heads (2 ``[contexts, heads, ctx, ctx]``)."""
    run = inputs.run
    ctx, contexts = run.cache.context_length, run.cache.batch_contexts
    return 4 * (12 * contexts * ctx * inputs.d_model + 2 * contexts * (inputs.d_model // 64) * ctx * ctx)


def sae_training_device_bytes(inputs: PlanInputs, ranks: int = 1) -> int:
    """Device bytes of training one SAE link: weights, gradients and Adam's two moments (4 copies), the step's
    ``[batch, d_sae]`` activations (pre-activation, activation and its gradient), and, streamed, the shuffle's
    preallocated buffer and incoming chunks (:func:`saetrack.data.stream.stream_peak_bytes`), the model and one
    forward's working memory (:func:`forward_workspace_bytes`). Trained data-parallel over ``ranks``, per rank:
    everything replicated but the step's activations, which are the rank's share of the batch."""
    run = inputs.run
    device = 4 * sae_bytes(inputs.d_model, inputs.d_sae) + 3 * 4 * run.chain.batch_size * inputs.d_sae // ranks
    if run.cache.streamed:
        buffer_rows = run.cache.buffer_tokens or max(run.chain.first_tokens, run.chain.baseline_token_budget)
        batch_rows = run.cache.batch_contexts * run.cache.context_length
        shuffle = stream_peak_bytes(buffer_rows, inputs.d_model, torch.float32, batch_rows, run.chain.batch_size)
        device += shuffle + streamed_model_bytes(inputs) + forward_workspace_bytes(inputs)
    return device
