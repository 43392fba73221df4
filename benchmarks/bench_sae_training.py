"""Benchmark: SAE training throughput from an activation array, against this machine's matmul rate.

Measured side by side in one run, on one SAE shape (default d_in 128 -> d_sae 1024, batch 4096):

1. the float32 matmul rate of this machine, for a 2048^3 product and for the three products of an SAE
   training step at its shapes (``[B, D] @ [D, F]``, ``[B, F] @ [F, D]``, ``[F, B] @ [B, D]``);
2. the achieved FLOP rate of :func:`saetrack.sae_training.train_sae` (SAELens' trainer), counting
   ``12 * B * D * F`` FLOPs per step: forward encoder and decoder ``2 * 2BDF``, backward twice that
   (decoder: gradients of the features and of ``W_dec``; encoder: gradients of ``W_enc`` and of the
   encoder input, which ``b_dec`` needs when ``c = 1`` in Eq. 2); elementwise work, Adam and the
   gradient clipping are not counted; its ratio to the measured matmul rates;
3. tokens per second of training from an in-memory array and from a float16 ``.npy`` memmap;
4. one SAELens ``SAETrainer.step`` against a bare PyTorch step with the same maths and Adam on a fixed
   batch: the trainer's overhead, i.e. what a hand-written loop could gain;
5. SAELens' own language-model runner on a nano-shaped model (activations computed on the fly) for the
   same SAE shape and token count, against training from the cache (``*_speedup_vs_lm_runner``).

Each measurement is one function returning a dict, and :data:`BENCHMARKS` lists them. Run::

    python benchmarks/bench_sae_training.py                # under a minute on 2 idle CPU cores
    python benchmarks/bench_sae_training.py --threads 1    # a shared machine: avoids OpenMP oversubscription
    python benchmarks/bench_sae_training.py --d-in 64 --expansion 8 --batch 1024 --tokens 400000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sae_lens import LoggingConfig, SAETrainer
from sae_lens.config import SAETrainerConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from saetrack.config import ChainConfig
from saetrack.sae import build_sae
from saetrack.sae_training import synthetic_activations, train_sae


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
        """FLOPs of one training step: 12 * B * D * F (see the module docstring)."""
        return 12.0 * self.batch * self.d_in * self.d_sae


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
    """GFLOP/s of float32 matmuls: a 2048^3 product and the SAE step's three products (best of ``repeats``)."""
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


def _chain() -> ChainConfig:
    return ChainConfig(schedule=(0,), expansion_factor=1, l1_coefficient=8e-4, decoder_norm="unit")


def bench_train_sae(shape: Shape, activations: np.ndarray, label: str) -> dict[str, float]:
    """Tokens/s and achieved GFLOP/s of :func:`train_sae` (SAELens' trainer) on ``activations``."""
    chain = dataclasses.replace(_chain(), expansion_factor=shape.d_sae // shape.d_in)
    # one short warm-up run so first-call costs (allocator, thread pool) are not timed
    train_sae(build_sae(shape.d_in, chain, seed=0, device=shape.device), activations, n_tokens=2 * shape.batch,
              lr=1e-3, warmup_steps=0, batch_size=shape.batch, seed=0, progress=False)  # fmt: skip
    sae = build_sae(shape.d_in, chain, seed=0, device=shape.device)
    print(f"timing train_sae ({label}) on {shape.tokens} tokens ...", flush=True)
    result = train_sae(sae, activations, n_tokens=shape.tokens, lr=1e-3, warmup_steps=10, batch_size=shape.batch,
                       seed=0, progress=False)  # fmt: skip
    step_s = result.wall_time_s / result.n_steps
    return {
        f"{label}_tokens_per_s": result.tokens_per_s,
        f"{label}_step_ms": 1e3 * step_s,
        f"{label}_gflops": shape.step_flops / step_s / 1e9,
        f"{label}_final_mse_loss": result.loss_curve["mse_loss"][-1],
        f"{label}_final_l1_loss": result.loss_curve["l1_loss"][-1],
    }


def bench_train_sae_in_memory(shape: Shape, activations: np.ndarray) -> dict[str, float]:
    """train_sae from an in-memory float32 array."""
    return bench_train_sae(shape, activations, "array")


def bench_train_sae_memmap(shape: Shape, activations: np.ndarray) -> dict[str, float]:
    """train_sae from a float16 ``.npy`` memmap (the activation cache's storage)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "acts.npy"
        np.save(path, activations.astype(np.float16))
        return bench_train_sae(shape, np.load(path, mmap_mode="r"), "memmap_f16")


def bench_trainer_step_vs_raw(shape: Shape, activations: np.ndarray, repeats: int = 8) -> dict[str, float]:
    """Milliseconds of one ``SAETrainer.step`` and of a bare PyTorch step with the same maths, on a fixed batch."""
    chain = dataclasses.replace(_chain(), expansion_factor=shape.d_sae // shape.d_in)
    sae = build_sae(shape.d_in, chain, seed=0, device=shape.device)
    batch = torch.from_numpy(np.ascontiguousarray(activations[: shape.batch])).to(shape.device)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=shape.batch * 10_000,
        train_batch_size_samples=shape.batch,
        lr=1e-4,
        lr_end=1e-4,
        device=shape.device,
        logger=LoggingConfig(log_to_wandb=False),
    )
    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=iter([batch]))
    trainer_s = _time(lambda: trainer.step(batch), repeats, shape.device)

    raw = build_sae(shape.d_in, chain, seed=0, device=shape.device)
    params = [raw.W_enc, raw.b_enc, raw.W_dec, raw.b_dec]
    optimizer = torch.optim.Adam(params, lr=1e-4)
    l1 = chain.l1_coefficient

    def raw_step() -> None:
        feats = torch.relu((batch - raw.b_dec) @ raw.W_enc + raw.b_enc)
        recon = feats @ raw.W_dec + raw.b_dec
        loss = (recon - batch).pow(2).sum(-1).mean() + l1 * feats.sum(-1).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    raw_s = _time(raw_step, repeats, shape.device)
    return {
        "trainer_step_ms": 1e3 * trainer_s,
        "raw_step_ms": 1e3 * raw_s,
        "raw_speedup_over_trainer": trainer_s / raw_s,
        "trainer_step_gflops": shape.step_flops / trainer_s / 1e9,
    }


def bench_lm_runner(shape: Shape, activations: np.ndarray, n_layers: int = 4, layer: int = 2) -> dict[str, float]:
    """Tokens/s of SAELens' own language-model runner: activations computed on the fly by the model.

    The model has the nano preset's shape (``n_layers`` GPT-NeoX blocks of width ``d_in``, hook
    ``blocks.{layer}.hook_resid_pre``); the runner reads pre-tokenized random contexts from an in-memory
    dataset, fills its activation buffer with forward passes and trains the same SAE shape for the same
    number of tokens as :func:`bench_train_sae`. Evaluation and checkpointing are switched off.
    """
    from datasets import Dataset
    from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, StandardTrainingSAEConfig

    from saetrack.checkpoints import hooked_from_hf
    from saetrack.config import SuiteConfig
    from saetrack.nanolm import build_model

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
    "trainer_vs_raw_step": bench_trainer_step_vs_raw,
    "train_sae_array": bench_train_sae_in_memory,
    "train_sae_memmap": bench_train_sae_memmap,
    "lm_runner": bench_lm_runner,
}


def run(shape: Shape, names: list[str]) -> dict[str, float]:
    """Run the named benchmarks on one synthetic activation set; add FLOP ratios when both sides ran."""
    activations, _ = synthetic_activations(min(shape.tokens, 1 << 18), shape.d_in, seed=0)
    results: dict[str, float] = {}
    for name in names:
        results.update(BENCHMARKS[name](shape, activations))
    for label in ("array", "memmap_f16", "trainer_step"):
        if f"{label}_gflops" in results and "square_2048_gflops" in results:
            results[f"{label}_ratio_to_square"] = results[f"{label}_gflops"] / results["square_2048_gflops"]
            results[f"{label}_ratio_to_sae_shapes"] = results[f"{label}_gflops"] / results["sae_shapes_mean_gflops"]
    if "lm_runner_tokens_per_s" in results:
        for label in ("array", "memmap_f16"):
            if f"{label}_tokens_per_s" in results:
                speedup = results[f"{label}_tokens_per_s"] / results["lm_runner_tokens_per_s"]
                results[f"{label}_speedup_vs_lm_runner"] = speedup
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d-in", type=int, default=128)
    parser.add_argument("--expansion", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--tokens", type=int, default=400_000, help="training tokens per timed run")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), default=sorted(BENCHMARKS))
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = Shape(args.d_in, args.d_in * args.expansion, args.batch, args.tokens, args.device)
    print(f"shape d_in={shape.d_in} d_sae={shape.d_sae} batch={shape.batch} tokens={shape.tokens} "
          f"device={shape.device} threads={torch.get_num_threads()} torch={torch.__version__}")  # fmt: skip
    print(f"FLOPs per step counted as 12*B*D*F = {shape.step_flops / 1e9:.2f} GFLOP")
    results = run(shape, [n for n in BENCHMARKS if n in args.only])
    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:<{width}}  {value:12.4g}")
    if args.json:
        args.json.write_text(json.dumps({"shape": dataclasses.asdict(shape), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
