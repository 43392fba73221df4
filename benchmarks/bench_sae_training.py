"""Benchmark: SAE training throughput from an activation array, against this machine's matmul rate.

Measured side by side in one run, on one SAE shape (default: the nano preset's, d_in 128 -> d_sae 1024,
batch 256):

1. ``matmul``: the float32 matmul rate of this machine, for a 2048^3 product and for the products of an SAE
   training step at its shapes (``[B, D] @ [D, F]``, ``[B, F] @ [F, D]``, ``[F, B] @ [B, D]``);
2. ``step_paths``: one SAELens ``SAETrainer.step`` as :func:`~saetrack.sae.training.train_sae` sets it up
   (fused Adam, unit-norm decoder hooks) with the fused step of :mod:`saetrack.sae.step` against the same
   trainer on SAELens' autograd forward pass, and against a bare loop (the fused step, fused Adam, clipping
   and renormalisation, no SAELens): what a hand-written loop could still gain. Interleaved, best of rounds;
3. ``train_sae``: tokens/s and achieved FLOP/s of :func:`~saetrack.sae.training.train_sae` from an in-memory
   array, with the fused step, on SAELens' autograd path (final losses compared at equal tokens) and with
   64 MiB read chunks instead of :data:`~saetrack.sae.training.CHUNK_BYTES` (page faults per step too):
   interleaved, best of three; ``train_sae_memmap``: from a float16 ``.npy`` memmap (the cache's storage);
4. ``lm_runner``: SAELens' own language-model runner on a nano-shaped model (activations computed on the fly)
   for the same SAE shape and token count, against training from the cache (``*_speedup_vs_lm_runner``).

FLOPs. A step's *model FLOPs* are ``12 * B * D * F``, the usual convention for achieved FLOP/s (MFU): forward
encoder and decoder ``2 * 2BDF``, backward twice the forward. Autograd performs exactly those; the fused step
performs ``10 * B * D * F``, because it gets ``b_dec``'s gradient through the encoder from a matrix-vector
product (see :mod:`saetrack.sae.step`). Both rates are printed: ``*_gflops`` (model FLOPs, the target's
measure) and ``*_performed_gflops``. Elementwise work, Adam and the gradient clipping are not counted.

Each measurement is one function returning a dict, and :data:`BENCHMARKS` lists them. Run::

    python benchmarks/bench_sae_training.py                # about 3 minutes on 2 idle CPU cores
    python benchmarks/bench_sae_training.py --threads 1    # a shared machine: avoids OpenMP oversubscription
    python benchmarks/bench_sae_training.py --d-in 64 --expansion 8 --batch 4096 --tokens 400000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sae_lens import LoggingConfig, SAETrainer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from saetrack.config import ChainConfig, get_preset
from saetrack.sae.model import SAETrackSAE, build_sae
from saetrack.sae.step import standard_sae_step
from saetrack.sae.training import sae_trainer, synthetic_activations, train_sae

NANO = get_preset("nano")


@dataclasses.dataclass(frozen=True)
class Shape:
    """The benchmarked SAE shape and token budget."""

    d_in: int
    d_sae: int
    batch: int
    tokens: int
    device: str

    @property
    def step_flops(self) -> float:
        """Model FLOPs of one training step: 12 * B * D * F (see the module docstring)."""
        return 12.0 * self.batch * self.d_in * self.d_sae

    @property
    def fused_step_flops(self) -> float:
        """FLOPs the fused step performs: 10 * B * D * F."""
        return 10.0 * self.batch * self.d_in * self.d_sae


def _time(fn: Callable[[], Any], repeats: int, device: str) -> float:
    """Best wall time of ``repeats`` calls of ``fn`` after one warm-up call (seconds)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def bench_matmul(shape: Shape, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of float32 matmuls: a 2048^3 product and the SAE step's products (best of ``repeats``)."""
    gen = torch.Generator().manual_seed(0)

    def rand(*size: int) -> torch.Tensor:
        return torch.randn(*size, generator=gen).to(shape.device)

    square = rand(2048, 2048)
    b, d, f = shape.batch, shape.d_in, shape.d_sae
    x, w_enc, feats, w_dec = rand(b, d), rand(d, f), rand(b, f), rand(f, d)
    products = {
        "square_2048": (lambda: square @ square, 2 * 2048**3),
        "encode_BxD_DxF": (lambda: x @ w_enc, 2 * b * d * f),
        "decode_BxF_FxD": (lambda: feats @ w_dec, 2 * b * f * d),
        "weight_grad_FxB_BxD": (lambda: feats.T @ x, 2 * b * f * d),
    }
    out = {}
    for name, (fn, flops) in products.items():
        out[f"{name}_gflops"] = flops / _time(fn, repeats, shape.device) / 1e9
    sae_rates = [out[k] for k in out if not k.startswith("square")]
    out["sae_shapes_mean_gflops"] = float(np.mean(sae_rates))
    return out


def _chain(shape: Shape) -> ChainConfig:
    return ChainConfig(
        schedule=(0,), expansion_factor=shape.d_sae // shape.d_in, l1_coefficient=8e-4, decoder_norm="unit"
    )


@contextmanager
def _autograd_path() -> Iterator[None]:
    """Inside the block, every SAETrackSAE trains on SAELens' autograd forward pass instead of the fused step."""
    SAETrackSAE.fused_step = False
    try:
        yield
    finally:
        SAETrackSAE.fused_step = True


def _train(shape: Shape, activations: np.ndarray, *, fused: bool = True, chunk_tokens: int | None = None) -> Any:
    """One timed :func:`train_sae` run from a fresh seeded SAE (fused step or SAELens' autograd path)."""
    with _autograd_path() if not fused else nullcontext():
        sae = build_sae(shape.d_in, _chain(shape), seed=0, device=shape.device)
        return train_sae(sae, activations, n_tokens=shape.tokens, lr=1e-3, warmup_steps=10, batch_size=shape.batch,
                         seed=0, progress=False, chunk_tokens=chunk_tokens)  # fmt: skip


def _summarise(shape: Shape, label: str, result: Any, performed_flops: float) -> dict[str, float]:
    step_s = result.wall_time_s / result.n_steps
    return {
        f"{label}_tokens_per_s": result.tokens_per_s,
        f"{label}_step_ms": 1e3 * step_s,
        f"{label}_gflops": shape.step_flops / step_s / 1e9,
        f"{label}_performed_gflops": performed_flops / step_s / 1e9,
        f"{label}_final_mse_loss": result.loss_curve["mse_loss"][-1],
        f"{label}_final_l1_loss": result.loss_curve["l1_loss"][-1],
    }


def bench_train_sae_variants(shape: Shape, activations: np.ndarray, repeats: int = 3) -> dict[str, float]:
    """train_sae from an in-memory array: fused step, SAELens' autograd path, 64 MiB read chunks (interleaved).

    Each variant runs ``repeats`` times, alternating, and its fastest run is kept; the same seed and data
    give each variant the same batches, so the final losses compare the two paths at equal tokens.
    """
    variants: dict[str, dict[str, Any]] = {
        "array": {"fused": True},
        "autograd_array": {"fused": False},
        "array_64mib_chunks": {"fused": True, "chunk_tokens": (64 << 20) // (4 * shape.d_in)},
    }
    print(f"timing train_sae ({', '.join(variants)}) on {shape.tokens} tokens, best of {repeats} ...", flush=True)
    best: dict[str, Any] = {}
    faults: dict[str, float] = {}
    _train(dataclasses.replace(shape, tokens=4 * shape.batch), activations)  # warm-up (thread pool, allocator)
    for _ in range(repeats):
        for label, options in variants.items():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            result = _train(shape, activations, **options)
            if label not in best or result.wall_time_s < best[label].wall_time_s:
                best[label] = result
                faults[label] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / result.n_steps
    out: dict[str, float] = {}
    for label, options in variants.items():
        performed = shape.fused_step_flops if options["fused"] else shape.step_flops
        out |= _summarise(shape, label, best[label], performed)
        out[f"{label}_page_faults_per_step"] = faults[label]
    for loss in ("mse", "l1"):
        out[f"fused_over_autograd_final_{loss}_loss"] = (
            out[f"array_final_{loss}_loss"] / out[f"autograd_array_final_{loss}_loss"]
        )
    out["fused_speedup_over_autograd_train_sae"] = out["array_tokens_per_s"] / out["autograd_array_tokens_per_s"]
    out["16mib_over_64mib_chunks_speedup"] = out["array_tokens_per_s"] / out["array_64mib_chunks_tokens_per_s"]
    return out


def bench_train_sae_memmap(shape: Shape, activations: np.ndarray) -> dict[str, float]:
    """train_sae from a float16 ``.npy`` memmap (the activation cache's storage)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "acts.npy"
        np.save(path, activations.astype(np.float16))
        memmap = np.load(path, mmap_mode="r")
        print(f"timing train_sae (memmap_f16) on {shape.tokens} tokens ...", flush=True)
        return _summarise(shape, "memmap_f16", _train(shape, memmap), shape.fused_step_flops)


def _trainer(shape: Shape, batch: torch.Tensor) -> SAETrainer[Any, Any]:
    """An SAETrainer set up as :func:`train_sae` sets it up (fused Adam, renormalisation after each step)."""
    sae = build_sae(shape.d_in, _chain(shape), seed=0, device=shape.device)
    return sae_trainer(sae, iter([batch]), n_steps=1_000_000, batch_size=shape.batch, lr=1e-4, warmup_steps=0)


def _bare_step(shape: Shape, batch: torch.Tensor) -> Callable[[], None]:
    """One training step without SAELens: fused step, fused Adam, clipping and unit-norm renormalisation."""
    sae = build_sae(shape.d_in, _chain(shape), seed=0, device=shape.device)
    params = [sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec]
    optimizer = torch.optim.Adam(params, lr=1e-4, fused=True)
    weights = torch.full((shape.d_sae,), 8e-4, device=shape.device)

    def step() -> None:
        mse, l1, *_ = standard_sae_step(batch, *params, weights, apply_b_dec=True, project_decoder_grad=True)
        (mse + l1).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)  # as SAELens does
        optimizer.step()
        optimizer.zero_grad()
        sae.normalize_decoder_()

    return step


def bench_step_paths(shape: Shape, activations: np.ndarray, rounds: int = 6, steps: int = 60) -> dict[str, float]:
    """Milliseconds per step: the fused step, SAELens' autograd path and a bare loop, interleaved (best round)."""
    batch = torch.from_numpy(np.ascontiguousarray(activations[: shape.batch])).to(shape.device)
    fused = _trainer(shape, batch)
    with _autograd_path():
        autograd = _trainer(shape, batch)
    bare = _bare_step(shape, batch)
    variants: dict[str, Callable[[], Any]] = {
        "fused_trainer": lambda: fused.step(batch),
        "autograd_trainer": lambda: autograd.step(batch),
        "bare_loop": bare,
    }
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(rounds):
        for name, fn in variants.items():
            patch = _autograd_path() if name == "autograd_trainer" else nullcontext()
            with patch:
                best[name] = min(best[name], _time_steps(fn, steps, shape.device))
    out = {f"{name}_step_ms": 1e3 * seconds for name, seconds in best.items()}
    out["fused_speedup_over_autograd"] = best["autograd_trainer"] / best["fused_trainer"]
    out["bare_loop_speedup_over_fused_trainer"] = best["fused_trainer"] / best["bare_loop"]
    out["fused_trainer_gflops"] = shape.step_flops / best["fused_trainer"] / 1e9
    out["fused_trainer_performed_gflops"] = shape.fused_step_flops / best["fused_trainer"] / 1e9
    out["autograd_trainer_gflops"] = shape.step_flops / best["autograd_trainer"] / 1e9
    return out


def _time_steps(fn: Callable[[], Any], steps: int, device: str) -> float:
    """Mean seconds per call over ``steps`` calls, after 5 untimed ones."""
    for _ in range(5):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def bench_lm_runner(shape: Shape, activations: np.ndarray, n_layers: int = 4, layer: int = 2) -> dict[str, float]:
    """Tokens/s of SAELens' own language-model runner: activations computed on the fly by the model.

    The model has the nano preset's shape (``n_layers`` GPT-NeoX blocks of width ``d_in``, hook
    ``blocks.{layer}.hook_resid_pre``); the runner reads pre-tokenized random contexts from an in-memory
    dataset, fills its activation buffer with forward passes and trains the same SAE shape for the same
    number of tokens as :func:`bench_train_sae`. Evaluation and checkpointing are switched off.
    """
    from datasets import Dataset
    from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, StandardTrainingSAEConfig

    from saetrack.config import SuiteConfig
    from saetrack.data.hf_convert import hooked_from_hf
    from saetrack.data.nanolm import build_model

    suite = SuiteConfig(n_layers=n_layers, d_model=shape.d_in, n_heads=max(2, shape.d_in // 32), d_mlp=4 * shape.d_in)
    model = hooked_from_hf(build_model(suite, vocab_size=4096, seed=0), device=shape.device)
    context = 128
    n_batches_in_buffer, prompts_per_batch = 32, 32  # the mixing buffer must hold a training batch after mixing
    n_contexts = shape.tokens // context + 2 * n_batches_in_buffer * prompts_per_batch
    tokens = np.random.default_rng(0).integers(0, 4096, (n_contexts, context))
    dataset = Dataset.from_dict({"input_ids": tokens.tolist()})
    cfg = LanguageModelSAERunnerConfig(
        sae=StandardTrainingSAEConfig(
            d_in=shape.d_in, d_sae=shape.d_sae, l1_coefficient=8e-4, normalize_activations="none"
        ),
        model_name="nano-shaped",
        hook_name=f"blocks.{layer}.hook_resid_pre",
        dataset_path="in-memory",
        is_dataset_tokenized=True,
        streaming=False,
        context_size=context,
        training_tokens=shape.tokens,
        train_batch_size_tokens=shape.batch,
        n_batches_in_buffer=n_batches_in_buffer,
        store_batch_size_prompts=prompts_per_batch,
        device=shape.device,
        lr=1e-3,
        lr_warm_up_steps=10,
        lr_end=1e-3,
        n_eval_batches=0,
        prepend_bos=False,
        logger=LoggingConfig(log_to_wandb=False),
        output_path=None,
        n_checkpoints=0,
        verbose=False,
    )
    runner = LanguageModelSAETrainingRunner(cfg, override_dataset=dataset, override_model=model)
    print(f"timing SAELens' language-model runner on {shape.tokens} tokens ...", flush=True)
    start = time.perf_counter()
    runner.run()
    elapsed = time.perf_counter() - start
    return {"lm_runner_tokens_per_s": shape.tokens / elapsed}


#: name -> benchmark(shape, activations) -> {metric: value}.
BENCHMARKS: dict[str, Callable[[Shape, np.ndarray], dict[str, float]]] = {
    "matmul": lambda shape, _acts: bench_matmul(shape),
    "step_paths": bench_step_paths,
    "train_sae": bench_train_sae_variants,
    "train_sae_memmap": bench_train_sae_memmap,
    "lm_runner": bench_lm_runner,
}


def run(shape: Shape, names: list[str]) -> dict[str, float]:
    """Run the named benchmarks on one synthetic activation set; add FLOP ratios when both sides ran."""
    activations, _ = synthetic_activations(min(shape.tokens, 1 << 18), shape.d_in, seed=0)
    results: dict[str, float] = {}
    for name in names:
        results.update(BENCHMARKS[name](shape, activations))
    for label in ("fused_trainer", "autograd_trainer", "array", "autograd_array", "array_64mib_chunks", "memmap_f16"):
        for kind in ("", "performed_"):
            rate = results.get(f"{label}_{kind}gflops")
            if rate is not None and "square_2048_gflops" in results:
                results[f"{label}_{kind}ratio_to_square"] = rate / results["square_2048_gflops"]
                results[f"{label}_{kind}ratio_to_sae_shapes"] = rate / results["sae_shapes_mean_gflops"]
    if "lm_runner_tokens_per_s" in results:
        for label in ("array", "memmap_f16"):
            if f"{label}_tokens_per_s" in results:
                speedup = results[f"{label}_tokens_per_s"] / results["lm_runner_tokens_per_s"]
                results[f"{label}_speedup_vs_lm_runner"] = speedup
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d-in", type=int, default=NANO.model.d_model, help="default: the nano preset's")
    parser.add_argument("--expansion", type=int, default=NANO.chain.expansion_factor)
    parser.add_argument("--batch", type=int, default=NANO.chain.batch_size)
    parser.add_argument("--tokens", type=int, default=200_000, help="training tokens per timed run")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), default=sorted(BENCHMARKS))
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = Shape(args.d_in, args.d_in * args.expansion, args.batch, args.tokens, args.device)
    print(f"shape d_in={shape.d_in} d_sae={shape.d_sae} batch={shape.batch} tokens={shape.tokens} "
          f"device={shape.device} threads={torch.get_num_threads()} torch={torch.__version__}")  # fmt: skip
    print(f"model FLOPs per step 12*B*D*F = {shape.step_flops / 1e9:.3f} GFLOP (the fused step performs 10*B*D*F)")
    results = run(shape, [n for n in BENCHMARKS if n in args.only])
    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:<{width}}  {value:12.4g}")
    if args.json:
        args.json.write_text(json.dumps({"shape": dataclasses.asdict(shape), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
