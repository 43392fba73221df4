"""Several layers from one forward (``cache.layers``) against one single-layer run per layer, the same work.

    python benchmarks/bench_layers.py                          # nano's model, layers 1, 2, 3; and the smoke cache stage
    python benchmarks/bench_layers.py --preset nano --layers 1 3 --contexts 512 --repeats 7
    python benchmarks/bench_layers.py --suite-dir runs/nano --links 3   # part 3 on nano's trained suite
    python benchmarks/bench_layers.py --device cuda --skip-stage --skip-links

1. **The forward.** The preset's model (its suite's GPT-NeoX shape, random weights: the compute is the same) on
   ``--contexts`` contexts in the cache's batches: every layer's activations from one forward per batch
   (:func:`~saetrack.data.forward.layered_chunks`) against each layer's own pass stopped at its layer
   (:func:`~saetrack.data.forward.residual_chunks`, what a single-layer run does), checked equal first. The two
   alternate (A B A B ...) so noise on a shared machine hits both alike; the ratio printed is the median of the
   per-round ratios. Expected: L single-layer passes cost ``sum(l_i)`` blocks, one forward ``max(l_i)`` blocks.
2. **The cache stage** (``--skip-stage`` leaves it out): the smoke preset's activation cache of every layer of the
   smoke model, built together (:func:`~saetrack.stages.cache.layers.cache_layers`: one model load and one forward
   per checkpoint and batch) against one single-layer cache per layer (:func:`~saetrack.stages.cache.
   cache_activations`), alternating, same checkpoints and tokens; it includes loading checkpoints and writing the
   caches, which do not shrink with the shared forward.

3. **Streamed links** (``--skip-links`` leaves it out): the chains of a streamed run of every layer trained side by
   side from one forward per batch (:func:`~saetrack.stages.chain.lockstep.train_layers_in_lockstep`) against each
   layer's own streamed chain trained after the other (:func:`~saetrack.stages.chain.train_chain`), alternating,
   the weights checked equal. ``--suite-dir`` names a run directory holding a trained nano suite (its ``corpus/``
   and ``model/``, e.g. ``runs/nano``): nano's first ``--links`` links at its budgets, no baselines; without it,
   the smoke suite is trained here and its whole chain is used.

Tokens/s counts layer-tokens (tokens x layers), the work both ways deliver. ``--out FILE`` writes the numbers (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saetrack import paths
from saetrack.config import get_preset
from saetrack.data.corpus import prepare_corpus
from saetrack.data.forward import layered_chunks, residual_chunks
from saetrack.data.hf_convert import hooked_from_hf
from saetrack.data.nanolm import build_model
from saetrack.data.suite import train_suite
from saetrack.pipeline.layers import prepare_layers
from saetrack.stages.cache import cache_activations
from saetrack.stages.cache.layers import cache_layers
from saetrack.stages.chain import train_chain
from saetrack.stages.chain.lockstep import train_layers_in_lockstep


def _alternate(first: Any, second: Any, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds of ``first()`` and ``second()`` over ``repeats`` alternating rounds."""
    a, b = [], []
    for _ in range(repeats):
        for times, fn in ((a, first), (b, second)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return a, b


def bench_forward(preset: str, layers: list[int], contexts: int, repeats: int, device: str) -> dict[str, Any]:
    """Part 1 (module doc): tokens/s of one forward for every layer against one pass per layer."""
    run = get_preset(preset)
    assert run.suite is not None and run.corpus is not None, "a preset with a nano suite (its model's shape)"
    model = hooked_from_hf(build_model(run.suite, run.corpus.vocab_size, 0)).to(device).eval()
    tokens = np.random.default_rng(0).integers(0, run.corpus.vocab_size, (contexts, run.cache.context_length))
    options = dict(batch_contexts=run.cache.batch_contexts, device=device)

    def shared() -> list[list[torch.Tensor]]:
        return list(layered_chunks(model, tokens, layers, **options))

    def separate() -> list[list[torch.Tensor]]:
        return [list(residual_chunks(model, tokens, layer, **options)) for layer in layers]

    together, alone = shared(), separate()
    for index in range(len(layers)):
        assert all(torch.equal(s[index], a) for s, a in zip(together, alone[index], strict=True))
    one, each = _alternate(shared, separate, repeats)
    work = contexts * run.cache.context_length * len(layers)
    ratios = [e / o for o, e in zip(one, each, strict=True)]
    return {
        "model": f"{run.suite.n_layers} layers, d_model {run.suite.d_model} ({preset}'s suite shape, random weights)",
        "layers": layers,
        "layer_tokens": work,
        "one_forward_tokens_per_s": work / min(one),
        "one_pass_per_layer_tokens_per_s": work / min(each),
        "ratio_median": statistics.median(ratios),
        "ratios": ratios,
        "expected_from_blocks": sum(max(layer, 1) for layer in layers) / max(max(layers), 1),
    }


def bench_stage(repeats: int) -> dict[str, Any]:
    """Part 2 (module doc): the smoke cache stage for every layer, built together against one per layer."""
    run = get_preset("smoke")
    layers = list(range(run.model.n_layers or 0))
    multi = run.with_overrides({"cache.layers": layers})
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare_corpus(run, work, progress=False)
        train_suite(run, work, progress=False)
        prepare_layers(multi, work)
        singles = {r.cache.layer: work / "alone" / str(r.cache.layer) for r in multi.layer_runs()}
        for layer_run in multi.layer_runs():
            for folder in ("corpus", "model"):
                shutil.copytree(work / folder, singles[layer_run.cache.layer] / folder, dirs_exist_ok=True)

        def together() -> None:
            cache_layers(multi, work, force=True, progress=False)

        def apart() -> None:
            for layer_run in multi.layer_runs():
                cache_activations(layer_run, singles[layer_run.cache.layer], force=True, progress=False)

        one, each = _alternate(together, apart, repeats)
    work_tokens = sum(
        len(run.sae_steps) * (run.cache.analysis_contexts * run.cache.context_length + run.cache.heldout_tokens)
        for _ in layers
    )
    return {
        "preset": "smoke",
        "layers": layers,
        "checkpoints": len(run.sae_steps),
        "seconds_together": min(one),
        "seconds_one_per_layer": min(each),
        "ratio_median": statistics.median(e / o for o, e in zip(one, each, strict=True)),
        "analysis_and_heldout_layer_tokens": work_tokens,
    }


def _links_run(suite_dir: Path | None, links: int, layers: list[int] | None) -> tuple[Any, Path | None]:
    """The streamed several-layer config of part 3 and the folder lending its corpus and model (``None``: train the
    smoke suite)."""
    if suite_dir is None:
        run = get_preset("smoke")
        return run.with_overrides({"cache.mode": "streamed", "cache.layers": layers or [0, 1]}), None
    run = get_preset("nano")
    chosen = layers or list(range(1, run.model.n_layers or 0))
    overrides = {"cache.mode": "streamed", "cache.layers": chosen, "chain.schedule": list(range(links)),
                 "chain.baseline": []}  # fmt: skip
    return run.with_overrides(overrides), suite_dir


def bench_links(suite_dir: Path | None, links: int, layers: list[int] | None, repeats: int) -> dict[str, Any]:
    """Part 3 (module doc): streamed chains of every layer side by side against one after the other."""
    multi, lender = _links_run(suite_dir, links, layers)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if lender is None:
            prepare_corpus(multi, work, progress=False)
            train_suite(multi, work, progress=False)
        else:
            for folder in ("corpus", "model"):
                shutil.copytree(lender / folder, work / folder, copy_function=os.link)
        prepare_layers(multi, work)
        cache_layers(multi, work, progress=False)
        apart_dirs = {}
        for layer_run in multi.layer_runs():
            folder = apart_dirs[layer_run.cache.layer] = work / "apart" / str(layer_run.cache.layer)
            for name in ("corpus", "model"):
                shutil.copytree(work / name, folder / name, copy_function=os.link)
            cache_activations(layer_run, folder, progress=False)
        shared: dict[str, Any] = {}

        def together() -> None:
            shared.update(train_layers_in_lockstep(multi, work, force=True, log=lambda _: None))

        def apart() -> None:
            for layer_run in multi.layer_runs():
                train_chain(layer_run, apart_dirs[layer_run.cache.layer], force=True, progress=False)

        one, each = _alternate(together, apart, repeats)
        for layer_run in multi.layer_runs():
            name = paths.layer_dir_name(layer_run.cache.layer)
            for step in layer_run.sae_steps:
                link = Path(paths.CHAIN_DIR) / paths.step_dir_name(step) / "sae_weights.safetensors"
                same = (work / name / link).read_bytes() == (apart_dirs[layer_run.cache.layer] / link).read_bytes()
                assert same, f"layer {layer_run.cache.layer} step {step}: the side-by-side link differs"
    tokens = sum(multi.chain.tokens_for(p) for p in range(len(multi.sae_steps))) * len(multi.cache.layers)
    return {
        "preset": multi.preset,
        "layers": list(multi.cache.layers),
        "links": len(multi.sae_steps),
        "sae_layer_tokens": tokens,
        "side_by_side_tokens_per_s": tokens / min(one),
        "one_after_another_tokens_per_s": tokens / min(each),
        "ratio_median": statistics.median(e / o for o, e in zip(one, each, strict=True)),
        "shared_forward_batches": shared.get("forwards"),
        "requests_alone": shared.get("alone"),
    }


def main() -> int:
    """Run the benchmark and print its ratios (module doc)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--layers", type=int, nargs="+", default=None, help="default: every block after the first")
    parser.add_argument("--contexts", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-stage", action="store_true", help="leave out the smoke cache stage (part 2)")
    parser.add_argument("--skip-links", action="store_true", help="leave out the streamed links (part 3)")
    parser.add_argument("--suite-dir", type=Path, default=None, help="a run directory with nano's corpus/ and model/")
    parser.add_argument("--links", type=int, default=3, help="nano links of part 3 (with --suite-dir)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    n_layers = get_preset(args.preset).model.n_layers or 0
    layers = args.layers or list(range(1, n_layers))
    result: dict[str, Any] = {"threads": torch.get_num_threads(), "device": args.device}
    result["forward"] = forward = bench_forward(args.preset, layers, args.contexts, args.repeats, args.device)
    print(f"forward: {forward['model']}, layers {layers}, {forward['layer_tokens']:,} layer-tokens a round")
    print(f"  one forward for every layer: {forward['one_forward_tokens_per_s']:,.0f} layer-tokens/s")
    print(f"  one pass per layer:          {forward['one_pass_per_layer_tokens_per_s']:,.0f} layer-tokens/s")
    print(f"  ratio (median of {args.repeats} rounds): {forward['ratio_median']:.2f}  "
          f"(blocks run, separate / shared: {forward['expected_from_blocks']:.2f})")  # fmt: skip
    if not args.skip_stage:
        result["stage"] = stage = bench_stage(max(2, args.repeats // 2))
        print(f"cache stage (smoke, layers {stage['layers']}, {stage['checkpoints']} checkpoints): "
              f"{stage['seconds_together']:.1f} s together, {stage['seconds_one_per_layer']:.1f} s one per layer, "
              f"ratio {stage['ratio_median']:.2f}")  # fmt: skip
    if not args.skip_links:
        result["links"] = links = bench_links(args.suite_dir, args.links, args.layers, max(2, args.repeats // 2))
        print(f"streamed links ({links['preset']}, layers {links['layers']}, {links['links']} links, "
              f"{links['sae_layer_tokens']:,} layer-tokens): side by side "
              f"{links['side_by_side_tokens_per_s']:,.0f} tokens/s, one after another "
              f"{links['one_after_another_tokens_per_s']:,.0f}, ratio {links['ratio_median']:.2f} "
              f"(weights equal; {links['shared_forward_batches']:,} shared forward batches)")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
