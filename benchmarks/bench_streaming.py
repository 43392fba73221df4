"""Benchmark: streamed chain training (``cache.mode="streamed"``) against SAELens' language-model runner, one run.

Both sides train the same SAE shape on activations computed on the fly by the same model from the same random
token stream, for the same number of tokens, batch, context and hook (``blocks.{layer}.hook_resid_pre``):

* ``streamed``: this project's streamed path, as :meth:`saetrack.data.stream.StreamedActivations.train_batches` and
  :func:`saetrack.stages.chain.links.train_link` run it (no run directory needed): the link's contexts through
  :func:`~saetrack.data.forward.residual_chunks` (forward stopped at the hooked layer), into
  :func:`~saetrack.data.shuffle.block_shuffled_batches`, into :func:`~saetrack.sae.training.train_sae` (SAELens'
  ``SAETrainer``, fused step, fused Adam, unit-norm decoder) on a :func:`~saetrack.sae.model.build_sae` SAE;
* ``saelens_runner``: SAELens' ``LanguageModelSAETrainingRunner`` with ``override_model`` (the same
  ``HookedTransformer``) and ``override_dataset`` (a ``datasets.Dataset`` of the same pre-tokenized contexts), a
  ``StandardTrainingSAEConfig`` of the same shape, activation normalisation off, no wandb, no evaluation, nothing
  saved. Its construction (activation store, SAE initialisation) is not timed, as ours (``build_sae``) is not.

Default shape (``--preset nano``): the nano suite's model, 4 GPT-NeoX layers of width 128 (4 heads, MLP 512, vocabulary
4096, random weights), hook before block 2, context 128, forward batches of 32 contexts; SAE expansion 8 (d_sae
1024), batch 4096 tokens (``--batch``, ``--expansion``). SAELens' runner reads 32 prompts per store batch and has
``n_batches_in_buffer=64``, which in SAELens 6.54 is a mixing buffer of 64 x 128 = 8192 tokens (two batches; see
SAELens PR #692 - the JSON reports whether the installed version still sizes it so); ours shuffles the whole link
(the nano preset's ``buffer_tokens=None``).

Rounds are interleaved (the order alternates) and the best round of each measurement is kept: the machine is
noisy (``streamed_vs_saelens_runner_median_of_rounds`` is the median of the per-round ratios, the two contenders
running back to back; on a machine shared with other jobs, more and shorter rounds find its quiet moments better
than a few long ones). Every side gets a short untimed warm-up first. Printed as one JSON object on stdout
(progress on stderr): the rates, ``streamed_vs_saelens_runner = streamed_tokens_per_s /
saelens_runner_tokens_per_s`` (>= 1: no slower), and where the streamed path spends its time; the 1-minute load
average before and after says how busy the machine was. Known differences in work, not in speed: SAELens 6.54
stops the forward of a ``hook_resid_pre`` hook one block late (``extract_stop_at_layer_from_tlens_hook_name``
returns ``layer + 1``), so it runs ``layer + 1`` blocks where ours runs ``layer``, and its mixing buffer holds back
rows, so it forwards a store batch or two more than it trains on.

Time shares. The streamed pipeline runs its three parts one after the other in one thread, so each part is also
timed alone on the same data, best of the rounds: (a) ``forward``: iterating ``residual_chunks`` over the link's
contexts (every chunk materialised, nothing else); (b) ``sae_step``: ``train_sae`` on the precomputed, shuffled
batches (construction of the trainer included, as in the end-to-end run); (c) ``data_shuffle``: pulling every
batch from ``block_shuffled_batches`` over the precomputed chunks (regrouping into blocks, the seeded permutation,
the gather, the cast and slicing). ``time_shares`` are each part's time over the sum of the three;
``unaccounted_share_of_streamed`` is ``1 - sum / streamed wall time`` (interaction and overhead; negative when the
end-to-end run happened to be faster than its parts timed alone).

Paper presets (``--device cuda``, or ``--project`` on the CPU). The projected wall time of each paper preset's
full chain (``first_tokens + (len(sae_steps) - 1) * link_tokens``), baselines (``len(baseline_steps) *
baseline_token_budget``) and analysis sets (``len(sae_steps) * analysis_contexts * context_length`` tokens: a
forward and an SAE encode) from per-token times of the forward (stopped at the hooked layer), the SAE training
step, the shuffle and the SAE encode. On CUDA they are *measured at the paper's shapes*: a random Pythia-shaped
model (12 x d768 / 24 x d1024 / 24 x d2048, built with only ``layer + 1`` blocks since a forward stopped at the
hook never runs the rest - the same compute), the preset's context, forward batch, ``forward_dtype`` and ``tf32``,
an SAE of expansion 64 at batch 4096. On the CPU they are *extrapolated*: the per-token times measured here
scaled by the FLOP ratio of the paper's shape to the measured one (the shuffle by the width ratio), i.e. assuming
the same achieved FLOP/s - labelled as such, and huge. Not projected: held-out evaluation of each link (CE loss
recovered runs the full model), the convergence probes, UMAP and other analysis compute past the encode, and
loading checkpoints.

Run::

    python benchmarks/bench_streaming.py --threads 2   # nano shape, 100k tokens x 5 rounds: ~2 min on 2 idle cores
    python benchmarks/bench_streaming.py --tokens 40960 --rounds 1        # a quick check
    python benchmarks/bench_streaming.py --device cuda --tokens 4000000  # a GPU: adds the paper-shape projection
    python benchmarks/bench_streaming.py --project                        # CPU: also the (extrapolated) projection
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import itertools
import json
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from saetrack.config import ChainConfig, SuiteConfig, get_preset
from saetrack.data.forward import residual_chunks
from saetrack.data.hf_convert import hooked_config_from_hf, hooked_from_hf
from saetrack.data.nanolm import build_model, neox_config
from saetrack.data.shuffle import block_shuffled_batches
from saetrack.sae.model import build_sae
from saetrack.sae.training import train_sae
from saetrack.stages.chain.links import DENSE_CURVE_POINTS

#: The paper presets whose runs are projected.
PAPER_PRESETS = ("pythia-160m-l4", "pythia-410m-l4", "pythia-1.4b-l3")

#: Attention heads of the Pythia models by width (the presets record layers and width, not heads).
PYTHIA_HEADS = {768: 12, 1024: 16, 2048: 16}

#: Pythia's (padded) vocabulary.
PYTHIA_VOCAB = 50_304

LR, WARMUP, SEED = 4e-4, 10, 0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# Shapes
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Setup:
    """The measured model and SAE: a GPT-NeoX of ``n_layers`` x ``d_model``, hook before block ``layer``."""

    name: str
    n_layers: int
    d_model: int
    n_heads: int
    layer: int
    context: int
    vocab: int
    expansion: int
    batch: int
    batch_contexts: int
    forward_dtype: str = "float32"
    tf32: bool = False
    buffer_tokens: int | None = None
    l1_coefficient: float = 8e-4

    @property
    def d_sae(self) -> int:
        return self.expansion * self.d_model

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.layer}.hook_resid_pre"

    @property
    def forward_flops_per_token(self) -> float:
        """Model FLOPs of the forward stopped at the hook: per block 24 d^2 (QKV, O, MLP 4d) + 4 ctx d (attention)."""
        d = self.d_model
        return self.layer * (24.0 * d * d + 4.0 * self.context * d)

    @property
    def sae_step_flops_per_token(self) -> float:
        """Model FLOPs of an SAE training step per token: 12 d F (forward 4 d F, backward twice that)."""
        return 12.0 * self.d_model * self.d_sae

    @property
    def sae_encode_flops_per_token(self) -> float:
        return 2.0 * self.d_model * self.d_sae

    def chain(self) -> ChainConfig:
        return ChainConfig(
            schedule=(0,), expansion_factor=self.expansion, l1_coefficient=self.l1_coefficient, decoder_norm="unit"
        )

    def describe(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"d_sae": self.d_sae, "hook_name": self.hook_name}


def setup_from_preset(name: str, batch: int | None = None, forward_dtype: str | None = None) -> Setup:
    """The model and SAE shape of preset ``name`` (a nano-suite preset, or a Pythia preset's shape)."""
    run = get_preset(name)
    if run.suite is not None:
        n_layers, d_model, n_heads = run.suite.n_layers, run.suite.d_model, run.suite.n_heads
        vocab = run.corpus.vocab_size if run.corpus is not None else 4096
    else:
        n_layers, d_model = run.model.n_layers, run.model.d_model
        if n_layers is None or d_model is None:
            raise ValueError(f"preset {name!r} does not record its model's n_layers and d_model.")
        n_heads, vocab = PYTHIA_HEADS.get(d_model, max(1, d_model // 64)), PYTHIA_VOCAB
    return Setup(
        name=name,
        n_layers=n_layers,
        d_model=d_model,
        n_heads=n_heads,
        layer=run.cache.layer,
        context=run.cache.context_length,
        vocab=vocab,
        expansion=run.chain.expansion_factor,
        batch=batch or run.chain.batch_size,
        batch_contexts=run.cache.batch_contexts,
        forward_dtype=forward_dtype or run.cache.forward_dtype,
        tf32=run.cache.tf32,
        buffer_tokens=run.cache.buffer_tokens,
        l1_coefficient=run.chain.l1_coefficient,
    )


def suite_of(setup: Setup, n_layers: int) -> SuiteConfig:
    return SuiteConfig(
        n_layers=n_layers,
        d_model=setup.d_model,
        n_heads=setup.n_heads,
        d_mlp=4 * setup.d_model,
        context_length=setup.context,
    )


def build_hooked(setup: Setup, device: str, n_layers: int | None = None, seed: int = 0) -> Any:
    """A random GPT-NeoX ``HookedTransformer`` of ``setup``'s shape (``n_layers`` blocks, default all).

    Small models go through ``transformers`` and the project's converter (:func:`hooked_from_hf`), as checkpoints
    do; large ones (more than 50M parameters) are built as a ``HookedTransformer`` directly on ``device``
    (random weights either way: the forward's cost does not depend on them).
    """
    suite = suite_of(setup, n_layers or setup.n_layers)
    params = suite.n_layers * 12 * setup.d_model**2 + 2 * setup.vocab * setup.d_model
    if params <= 50_000_000:
        return hooked_from_hf(build_model(suite, vocab_size=setup.vocab, seed=seed), device=device)
    from transformer_lens import HookedTransformer

    torch.manual_seed(seed)
    cfg = hooked_config_from_hf(neox_config(suite, setup.vocab), device=device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        try:
            with torch.device(device):  # initialised on the device: seconds instead of a minute on the CPU
                return HookedTransformer(cfg, move_to_device=True).eval()
        except (RuntimeError, TypeError) as error:
            log(f"building on {device} directly failed ({error}); building on the CPU and moving it")
            with torch.device("cpu"):
                return HookedTransformer(cfg, move_to_device=True).eval()


# ------------------------------------------------------------------------------------------------
# Timing helpers
# ------------------------------------------------------------------------------------------------


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    """(wall seconds, result) of one call, synchronised on CUDA."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result


def log_every(n_tokens: int, batch: int) -> int:
    """The loss-curve interval :func:`saetrack.stages.chain.links.train_link` uses."""
    return max(1, n_tokens // batch // DENSE_CURVE_POINTS)


# ------------------------------------------------------------------------------------------------
# The two contenders and the streamed path's parts
# ------------------------------------------------------------------------------------------------


def chunks_of(model: Any, setup: Setup, tokens: np.ndarray, device: str) -> Iterator[torch.Tensor]:
    """The link's activations in token order, as ``StreamedActivations._rows`` makes them (float32 storage)."""
    return residual_chunks(
        model,
        tokens,
        setup.layer,
        batch_contexts=setup.batch_contexts,
        device=device,
        store_dtype=torch.float32,
        forward_dtype=setup.forward_dtype,
    )


def batches_of(
    rows: Callable[[], Iterator[torch.Tensor]], setup: Setup, n_rows: int, device: str
) -> Iterator[torch.Tensor]:
    """SAE batches as ``StreamedActivations.train_batches`` makes them (``buffer_tokens`` None: the whole link)."""
    return block_shuffled_batches(
        rows, setup.batch, buffer_rows=setup.buffer_tokens or n_rows, seed=SEED, dtype=torch.float32, device=device
    )


def train(setup: Setup, batches: Iterator[torch.Tensor], n_tokens: int, device: str) -> Callable[[], Any]:
    """A call training one link as :func:`saetrack.stages.chain.links.train_link` does, on a fresh seeded SAE (built
    now)."""
    sae = build_sae(setup.d_model, setup.chain(), seed=SEED, device=device)
    return lambda: train_sae(
        sae, batches, n_tokens=n_tokens, lr=LR, warmup_steps=WARMUP, batch_size=setup.batch, seed=SEED,
        progress=False, log_every=log_every(n_tokens, setup.batch),
    )  # fmt: skip


def run_streamed(model: Any, setup: Setup, tokens: np.ndarray, device: str) -> tuple[float, Any]:
    """Seconds of one streamed link over all of ``tokens`` (forward + shuffle + SAE steps, SAE built untimed)."""
    n_rows = tokens.size
    batches = batches_of(lambda: chunks_of(model, setup, tokens, device), setup, n_rows, device)
    return timed(train(setup, batches, n_rows, device), device)


def time_forward(model: Any, setup: Setup, tokens: np.ndarray, device: str) -> tuple[float, list[torch.Tensor]]:
    return timed(lambda: list(chunks_of(model, setup, tokens, device)), device)


def time_shuffle(chunks: list[torch.Tensor], setup: Setup, device: str) -> tuple[float, list[torch.Tensor]]:
    n_rows = sum(c.shape[0] for c in chunks)
    batches = batches_of(lambda: iter(chunks), setup, n_rows, device)
    return timed(lambda: list(itertools.islice(batches, n_rows // setup.batch)), device)


def time_sae_steps(batches: list[torch.Tensor], setup: Setup, device: str) -> float:
    n_tokens = len(batches) * setup.batch
    return timed(train(setup, iter(batches), n_tokens, device), device)[0]


@dataclasses.dataclass
class SAELensRunner:
    """SAELens' ``LanguageModelSAETrainingRunner`` on ``model`` and pre-tokenized contexts (module doc)."""

    model: Any
    setup: Setup
    tokens: np.ndarray
    device: str
    n_batches_in_buffer: int
    store_batch_size_prompts: int

    def __post_init__(self) -> None:
        from datasets import Dataset

        # The runner's mixing buffer keeps rows back, so it reads a few more contexts than it trains on.
        extra = self.n_batches_in_buffer + 2 * self.store_batch_size_prompts
        rng = np.random.default_rng(1)
        more = rng.integers(0, self.setup.vocab, (extra, self.setup.context))
        self.dataset = Dataset.from_dict({"input_ids": np.concatenate([self.tokens, more]).tolist()})

    @property
    def buffer_size_tokens(self) -> int:
        """The mixing buffer SAELens 6.54 sizes (``n_batches_in_buffer * context_size``; see PR #692)."""
        return self.n_batches_in_buffer * self.setup.context

    def runner(self, n_tokens: int) -> Any:
        from sae_lens import (
            LanguageModelSAERunnerConfig,
            LanguageModelSAETrainingRunner,
            LoggingConfig,
            StandardTrainingSAEConfig,
        )

        s = self.setup
        cfg = LanguageModelSAERunnerConfig(
            sae=StandardTrainingSAEConfig(
                d_in=s.d_model, d_sae=s.d_sae, l1_coefficient=s.l1_coefficient, normalize_activations="none"
            ),
            model_name="random-gpt-neox",
            hook_name=s.hook_name,
            dataset_path="in-memory",
            is_dataset_tokenized=True,
            streaming=False,
            context_size=s.context,
            training_tokens=n_tokens,
            train_batch_size_tokens=s.batch,
            n_batches_in_buffer=self.n_batches_in_buffer,
            store_batch_size_prompts=self.store_batch_size_prompts,
            autocast_lm=s.forward_dtype == "bfloat16",
            device=self.device,
            seed=SEED,
            lr=LR,
            lr_warm_up_steps=WARMUP,
            lr_end=LR,
            n_eval_batches=0,
            prepend_bos=False,
            logger=LoggingConfig(log_to_wandb=False),
            output_path=None,
            n_checkpoints=0,
            verbose=False,
        )
        return LanguageModelSAETrainingRunner(cfg, override_dataset=self.dataset, override_model=self.model)

    def run(self, n_tokens: int) -> float:
        """Seconds of ``runner.run()`` for ``n_tokens`` (the runner's construction not timed)."""
        runner = self.runner(n_tokens)
        return timed(runner.run, self.device)[0]


def pr692_check() -> dict[str, Any]:
    """Whether the installed SAELens sizes its mixing buffer without the prompts per store batch (PR #692)."""
    import sae_lens
    from sae_lens.training.activations_store import ActivationsStore

    lines, first = inspect.getsourcelines(ActivationsStore.get_data_loader)
    hits = [first + i for i, line in enumerate(lines) if "buffer_size=" in line]
    text = "".join(lines)
    present = "self.n_batches_in_buffer * self.training_context_size" in text and "store_batch_size_prompts" not in text
    return {
        "sae_lens_version": sae_lens.__version__,
        "buffer_size_line": hits[0] if hits else None,
        "buffer_ignores_store_batch_size_prompts": present,
    }


# ------------------------------------------------------------------------------------------------
# The side-by-side measurement
# ------------------------------------------------------------------------------------------------


def side_by_side(args: argparse.Namespace, setup: Setup) -> dict[str, Any]:
    device = args.device
    if setup.tf32 and device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
    step_tokens = math.lcm(setup.batch, setup.context)
    n_tokens = max(1, math.ceil(args.tokens / step_tokens)) * step_tokens
    n_steps = n_tokens // setup.batch
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, setup.vocab, (n_tokens // setup.context, setup.context))
    log(f"building a random {setup.n_layers}-layer d{setup.d_model} GPT-NeoX ({setup.name} shape) on {device} ...")
    model = build_hooked(setup, device)
    saelens = SAELensRunner(model, setup, tokens, device, args.saelens_buffer_batches, args.saelens_store_prompts)
    if saelens.buffer_size_tokens < setup.batch:
        raise SystemExit(
            f"SAELens' mixing buffer ({args.saelens_buffer_batches} x {setup.context} = {saelens.buffer_size_tokens} "
            f"tokens) is smaller than a batch ({setup.batch}); raise --saelens-buffer-batches."
        )

    warm = tokens[: max(1, 2 * setup.batch // setup.context)]
    log(f"warm-up ({warm.size} tokens each) ...")
    run_streamed(model, setup, warm, device)
    saelens.run(warm.size)

    best: dict[str, float] = {}
    every: dict[str, list[float]] = {}

    def keep(name: str, seconds: float) -> None:
        best[name] = min(best.get(name, math.inf), seconds)
        every.setdefault(name, []).append(round(seconds, 3))

    final_losses: dict[str, float] = {}
    for r in range(args.rounds):
        order = ("streamed", "saelens_runner") if r % 2 == 0 else ("saelens_runner", "streamed")
        for name in order:
            log(f"round {r + 1}/{args.rounds}: {name} on {n_tokens} tokens ...")
            if name == "streamed":
                seconds, result = run_streamed(model, setup, tokens, device)
                final_losses = {k: v[-1] for k, v in result.loss_curve.items() if k in ("mse_loss", "l1_loss")}
            else:
                seconds = saelens.run(n_tokens)
            keep(name, seconds)
        log(f"round {r + 1}/{args.rounds}: the streamed path's parts alone ...")
        seconds, chunks = time_forward(model, setup, tokens, device)
        keep("forward", seconds)
        seconds, batches = time_shuffle(chunks, setup, device)
        keep("data_shuffle", seconds)
        del chunks
        keep("sae_step", time_sae_steps(batches, setup, device))
        del batches
        log(f"  so far: {json.dumps({k: round(v, 3) for k, v in best.items()})}")

    parts = ("forward", "sae_step", "data_shuffle")
    total = sum(best[p] for p in parts)
    out: dict[str, Any] = {
        "n_tokens": n_tokens,
        "n_steps": n_steps,
        "streamed_tokens_per_s": n_tokens / best["streamed"],
        "saelens_runner_tokens_per_s": n_tokens / best["saelens_runner"],
        "streamed_vs_saelens_runner": best["saelens_runner"] / best["streamed"],
        "streamed_vs_saelens_runner_median_of_rounds": statistics.median(
            a / b for a, b in zip(every["saelens_runner"], every["streamed"], strict=True)
        ),
        "best_wall_s": {k: round(v, 3) for k, v in best.items()},
        "wall_s_per_round": every,
        "part_tokens_per_s": {p: n_tokens / best[p] for p in parts},
        "time_shares": {p: best[p] / total for p in parts},
        "unaccounted_share_of_streamed": 1.0 - total / best["streamed"],
        "streamed_final_losses": final_losses,
        "saelens_runner_settings": {
            "n_batches_in_buffer": saelens.n_batches_in_buffer,
            "store_batch_size_prompts": saelens.store_batch_size_prompts,
            "mixing_buffer_tokens_actual": saelens.buffer_size_tokens,
            "mixing_buffer_tokens_if_pr692": saelens.buffer_size_tokens * saelens.store_batch_size_prompts,
            "tokens_per_store_batch": saelens.store_batch_size_prompts * setup.context,
            "sae": "StandardTrainingSAE (SAELens autograd step, L1 weighted by decoder norms), default Adam",
        },
        "streamed_settings": {
            "batch_contexts": setup.batch_contexts,
            "shuffle_block_rows": setup.buffer_tokens or n_tokens,
            "sae": "SAETrackSAE via build_sae (fused step, fused Adam, unit-norm decoder)",
        },
    }
    rates = {
        "forward": (best["forward"] / n_tokens, setup.forward_flops_per_token),
        "sae_step": (best["sae_step"] / n_tokens, setup.sae_step_flops_per_token),
        "data_shuffle": (best["data_shuffle"] / n_tokens, float(setup.d_model)),
        "sae_encode": (time_encode(setup, device), setup.sae_encode_flops_per_token),
    }
    out["per_token_s"] = {k: v[0] for k, v in rates.items()}
    out["achieved_gflops"] = {k: v[1] / v[0] / 1e9 for k, v in rates.items() if k != "data_shuffle"}
    out["_rates"] = rates
    return out


def time_encode(setup: Setup, device: str, n_batches: int = 8) -> float:
    """Seconds per token of the SAE encode (no gradient), best of ``n_batches`` batches after one warm-up."""
    sae = build_sae(setup.d_model, setup.chain(), seed=SEED, device=device)
    x = torch.randn(setup.batch, setup.d_model, generator=torch.Generator().manual_seed(0)).to(device)
    best = math.inf
    with torch.no_grad():
        sae.encode(x)
        for _ in range(n_batches):
            best = min(best, timed(lambda: sae.encode(x), device)[0])
    return best / setup.batch


# ------------------------------------------------------------------------------------------------
# Paper-shape rates and the projection
# ------------------------------------------------------------------------------------------------


def paper_forward(setup: Setup, device: str, forward_batches: int) -> tuple[dict[str, float], list[torch.Tensor]]:
    """Seconds per token of the forward stopped at the hook, in float32 and under bfloat16 autocast; its chunks."""
    model = build_hooked(setup, device, n_layers=setup.layer + 1)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, setup.vocab, ((forward_batches + 1) * setup.batch_contexts, setup.context))
    warm, timed_tokens = tokens[: setup.batch_contexts], tokens[setup.batch_contexts :]
    forward: dict[str, float] = {}
    chunks: list[torch.Tensor] = []
    for dtype in ("float32", "bfloat16"):
        s = dataclasses.replace(setup, forward_dtype=dtype)
        list(chunks_of(model, s, warm, device))
        seconds, chunks = timed(lambda s=s: list(chunks_of(model, s, timed_tokens, device)), device)
        forward[dtype] = seconds / timed_tokens.size
    return forward, chunks


def paper_sae_step(setup: Setup, device: str, sae_steps: int) -> float:
    """Seconds per token of :func:`train_sae`'s step at ``setup`` (random batches, after a 2-step warm-up)."""
    sae = build_sae(setup.d_model, setup.chain(), seed=SEED, device=device)
    gen = torch.Generator().manual_seed(0)
    data = [torch.randn(setup.batch, setup.d_model, generator=gen).to(device) for _ in range(4)]

    def steps(n: int) -> Any:
        return train_sae(
            sae, itertools.cycle(data), n_tokens=n * setup.batch, lr=LR, warmup_steps=0, batch_size=setup.batch,
            seed=SEED, progress=False,
        )  # fmt: skip

    steps(2)  # kernels, allocator, Adam state
    return float(steps(sae_steps).wall_time_s / (sae_steps * setup.batch))


def measure_paper_shape(setup: Setup, device: str, forward_batches: int, sae_steps: int) -> dict[str, Any]:
    """Per-token seconds of the forward, SAE step, shuffle and encode at ``setup`` (a paper preset's shape).

    The model has ``layer + 1`` blocks (the forward stops at ``layer``); ``tf32`` is set as the streamed source sets
    it (globally, so it applies to the SAE too), both forward dtypes are timed and the preset's is projected.
    """
    previous_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = setup.tf32
    try:
        log(f"{setup.name}: random {setup.layer + 1}-block d{setup.d_model} model on {device} ...")
        forward, chunks = paper_forward(setup, device, forward_batches)
        n_rows = sum(c.shape[0] for c in chunks)
        shuffle_s, _ = time_shuffle(chunks, setup, device)
        del chunks
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        log(f"{setup.name}: SAE d{setup.d_model} -> {setup.d_sae}, batch {setup.batch}, {sae_steps} steps ...")
        sae_step = paper_sae_step(setup, device, sae_steps)
        encode = time_encode(setup, device)
        return {
            "forward_per_token_s": forward,
            "forward_dtype_projected": setup.forward_dtype,
            "tf32": setup.tf32,
            "sae_step_per_token_s": sae_step,
            "data_shuffle_per_token_s": shuffle_s / n_rows,
            "sae_encode_per_token_s": encode,
            "shape": {
                "model": f"{setup.n_layers} layers (built {setup.layer + 1}) x d{setup.d_model}, {setup.n_heads} "
                f"heads, vocab {setup.vocab}, forward stopped at layer {setup.layer}",
                "context": setup.context,
                "batch_contexts": setup.batch_contexts,
                "sae": f"d{setup.d_model} -> d{setup.d_sae} (expansion {setup.expansion}), batch {setup.batch}",
                "shuffle_block_rows": min(setup.buffer_tokens or n_rows, n_rows),
            },
            "measured": {
                "forward_tokens": forward_batches * setup.batch_contexts * setup.context,
                "sae_steps": sae_steps,
                "shuffle_rows": n_rows,
            },
        }
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous_tf32
        if device.startswith("cuda"):
            torch.cuda.empty_cache()


def extrapolate(setup: Setup, rates: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """Per-token seconds at ``setup`` from rates measured at another shape, scaled by FLOPs (shuffle: by width)."""
    scale = {
        "forward": setup.forward_flops_per_token,
        "sae_step": setup.sae_step_flops_per_token,
        "data_shuffle": float(setup.d_model),
        "sae_encode": setup.sae_encode_flops_per_token,
    }
    per = {k: rates[k][0] * scale[k] / rates[k][1] for k in scale}
    return {
        "forward_per_token_s": {setup.forward_dtype: per["forward"]},
        "forward_dtype_projected": setup.forward_dtype,
        "sae_step_per_token_s": per["sae_step"],
        "data_shuffle_per_token_s": per["data_shuffle"],
        "sae_encode_per_token_s": per["sae_encode"],
        "shape": {
            "model": f"{setup.n_layers} layers x d{setup.d_model}, forward stopped at layer {setup.layer}",
            "context": setup.context,
            "sae": f"d{setup.d_model} -> d{setup.d_sae} (expansion {setup.expansion}), batch {setup.batch}",
        },
    }


def project(name: str, per: dict[str, Any]) -> dict[str, Any]:
    """Projected hours of preset ``name``'s chain, baselines and analysis from per-token seconds ``per``."""
    run = get_preset(name)
    chain, n_links = run.chain, len(run.sae_steps)
    forward = per["forward_per_token_s"][per["forward_dtype_projected"]]
    train_per_token = forward + per["data_shuffle_per_token_s"] + per["sae_step_per_token_s"]
    tokens = {
        "chain": chain.first_tokens + (n_links - 1) * chain.link_tokens,
        "baselines": len(run.baseline_steps) * chain.baseline_token_budget,
        "analysis": n_links * run.cache.analysis_contexts * run.cache.context_length,
    }
    seconds = {
        "chain": tokens["chain"] * train_per_token,
        "baselines": tokens["baselines"] * train_per_token,
        "analysis": tokens["analysis"] * (forward + per["sae_encode_per_token_s"]),
    }
    return {
        "cache_mode": run.cache.mode,
        "tokens": tokens,
        "n_links": n_links,
        "n_baselines": len(run.baseline_steps),
        "train_tokens_per_s": 1.0 / train_per_token,
        "hours": {k: v / 3600 for k, v in seconds.items()} | {"total": sum(seconds.values()) / 3600},
    }


def projection(args: argparse.Namespace, measured: dict[str, Any]) -> dict[str, Any]:
    on_cuda = args.device.startswith("cuda")
    out: dict[str, Any] = {
        "basis": (
            f"measured on {args.device} at each paper preset's shape (rates below)"
            if on_cuda
            else f"EXTRAPOLATED from the rates measured here on the CPU at the {measured['setup']['name']} shape, "
            "scaled by FLOPs per token (shuffle: by width), i.e. assuming the same achieved FLOP/s; not a GPU estimate"
        ),
        "model": "train per token = forward (stopped at the hook) + shuffle + SAE step, run one after the other as "
        "the streamed source does; analysis per token = forward + SAE encode. Not included: held-out evaluation "
        "(CE loss recovered runs the full model), convergence probes, UMAP, checkpoint loading.",
        "presets": {},
    }
    for name in PAPER_PRESETS:
        setup = setup_from_preset(name)
        if on_cuda:
            per = measure_paper_shape(setup, args.device, args.paper_forward_batches, args.paper_sae_steps)
        else:
            per = extrapolate(setup, measured["_rates"])
        out["presets"][name] = {"rates": per, "projection": project(name, per)}
    return out


# ------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tokens", type=int, default=100_000, help="training tokens per timed run (rounded up)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--preset", default="nano", help="model shape, hook and context of this preset")
    parser.add_argument("--batch", type=int, default=4096, help="SAE batch in tokens")
    parser.add_argument("--expansion", type=int, default=8, help="SAE expansion (d_sae = expansion * d_model)")
    parser.add_argument("--forward-dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the best of each is kept")
    parser.add_argument("--saelens-buffer-batches", type=int, default=64, help="SAELens' n_batches_in_buffer")
    parser.add_argument("--saelens-store-prompts", type=int, default=32, help="SAELens' store_batch_size_prompts")
    parser.add_argument("--project", action="store_true", help="on the CPU: also the extrapolated projection")
    parser.add_argument("--paper-forward-batches", type=int, default=8, help="CUDA: forward batches per shape")
    parser.add_argument("--paper-sae-steps", type=int, default=10, help="CUDA: timed SAE steps per shape")
    parser.add_argument("--json", type=Path, help="also write the JSON object to this file")
    args = parser.parse_args()
    # SAELens warns that the dataset has fewer rows than training tokens: its rows are whole contexts.
    warnings.filterwarnings("ignore", message="The training dataset contains fewer samples")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for, but torch sees no CUDA device.")
    torch.set_num_threads(args.threads)
    setup = dataclasses.replace(
        setup_from_preset(args.preset, batch=args.batch, forward_dtype=args.forward_dtype), expansion=args.expansion
    )
    result: dict[str, Any] = {
        "device": args.device,
        "device_name": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "setup": setup.describe(),
        "time_shares_method": (
            "each part of the streamed path timed alone on the same data, best of the rounds: forward = iterating "
            "residual_chunks; sae_step = train_sae on the precomputed shuffled batches; data_shuffle = "
            "block_shuffled_batches over the precomputed chunks; share = part / (sum of the three parts)"
        ),
        "saelens_pr692": pr692_check(),
        "load_average_1min_at_start": os.getloadavg()[0],
    }
    result |= side_by_side(args, setup)
    result["load_average_1min_after_side_by_side"] = os.getloadavg()[0]
    if args.device.startswith("cuda") or args.project:
        result["paper_projection"] = projection(args, result)
    result.pop("_rates")
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
