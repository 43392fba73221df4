"""The nano language model: its config, seeded initialisation, loss, batches and learning-rate schedule."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from saetrack.config import RunConfig, SuiteConfig
from saetrack.data.nanolm import (
    ADAM_BETAS,
    adamw_optimizer,
    build_model,
    draw_batch,
    eval_contexts,
    evaluate_loss,
    learning_rate_factor,
    lm_loss,
    lr_scheduler,
    microbatches,
    neox_config,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = SuiteConfig(n_layers=1, d_model=16, n_heads=2, d_mlp=32, context_length=8, batch_size=2, total_steps=10,
                   n_even_checkpoints=2, warmup_steps=2, eval_sequences=3)  # fmt: skip


class _Uniform(torch.nn.Module):
    """A language model whose logits are all zero: every next token has probability 1 / vocab."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab

    def forward(self, input_ids: torch.Tensor, use_cache: bool = False) -> SimpleNamespace:
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab))


def test_batches_depend_only_on_seed_and_step() -> None:
    stream = np.arange(1000, dtype=np.uint16)
    a = draw_batch(stream, seed=0, step=5, batch_size=4, length=16)
    assert a.shape == (4, 17) and a.dtype == np.int64
    np.testing.assert_array_equal(a, draw_batch(stream, seed=0, step=5, batch_size=4, length=16))
    np.testing.assert_array_equal(np.diff(a, axis=1), 1)  # contiguous windows of the stream
    assert not np.array_equal(a, draw_batch(stream, seed=0, step=6, batch_size=4, length=16))
    assert not np.array_equal(a, draw_batch(stream, seed=1, step=5, batch_size=4, length=16))


def test_learning_rate_schedule(smoke: RunConfig) -> None:
    suite = smoke.suite.__class__(total_steps=100, warmup_steps=10, min_lr_ratio=0.1)
    factors = [learning_rate_factor(suite, t) for t in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0)
    assert all(b <= a for a, b in itertools.pairwise(factors[10:]))
    assert learning_rate_factor(suite, 100) == pytest.approx(0.1)
    assert factors[55] == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine


def test_neox_config_is_pythias_architecture_at_the_suites_size() -> None:
    config = neox_config(TINY, vocab_size=50, eot_token_id=3)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (16, 1, 2)
    assert (config.intermediate_size, config.max_position_embeddings, config.vocab_size) == (32, 8, 50)
    assert config.use_parallel_residual and not config.tie_word_embeddings
    assert config.rope_parameters["partial_rotary_factor"] == TINY.rotary_pct
    assert config.eos_token_id == config.bos_token_id == config.pad_token_id == 3


def test_build_model_is_seeded_and_in_training_mode() -> None:
    a, b, c = build_model(TINY, 50, seed=1), build_model(TINY, 50, seed=1), build_model(TINY, 50, seed=2)
    assert a.training and next(a.parameters()).dtype == torch.float32
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters(), strict=True))


def test_uniform_model_has_loss_log_vocab_on_any_batching() -> None:
    model = _Uniform(50).train()
    tokens = np.arange(7 * 9).reshape(7, 9) % 50
    assert lm_loss(model, torch.as_tensor(tokens)).item() == pytest.approx(math.log(50))
    for batch_size in (1, 3, 7):
        assert evaluate_loss(model, tokens, batch_size=batch_size) == pytest.approx(math.log(50))
    assert model.training  # evaluate_loss restores the mode it found


def test_eval_contexts_are_spread_windows_one_token_longer() -> None:
    stream = np.arange(90)  # 10 windows of 9 tokens
    out = eval_contexts(stream, TINY)
    assert out.shape == (3, 9)
    np.testing.assert_array_equal(out[:, 0], [0, 27, 54])  # windows 0, 3, 6


def test_short_stream_has_no_batches() -> None:
    with pytest.raises(ValueError, match="need more than length=16"):
        draw_batch(np.arange(16), seed=0, step=0, batch_size=2, length=16)


def test_optimizer_groups_and_scheduler_follow_the_suite() -> None:
    model = build_model(TINY, 50, seed=0)
    optimizer = adamw_optimizer(model, TINY)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == TINY.weight_decay and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert decay["betas"] == ADAM_BETAS
    scheduler = lr_scheduler(optimizer, TINY)
    seen = []
    for _ in range(TINY.total_steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    np.testing.assert_allclose(seen, [TINY.lr * learning_rate_factor(TINY, t) for t in range(TINY.total_steps)])


def test_microbatches_bound_the_logits_buffer() -> None:
    # nano: 16 x 128 x 4096 float32 logits = 32 MiB -> two micro-batches of 16 MiB; smoke fits in one
    assert microbatches(16, 128, 4096) == 2
    assert microbatches(16, 32, 512) == 1
    assert microbatches(6, 1024, 4096) == 6  # only whole divisors of the batch; one row each at the limit
    assert microbatches(3, 128, 100_000) == 3  # even one row is over the limit: one row per micro-batch


def test_microbatched_gradients_equal_the_whole_batch() -> None:
    model = build_model(TINY, vocab_size=11, seed=0)
    tokens = torch.as_tensor(draw_batch(np.arange(200) % 11, seed=1, step=0, batch_size=4, length=8))
    lm_loss(model, tokens).backward()
    whole = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    total = sum(float(_backward(model, part, 2)) for part in tokens.chunk(2))
    assert total == pytest.approx(float(lm_loss(model, tokens).detach()), abs=1e-6)
    for grad, p in zip(whole, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, grad, atol=1e-6, rtol=1e-5)


def _backward(model: object, part: torch.Tensor, n: int) -> torch.Tensor:
    loss = lm_loss(model, part) / n
    loss.backward()
    return loss.detach()
