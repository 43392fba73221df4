"""Benchmark: should the crosscoder's input be cached or recomputed each epoch, and how does its step grow with T?

Measured side by side in one run, per token of the crosscoder's training set, on nano-size models:

1. ``forward``: the forward of all ``T`` checkpoints up to the hook (``saetrack.data.forward.residual_chunks``,
   as :mod:`saetrack.crosscoder.activations` runs it), for ``T`` up to the largest asked;
2. ``write`` / ``read``: writing those activations column by column into a ``.npy`` memmap ``[N, T, d]`` (as the
   stage does) and reading it back in shuffled batches of ``batch`` rows (as training does, one epoch). The file
   was just written, so it is read from the page cache - as nano's 2 GB cache is on a machine with the memory;
3. ``step``: one crosscoder training step (``Crosscoder.loss`` + backward + Adam) at ``T`` in ``--snapshots`` with
   ``d_sae = expansion x d_model``, per token of its batch, and its ratio to the smallest ``T``. Two steps are timed
   alternately on the same machine, each on a crosscoder whose JumpReLU code has ``--l0`` active features per
   token (nano's 43 by default; thresholds set to the matching quantile): the *dense* step (autograd over full
   matrices, Adam's per-parameter loop - the step before issue 20) and the *sparse* step training now runs
   (:mod:`saetrack.crosscoder.sparse`, fused Adam), with their ratio, in wall time and in the process's CPU time
   (which other load on a shared machine does not inflate). ``--step-only`` skips the input part.

Then, for ``epochs`` in ``--epochs``: the input's cost *cached* (forward once + write + epochs x read) against *on
the fly* (epochs x forward), their ratio, and the step's cost for scale. Checkpoint loading is printed apart: on
the fly it is paid every epoch unless all ``T`` models stay in memory.

Models: ``T`` freshly initialised models of the preset's suite shape (``--preset``, default nano), or, with
``--run-dir`` pointing at a run with ``model/`` and ``corpus/``, its checkpoints at ``run.crosscoder_steps`` (those
present; reused in turn when fewer exist - a forward's cost does not depend on the weights) and its training
tokens. Timings are the best of ``--repeats``. Run::

    python benchmarks/bench_crosscoder.py                       # about a minute on 2 idle CPU cores
    python benchmarks/bench_crosscoder.py --run-dir runs/nano --contexts 64
    python benchmarks/bench_crosscoder.py --step-only --snapshots 23,28   # dense vs sparse step only
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from saetrack.config import RunConfig, get_preset
from saetrack.crosscoder.model import Crosscoder, CrosscoderShape
from saetrack.data.checkpoints import open_source
from saetrack.data.corpus import load_corpus
from saetrack.data.forward import residual_chunks
from saetrack.data.hf_convert import hooked_from_hf
from saetrack.data.nanolm import build_model
from saetrack.data.tokens import contexts


def best_of(repeats: int, fn: Callable[[], Any]) -> float:
    """Best wall time of ``repeats`` calls of ``fn`` (seconds)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def load_models(run: RunConfig, run_dir: Path | None, n: int, seed: int) -> tuple[list[Any], float, str]:
    """``n`` hooked models (checkpoints of ``run_dir`` or fresh ones), seconds per load, and where they came from."""
    if run_dir is None:
        assert run.suite is not None and run.corpus is not None
        t0 = time.perf_counter()
        models = [hooked_from_hf(build_model(run.suite, run.corpus.vocab_size, seed + i)) for i in range(n)]
        return models, (time.perf_counter() - t0) / n, f"{n} fresh {run.preset}-shaped models (built, not loaded)"
    source = open_source(run.model, run_dir)
    present = [s for s in run.crosscoder_steps if (run_dir / "model" / f"step{s}").is_dir()]
    if not present:
        raise SystemExit(f"{run_dir}/model holds none of the checkpoints {run.crosscoder_steps}.")
    unique = present[:n]
    t0 = time.perf_counter()
    loaded = [source.load_hooked(step) for step in unique]
    per_load = (time.perf_counter() - t0) / len(unique)
    models = [loaded[i % len(loaded)] for i in range(n)]
    return models, per_load, f"checkpoints {unique} of {run_dir} ({len(unique)} distinct, reused in turn)"


def training_tokens(run: RunConfig, run_dir: Path | None, n_contexts: int, seed: int) -> np.ndarray:
    """``[n_contexts, ctx]`` tokens: the run's first training contexts, or uniform random ids."""
    ctx = run.cache.context_length
    if run_dir is not None:
        _, train, _ = load_corpus(run_dir)
        return contexts(train, 0, n_contexts, ctx)
    assert run.corpus is not None
    return np.random.default_rng(seed).integers(0, run.corpus.vocab_size, (n_contexts, ctx))


def bench_input(run: RunConfig, models: list[Any], tokens: np.ndarray, batch: int, repeats: int) -> dict[str, float]:
    """Seconds per token of the forward of all models, of writing ``[N, T, d]`` and of reading it back (one epoch)."""
    layer, n_rows = run.cache.layer, tokens.size
    d_model = int(models[0].cfg.d_model)
    columns: list[np.ndarray] = []

    def forward_all() -> None:
        columns.clear()
        for model in models:
            chunks = residual_chunks(model, tokens, layer, batch_contexts=run.cache.batch_contexts, device="cpu")
            columns.append(np.concatenate([chunk.numpy() for chunk in chunks]))

    fwd = best_of(repeats, forward_all)
    with tempfile.TemporaryDirectory(prefix="bench-crosscoder-") as tmp:
        path = Path(tmp) / "train.npy"

        def write() -> None:
            out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n_rows, len(models), d_model))
            for column, values in enumerate(columns):  # one snapshot's column at a time, as the stage writes
                out[:, column] = values
            out.flush()
            del out

        t_write = best_of(repeats, write)
        data = np.load(path, mmap_mode="r")
        order = np.random.default_rng(0).permutation(n_rows)
        rows_read = (n_rows // batch) * batch

        def read() -> None:
            for start in range(0, rows_read, batch):
                torch.from_numpy(np.asarray(data[np.sort(order[start : start + batch])], dtype=np.float32))

        t_read = best_of(repeats, read)
    return {"forward": fwd / n_rows, "write": t_write / n_rows, "read": t_read / rows_read}


def _step_model(n_snapshots: int, d_model: int, d_sae: int, batch: int, l0: float, seed: int) -> tuple[Any, Any]:
    """A crosscoder and a batch whose JumpReLU code has about ``l0`` active features per token (thresholds set to
    the matching quantile of the pre-activations, as a trained crosscoder's code is sparse)."""
    generator = torch.Generator().manual_seed(seed)
    model = Crosscoder(CrosscoderShape(n_snapshots, d_model, d_sae), generator=generator)
    x = torch.randn(batch, n_snapshots, d_model, generator=generator) / d_model**0.5
    with torch.no_grad():
        pre = model.pre_activation(x[: min(batch, 256)])
        model.log_threshold.fill_(float(torch.quantile(pre.flatten(), 1 - l0 / d_sae).clamp(min=1e-4).log()))
    return model, x


def _step(model: Any, x: torch.Tensor, sparse: bool) -> Callable[[], None]:
    """One training step of ``model`` on ``x``: the sparse step training runs (:mod:`saetrack.crosscoder.sparse`,
    fused Adam), or the dense autograd step with Adam's per-parameter loop (the step before the sparse one)."""
    optimizer = (
        torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
        if sparse
        else torch.optim.Adam(model.parameters(), lr=1e-3)
    )
    d_sae = model.shape.d_sae
    dead = torch.zeros(d_sae, dtype=torch.bool)
    dead[: d_sae // 50] = True  # a few dead features get the pre-activation loss, as in training

    def step() -> None:
        out = model.loss(x, 1.0, 0.05, pre_act_coefficient=0.1, dead=dead, sparse=sparse)
        optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        optimizer.step()

    step()  # warm-up (Adam's state)
    return step


def bench_steps(
    n_snapshots: int, d_model: int, d_sae: int, batch: int, repeats: int, seed: int, l0: float
) -> dict[str, float]:
    """Seconds per token of one training step (loss, backward, Adam) at ``T = n_snapshots``, dense and sparse,
    timed alternately (best of ``repeats`` each) so both see the same machine: wall time, and the process's CPU time
    (all threads), which other processes on a shared machine do not inflate; and the code's L0."""
    dense_model, x = _step_model(n_snapshots, d_model, d_sae, batch, l0, seed)
    sparse_model, _ = _step_model(n_snapshots, d_model, d_sae, batch, l0, seed)
    with torch.no_grad():
        measured = float((sparse_model.encode(x) > 0).float().sum(1).mean())
    steps = {"dense": _step(dense_model, x, False), "sparse": _step(sparse_model, x, True)}
    best = {f"{name}{kind}": float("inf") for name in steps for kind in ("", "_cpu")}
    for _ in range(repeats):
        for name, step in steps.items():
            wall, cpu = time.perf_counter(), time.process_time()
            step()
            best[name] = min(best[name], time.perf_counter() - wall)
            best[f"{name}_cpu"] = min(best[f"{name}_cpu"], time.process_time() - cpu)
    return {name: value / batch for name, value in best.items()} | {"l0": measured}


def report(costs: dict[str, float], steps: dict[int, float], n_max: int, epochs: list[int], per_load: float) -> None:
    """Print cached vs on-the-fly input cost per token for each T and epoch count, and the step's growth with T."""
    us = 1e6
    fwd_one = costs["forward"] / n_max  # one checkpoint's forward per token
    t_first = min(steps)
    print(f"\nper token, microseconds (forward of one checkpoint: {fwd_one * us:.2f}; load: {per_load:.2f} s/model)")
    print(
        f"{'T':>4} {'epochs':>6} {'cached':>9} {'on the fly':>11} {'fly/cached':>11} {'steps':>9} "
        f"{'step/T=' + str(t_first):>9}"
    )
    for t, step in sorted(steps.items()):
        scale = t / n_max  # write and read scale with the row width T x d
        for e in epochs:
            cached = t * fwd_one + costs["write"] * scale + e * costs["read"] * scale
            on_the_fly = e * t * fwd_one
            print(
                f"{t:>4} {e:>6} {cached * us:>9.2f} {on_the_fly * us:>11.2f} {on_the_fly / cached:>11.2f} "
                f"{e * step * us:>9.2f} {step / steps[t_first]:>9.2f}"
            )
    print(
        "cached = T forwards + write + epochs x read; on the fly = epochs x T forwards (models kept in memory; "
        "reloading them each epoch adds T loads per epoch); steps = epochs x one training step"
    )


def main() -> None:
    """Parse arguments, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--run-dir", type=Path, default=None, help="a run with model/ and corpus/ (else synthetic)")
    parser.add_argument("--snapshots", default="7,14,28", help="values of T, comma-separated")
    parser.add_argument("--epochs", default="1,3", help="epoch counts compared, comma-separated")
    parser.add_argument("--contexts", type=int, default=32, help="contexts N of the timed input (x context length)")
    parser.add_argument("--expansion", type=int, default=8, help="d_sae = expansion x d_model")
    parser.add_argument("--batch", type=int, default=None, help="tokens per step (default: the preset's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--l0", type=float, default=43.0, help="active features per token of the timed step (nano's)")
    parser.add_argument("--step-only", action="store_true", help="time only the training step, dense vs sparse")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = get_preset(args.preset)
    snapshots = sorted(int(t) for t in args.snapshots.split(","))
    epochs = [int(e) for e in args.epochs.split(",")]
    batch = args.batch or run.crosscoder.batch_size
    models, per_load, origin = load_models(run, args.run_dir, snapshots[-1], args.seed)
    tokens = training_tokens(run, args.run_dir, args.contexts, args.seed)
    d_model = int(models[0].cfg.d_model)
    print(
        f"crosscoder input and step, {origin}; hook {run.cache.hook_name}; {tokens.size:,} tokens; d_model {d_model}, "
        f"d_sae {args.expansion * d_model}, batch {batch}; {torch.get_num_threads()} threads; best of {args.repeats}"
    )
    if not args.step_only:
        costs = bench_input(run, models, tokens, min(batch, tokens.size), args.repeats)
        print(
            f"T = {snapshots[-1]}: forward of all checkpoints {costs['forward'] * 1e6:.2f} us/token, write "
            f"{costs['write'] * 1e6:.2f} us/token, read one epoch {costs['read'] * 1e6:.2f} us/token"
        )
    timed = {
        t: bench_steps(t, d_model, args.expansion * d_model, batch, args.repeats, args.seed, args.l0) for t in snapshots
    }
    print(f"\ntraining step per token, microseconds (code L0 about {args.l0:g}; timed alternately, best of each):")
    print(
        f"{'T':>4} {'L0':>6} {'dense':>9} {'sparse':>9} {'ratio':>6} {'dense CPU':>10} {'sparse CPU':>11} {'ratio':>6}"
    )
    for t, row in timed.items():
        print(
            f"{t:>4} {row['l0']:>6.1f} {row['dense'] * 1e6:>9.2f} {row['sparse'] * 1e6:>9.2f} "
            f"{row['dense'] / row['sparse']:>6.2f} {row['dense_cpu'] * 1e6:>10.2f} {row['sparse_cpu'] * 1e6:>11.2f} "
            f"{row['dense_cpu'] / row['sparse_cpu']:>6.2f}"
        )
    if not args.step_only:
        report(costs, {t: row["sparse"] for t, row in timed.items()}, snapshots[-1], epochs, per_load)


if __name__ == "__main__":
    main()
