"""The checks that need a GPU, in one run of under 10 minutes: sync-free step loop, memory against the plan, speed.

Run on a machine with a CUDA GPU (no network needed: every model has random weights of the preset's shape)::

    python benchmarks/gpu_check.py                      # pythia-410m-l4 shapes; prints one JSON object at the end
    python benchmarks/gpu_check.py --preset pythia-1.4b-l3 --link-tokens 2000000
    python benchmarks/gpu_check.py --device cpu --small # the same code path on a CPU, tiny shapes (a dry run)

In order:

1. ``step_loop``: :func:`saetrack.sae.training.train_sae` at the preset's SAE shape (``d_in``, ``d_sae``, batch) on
   batches made on the device, for each ``chain.matmul_precision`` (fp32, tf32, bf16), inside
   ``torch.cuda.set_sync_debug_mode("error")`` (a host sync in a step raises, except at the loop's read points, which
   are run outside the guarded window by giving it ``log_every`` larger than the steps); tokens/s of each, and
   ``torch.cuda.max_memory_allocated()`` against the plan's :func:`saetrack.planning.common.sae_training_device_bytes`
   without the streaming terms.
2. ``streamed_link``: one link at ``--link-tokens`` (default the preset's later-link budget, 15M) through the
   streamed path: a random-weights model of the preset's shape cut at the hook
   (:func:`saetrack.data.forward.truncate_at_layer`), :func:`~saetrack.data.forward.residual_chunks` over random
   tokens, :func:`~saetrack.data.shuffle.block_shuffled_batches`, ``train_sae`` in the fastest precision of part 1;
   tokens/s and peak memory against the plan's whole streamed-link formula.
3. ``formation``: :func:`saetrack.analysis.feature_scan.scan_features` of one checkpoint's analysis set (random rows of
   the preset's ``analysis_contexts x context_length``, capped by ``--formation-rows``) with the preset's top-k;
   rows/s and peak memory.
4. ``bench_streaming``: ``benchmarks/bench_streaming.py --device cuda`` at a short budget (its own JSON, included).
5. ``projection``: the resource plan (:func:`saetrack.planning.plan_run`) with rates measured now on this device,
   and the same plan's SAE-step seconds rescaled by the step rate measured in part 1: whole-run hours per preset.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from saetrack.analysis.feature_scan import scan_features
from saetrack.config import get_preset
from saetrack.config.run import RunConfig
from saetrack.data.forward import residual_chunks, truncate_at_layer
from saetrack.data.shuffle import block_shuffled_batches
from saetrack.planning import plan_run
from saetrack.planning.common import plan_inputs, sae_bytes, sae_training_device_bytes
from saetrack.rates import Rates, measure_rates
from saetrack.sae.model import build_sae
from saetrack.sae.training import train_sae
from saetrack.sae.weights import SAEWeights

PRESETS = ("pythia-160m-l4", "pythia-410m-l4", "pythia-1.4b-l3")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: str) -> int:
    return int(torch.cuda.max_memory_allocated(device)) if device.startswith("cuda") else 0


@contextlib.contextmanager
def _sync_guard(device: str) -> Iterator[None]:
    """``torch.cuda.set_sync_debug_mode("error")`` inside, on CUDA; nothing on a CPU."""
    if not device.startswith("cuda"):
        yield
        return
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(0)


def _device_batches(d_in: int, batch: int, device: str, seed: int) -> Iterator[torch.Tensor]:
    """Endless ``[batch, d_in]`` batches made on the device (no host traffic): a fixed pool, cycled."""
    gen = torch.Generator(device=device).manual_seed(seed)
    pool = torch.randn(8, batch, d_in, device=device, generator=gen)
    while True:
        yield from pool


def step_loop(run: RunConfig, device: str, steps: int) -> dict[str, Any]:
    """Part 1: the SAE step loop at the preset's shape in each precision, under the sync guard."""
    inputs = plan_inputs(run, measure_rates_stub(device))
    d_in, batch = inputs.d_model, run.chain.batch_size
    cached = plan_inputs(run.with_overrides({"cache.mode": "cached"}), inputs.rates)
    planned = sae_training_device_bytes(cached)
    out: dict[str, Any] = {"d_in": d_in, "d_sae": inputs.d_sae, "batch": batch, "steps": steps, "plan_bytes": planned}
    for precision in ("fp32", "tf32", "bf16"):
        sae = build_sae(d_in, run.chain, seed=0, device=device)
        _reset_peak(device)
        data = _device_batches(d_in, batch, device, seed=1)
        train_sae(sae, data, n_tokens=2 * batch, lr=1e-4, warmup_steps=0, batch_size=batch, seed=0,
                  progress=False, matmul_precision=precision)  # warm-up (kernels, allocator)  # fmt: skip
        _sync(device)
        start = time.perf_counter()
        with _sync_guard(device):
            result = train_sae(sae, data, n_tokens=steps * batch, lr=1e-4, warmup_steps=0, batch_size=batch,
                               seed=0, progress=False, matmul_precision=precision, log_every=10 * steps,
                               keep_optimizer_state=False)  # fmt: skip
        _sync(device)
        wall = time.perf_counter() - start
        peak = _peak(device)
        out[precision] = {
            "tokens_per_s": steps * batch / wall,
            "peak_bytes": peak,
            "peak_over_plan": peak / planned if peak else None,
            "final_mse": result.loss_curve["mse_loss"][-1],
        }
        print(f"step loop {precision}: {steps * batch / wall:,.0f} tok/s, peak {peak / 1e9:.2f} GB "
              f"(plan {planned / 1e9:.2f} GB)", file=sys.stderr, flush=True)  # fmt: skip
        del sae, result
    return out


def measure_rates_stub(device: str) -> Rates:
    """Placeholder rates for the plan's byte formulas (they use no rate; part 5 measures the real ones)."""
    return Rates(device, 1e12, 1e12)


def _random_model(run: RunConfig, device: str) -> Any:
    """A HookedTransformer of the preset's architecture with random weights, cut at the hooked layer."""
    inputs = plan_inputs(run, measure_rates_stub(device))
    cfg = HookedTransformerConfig(
        n_layers=inputs.n_layers, d_model=inputs.d_model, d_head=64, n_heads=inputs.d_model // 64,
        d_mlp=4 * inputs.d_model, d_vocab=inputs.vocab, n_ctx=run.cache.context_length, act_fn="gelu",
        normalization_type="LN", positional_embedding_type="rotary", rotary_dim=16, parallel_attn_mlp=True,
        original_architecture="GPTNeoXForCausalLM", device=device, seed=0,
    )  # fmt: skip
    return truncate_at_layer(HookedTransformer(cfg), run.cache.layer)


def streamed_link(run: RunConfig, device: str, n_tokens: int, precision: str) -> dict[str, Any]:
    """Part 2: one streamed link of ``n_tokens`` at the preset's shape (random model and tokens)."""
    inputs = plan_inputs(run, measure_rates_stub(device))
    ctx = run.cache.context_length
    n_contexts = -(-n_tokens // ctx)
    tokens = np.random.default_rng(0).integers(0, inputs.vocab, size=(n_contexts, ctx), dtype=np.int64)
    _reset_peak(device)
    model = _random_model(run, device)
    sae = build_sae(inputs.d_model, run.chain, seed=0, device=device)
    buffer_rows = min(run.cache.buffer_tokens or n_contexts * ctx, n_contexts * ctx)

    def rows() -> Iterator[torch.Tensor]:
        return residual_chunks(model, tokens, run.cache.layer, batch_contexts=run.cache.batch_contexts,
                               device=device, tf32=run.cache.tf32)  # fmt: skip

    batches = block_shuffled_batches(rows, run.chain.batch_size, buffer_rows=buffer_rows, seed=0, device=device)
    _sync(device)
    start = time.perf_counter()
    train_sae(sae, batches, n_tokens=n_tokens, lr=run.chain.lr_link, warmup_steps=0, batch_size=run.chain.batch_size,
              seed=0, progress=True, matmul_precision=precision, desc="streamed link")  # fmt: skip
    _sync(device)
    wall = time.perf_counter() - start
    planned = sae_training_device_bytes(inputs)
    peak = _peak(device)
    print(f"streamed link: {n_tokens / wall:,.0f} tok/s, peak {peak / 1e9:.2f} GB (plan {planned / 1e9:.2f} GB)",
          file=sys.stderr, flush=True)  # fmt: skip
    return {"tokens": n_tokens, "tokens_per_s": n_tokens / wall, "wall_s": wall, "peak_bytes": peak,
            "plan_bytes": planned, "peak_over_plan": peak / planned if peak else None,
            "precision": precision}  # fmt: skip


def formation(run: RunConfig, device: str, max_rows: int) -> dict[str, Any]:
    """Part 3: the feature scan (statistics and top-k) of one checkpoint's analysis set at the preset's shape."""
    inputs = plan_inputs(run, measure_rates_stub(device))
    n_rows = min(run.cache.analysis_contexts * run.cache.context_length, max_rows)
    sae = build_sae(inputs.d_model, run.chain, seed=0, device=device)
    weights = SAEWeights.from_sae(sae)
    rows = torch.randn(n_rows, inputs.d_model, device=device, generator=torch.Generator(device).manual_seed(0))
    _reset_peak(device)
    _sync(device)
    start = time.perf_counter()
    scan_features(weights, rows, k=run.formation.top_k)
    _sync(device)
    wall = time.perf_counter() - start
    peak = _peak(device)
    print(f"formation scan: {n_rows / wall:,.0f} rows/s, peak {peak / 1e9:.2f} GB", file=sys.stderr, flush=True)
    return {"rows": n_rows, "rows_per_s": n_rows / wall, "wall_s": wall, "peak_bytes": peak,
            "sae_bytes": sae_bytes(inputs.d_model, inputs.d_sae)}  # fmt: skip


def bench_streaming(device: str, tokens: int) -> dict[str, Any] | None:
    """Part 4: ``bench_streaming.py`` on this device at a short budget (its JSON, or ``None`` if it failed)."""
    cmd = [sys.executable, str(Path(__file__).with_name("bench_streaming.py")), "--device", device,
           "--tokens", str(tokens), "--rounds", "2"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, check=False)
    if done.returncode:
        print(f"bench_streaming failed: {done.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout)


def projection(device: str, step_tokens_per_s: float | None) -> dict[str, Any]:
    """Part 5: whole-run hours per preset from the plan with rates measured now (and with the measured step rate)."""
    rates = measure_rates(device)
    out = {}
    for preset in PRESETS:
        run = get_preset(preset)
        lines = plan_run(run, rates)
        total = sum(s.seconds for s in lines if s.owner != "scale")
        entry = {"plan_hours": total / 3600, "lines": {s.stage: s.seconds / 3600 for s in lines if s.owner != "scale"}}
        if step_tokens_per_s:
            inputs = plan_inputs(run, rates)
            sae_tokens = sum(s.sae_tokens for s in lines if s.owner != "scale")
            rescaled = total - sae_tokens * inputs.sae_step_seconds + sae_tokens / step_tokens_per_s
            entry["hours_with_measured_step"] = rescaled / 3600
        out[preset] = entry
        print(f"{preset}: plan {total / 3600:,.1f} h on {device}", file=sys.stderr, flush=True)
    return out


def main() -> int:
    """Run the parts in order and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--preset", default="pythia-410m-l4")
    parser.add_argument("--steps", type=int, default=100, help="timed SAE steps per precision (part 1)")
    parser.add_argument("--link-tokens", type=int, default=0, help="part 2's link (0: the preset's link budget)")
    parser.add_argument("--formation-rows", type=int, default=2_000_000)
    parser.add_argument("--small", action="store_true", help="tiny shapes (a dry run of the code path on a CPU)")
    parser.add_argument("--json", type=Path, help="also write the JSON object to this file")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; use --device cpu --small for a dry run.", file=sys.stderr)
        return 2
    run = get_preset("smoke" if args.small else args.preset)
    if args.small:
        run = run.with_overrides({"cache.mode": "streamed"}) if not run.cache.streamed else run
    link_tokens = args.link_tokens or (8192 if args.small else run.chain.tokens_for(1))
    report: dict[str, Any] = {"device": args.device, "preset": run.preset, "torch": torch.__version__}
    if args.device.startswith("cuda"):
        report["gpu"] = torch.cuda.get_device_name(args.device)
    report["step_loop"] = step_loop(run, args.device, 5 if args.small else args.steps)
    fastest = max(("fp32", "tf32", "bf16"), key=lambda p: report["step_loop"][p]["tokens_per_s"])
    report["streamed_link"] = streamed_link(run, args.device, link_tokens, fastest)
    report["formation"] = formation(run, args.device, 50_000 if args.small else args.formation_rows)
    if not args.small:
        report["bench_streaming"] = bench_streaming(args.device, 200_000)
    report["projection"] = projection(args.device, report["step_loop"][fastest]["tokens_per_s"])
    text = json.dumps(report, indent=1, default=float)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
