"""Activation caching with the forward pass stopped at layer L, against a full forward pass; suite training speed.

    python benchmarks/bench_cache_and_suite.py                 # the nano preset's shapes
    python benchmarks/bench_cache_and_suite.py --preset nano-l --repeats 7

Both caching variants run on the same model, tokens and thread count, interleaved (A B A B ...) so that
noise from a shared machine hits both alike; the printed ratio is the median of per-pair ratios. The
expected speed-up of stopping at layer L is about n_layers / L (the embedding and unembedding shift it a
little). Suite training throughput is measured with the suite trainer's own training step on a corpus
built from the standard library (capped for speed).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from saetrack.config import get_preset
from saetrack.data.hf_convert import hooked_from_hf
from saetrack.data.nanolm import build_model
from saetrack.stages.cache import residual_at_layer


def bench_caching(preset: str, repeats: int, seed: int = 0) -> None:
    """Print tokens/s of caching ``blocks.L.hook_resid_pre`` stopped at L vs a full forward with a hook."""
    run = get_preset(preset)
    assert run.suite is not None and run.corpus is not None
    model = hooked_from_hf(build_model(run.suite, run.corpus.vocab_size, seed))
    layer, hook = run.cache.layer, run.cache.hook_name
    rng = np.random.default_rng(seed)
    tokens = torch.as_tensor(
        rng.integers(0, run.corpus.vocab_size, (run.cache.batch_contexts, run.cache.context_length))
    )
    n_tokens = tokens.numel()

    def stopped() -> torch.Tensor:
        return residual_at_layer(model, tokens, layer)

    def full() -> torch.Tensor:
        with torch.inference_mode():
            _, cache = model.run_with_cache(tokens, names_filter=hook)
        return cache[hook]

    torch.testing.assert_close(stopped(), full())  # same activations either way
    times: dict[str, list[float]] = {"stopped": [], "full": []}
    for _ in range(repeats):
        for name, fn in (("stopped", stopped), ("full", full)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    ratios = [f / s for f, s in zip(times["full"], times["stopped"], strict=True)]
    n_layers = run.suite.n_layers
    print(
        f"caching {hook} of a {n_layers}-layer d{run.suite.d_model} model, {n_tokens} tokens per batch, "
        f"{torch.get_num_threads()} threads, {repeats} interleaved repeats"
    )
    for name in times:
        median = statistics.median(times[name])
        print(f"  {name:>8}: {n_tokens / median:>10,.0f} tokens/s  (median {median * 1e3:.1f} ms/batch)")
    print(
        f"  speed-up of stopping at layer {layer}: {statistics.median(ratios):.2f}x "
        f"(n_layers / L = {n_layers / max(layer, 1):.2f})"
    )


def bench_suite_training(preset: str, steps: int) -> None:
    """Print the suite trainer's training throughput in tokens/s over ``steps`` optimizer updates."""
    from saetrack.data.corpus import prepare_corpus
    from saetrack.data.suite import SuiteTrainer

    run = get_preset(preset, {"corpus.max_chars": 2_000_000})
    assert run.suite is not None
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        corpus_manifest = prepare_corpus(run, run_dir)
        trainer = SuiteTrainer(run, run_dir, "cpu", run.section_hash("corpus", "suite"), corpus_manifest)
        trainer.train_step()  # warm-up
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        elapsed = time.perf_counter() - t0
    tokens = steps * run.suite.tokens_per_step
    print(
        f"suite training ({preset}: {run.suite.n_layers} layers, d{run.suite.d_model}, "
        f"{run.suite.tokens_per_step} tokens/step, {torch.get_num_threads()} threads): "
        f"{tokens / elapsed:,.0f} tokens/s over {steps} steps "
        f"-> the full {run.suite.total_steps}-step suite needs about "
        f"{run.suite.total_steps * elapsed / steps / 60:.1f} min"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bench_caching(args.preset, args.repeats)
    bench_suite_training(args.preset, args.train_steps)


if __name__ == "__main__":
    main()
