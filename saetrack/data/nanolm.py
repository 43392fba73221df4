"""The nano language model: a small GPT-NeoX (Pythia's architecture), its loss, batches and learning-rate schedule."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from saetrack.config.data import SuiteConfig
from saetrack.data.tokens import spaced_contexts
from saetrack.runtime import seed_everything

__all__ = [
    "ADAM_BETAS",
    "GRAD_CLIP",
    "ROPE_THETA",
    "adamw_optimizer",
    "build_model",
    "draw_batch",
    "eval_contexts",
    "evaluate_loss",
    "learning_rate_factor",
    "lm_loss",
    "lr_scheduler",
    "microbatches",
    "neox_config",
]


#: Pythia's AdamW betas.
ADAM_BETAS = (0.9, 0.95)


#: Gradient-norm clipping threshold.
GRAD_CLIP = 1.0


#: Largest logits buffer (bytes) of one forward while training: glibc serves allocations above its mmap threshold
#: (at most 32 MiB) with fresh mmap'd pages, zero-filled by the kernel on every step - at nano's 2048 tokens x 4096
#: vocabulary (33.5 MB of float32 logits) that page-faulting took a fifth of the training step's CPU time.
LOGITS_BUFFER_BYTES = 16 * 2**20


#: Pythia's rotary base.
ROPE_THETA = 10_000.0


def neox_config(suite: SuiteConfig, vocab_size: int, eot_token_id: int = 0) -> Any:
    """The ``GPTNeoXConfig`` of the suite: Pythia's architecture at the suite's size, no dropout.

    In transformers 5 the rotary fraction (Pythia's ``rotary_pct``) is ``rope_parameters["partial_rotary_factor"]``.
    """
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        vocab_size=vocab_size,
        hidden_size=suite.d_model,
        num_hidden_layers=suite.n_layers,
        num_attention_heads=suite.n_heads,
        intermediate_size=suite.d_mlp,
        hidden_act="gelu",
        max_position_embeddings=suite.context_length,
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA, "partial_rotary_factor": suite.rotary_pct},
        use_parallel_residual=True,
        tie_word_embeddings=False,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        initializer_range=0.02,
        layer_norm_eps=1e-5,
        bos_token_id=eot_token_id,
        eos_token_id=eot_token_id,
        pad_token_id=eot_token_id,
    )


def build_model(suite: SuiteConfig, vocab_size: int, seed: int, eot_token_id: int = 0) -> Any:
    """A freshly initialised ``GPTNeoXForCausalLM`` for ``suite`` (float32, train mode), seeded by ``seed``."""
    from transformers import GPTNeoXForCausalLM

    seed_everything(seed)
    model = GPTNeoXForCausalLM(neox_config(suite, vocab_size, eot_token_id))
    return model.float().train()


def lm_loss(model: Any, tokens: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) of ``model`` on ``tokens`` ``[batch, length + 1]``.

    The model reads the first ``length`` tokens and predicts each following one (Pythia's convention of
    ``context + 1``-token sequences), so every position of the context is a prediction.
    """
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    logits = model(input_ids=inputs, use_cache=False).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def microbatches(batch_size: int, context_length: int, vocab_size: int) -> int:
    """How many equal micro-batches one training batch is cut into so each one's float32 logits
    (``rows x context_length x vocab_size``) stay within :data:`LOGITS_BUFFER_BYTES` (the smallest divisor of
    ``batch_size`` that does; the optimizer update is that of the whole batch)."""
    for n in range(1, batch_size + 1):
        if batch_size % n == 0 and (batch_size // n) * context_length * vocab_size * 4 <= LOGITS_BUFFER_BYTES:
            return n
    return batch_size


@torch.no_grad()
def evaluate_loss(model: Any, tokens: np.ndarray, batch_size: int, device: str = "cpu") -> float:
    """Mean next-token cross-entropy (nats) of ``model`` over all sequences ``tokens`` ``[n, length + 1]``."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for begin in range(0, len(tokens), batch_size):
        batch = torch.as_tensor(np.asarray(tokens[begin : begin + batch_size], dtype=np.int64), device=device)
        n_targets = batch.numel() - batch.shape[0]
        total += float(lm_loss(model, batch)) * n_targets
        count += n_targets
    model.train(was_training)
    return total / count


def eval_contexts(heldout_tokens: np.ndarray, suite: SuiteConfig) -> np.ndarray:
    """The fixed held-out evaluation set: ``eval_sequences`` sequences of ``context_length + 1`` tokens
    spread evenly over the held-out stream (:func:`saetrack.corpus.spaced_contexts`)."""
    return spaced_contexts(heldout_tokens, suite.eval_sequences, suite.context_length + 1)


def draw_batch(train_tokens: np.ndarray, seed: int, step: int, batch_size: int, length: int) -> np.ndarray:
    """The training batch of update ``step + 1``: ``batch_size`` random sequences ``[batch, length + 1]`` (int64).

    Start positions are uniform over the stream, drawn from ``numpy.random.default_rng([seed, step])``, so
    the batch of a step never depends on what ran before it (a resumed run draws the same batches).
    """
    if len(train_tokens) <= length:
        raise ValueError(f"the training stream has {len(train_tokens)} tokens; need more than length={length}.")
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, len(train_tokens) - length, size=batch_size)
    index = starts[:, None] + np.arange(length + 1)[None, :]
    return np.asarray(train_tokens[index], dtype=np.int64)


def learning_rate_factor(suite: SuiteConfig, update: int) -> float:
    """Multiplier of ``suite.lr`` at optimizer update ``update`` (0-based).

    Linear warm-up ``(update + 1) / warmup_steps`` for ``update < warmup_steps``, then cosine decay from 1 to
    ``min_lr_ratio``: ``r + (1 - r) * (1 + cos(pi * p)) / 2`` with ``p = (update - warmup) / (total - warmup)``.
    """
    warmup = suite.warmup_steps
    if update < warmup:
        return (update + 1) / warmup
    progress = min(1.0, (update - warmup) / max(1, suite.total_steps - warmup))
    ratio = suite.min_lr_ratio
    return ratio + (1.0 - ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def adamw_optimizer(model: Any, suite: SuiteConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (>= 2-D: embeddings and linear weights), none on biases and norms."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": suite.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=suite.lr, betas=ADAM_BETAS, eps=1e-8)


def lr_scheduler(optimizer: torch.optim.Optimizer, suite: SuiteConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Pythia's schedule for the nano suite: linear warm-up then cosine decay (:func:`learning_rate_factor`)."""

    def factor(update: int) -> float:
        return learning_rate_factor(suite, update)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
