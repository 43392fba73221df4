"""Benchmark: what following a training run live costs per checkpoint, measured on nano, projected at paper sizes.

1. **Measured, live.** This process trains the nano suite (:func:`~saetrack.data.suite.train_suite`) and hands each
   checkpoint to ``saetrack watch`` through :class:`~saetrack.live.observe.Observer` as it is saved, so the watcher
   runs beside the training, in its own process, at its default settings (the preset's budgets, the penalty calibrated
   to the default target L0). Measured: the seconds each ``observe`` call blocked training (a checkpoint folder linked
   in), the same for ``observe(model)`` (``save_pretrained`` of a nano model into the folder), and the watcher's own
   record of each link (:mod:`saetrack.live.costs`: wall seconds, trained and forwarded tokens, peak memory).
2. **Live equals offline** (``--offline``): the chain of the watched run's final config (``run_config.json``), trained
   offline in another folder by the pipeline's own stages; every link's ``sae_weights.safetensors`` compared byte for
   byte with the watched one.
3. **Projected**: per later link (one new checkpoint), the planner's cost model (:mod:`saetrack.planning`: ``12 d F``
   FLOPs per trained token, ``24 d^2`` per forwarded token and block before the hook) for nano and for the paper
   presets at their budgets: tokens, TFLOP, the device memory bound of training one link
   (:func:`~saetrack.planning.common.sae_training_device_bytes`), and the seconds those FLOPs take at this device's
   measured matmul rates (:func:`~saetrack.rates.measure_rates`). That is a floor: each link also loads its
   checkpoint, evaluates on held-out tokens and computes the drift readings, fixed costs that nano's measured time
   shows beside its floor (the ratio printed) and that paper-size FLOPs dwarf. A paper-size link on a GPU is measured
   by ``benchmarks/gpu_check.py`` (its ``streamed_link``); here ``--device cuda --skip-live`` prints the floor.

Run::

    python benchmarks/bench_watch_cost.py --work runs/watch-cost --offline    # about 40 minutes on 2 CPU cores
    python benchmarks/bench_watch_cost.py --work runs/watch-cost --skip-live --device cuda   # the floor, on a GPU
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from saetrack import paths
from saetrack.config import get_preset
from saetrack.config.run import RunConfig
from saetrack.data.checkpoints import LocalSuite
from saetrack.data.corpus import prepare_corpus
from saetrack.data.suite import train_suite
from saetrack.live.costs import read_costs
from saetrack.live.follow import RUN_CONFIG_FILE
from saetrack.live.observe import Observer
from saetrack.planning.common import plan_inputs, sae_training_device_bytes
from saetrack.rates import measure_rates
from saetrack.stages.cache import cache_activations
from saetrack.stages.chain import train_chain

#: The paper presets projected (the scale study's three sizes at their layers and budgets).
PAPER_PRESETS = ("pythia-160m-l4", "pythia-410m-l4", "pythia-1.4b-l3")


def watch_live(preset: str, work: Path, device: str) -> dict[str, Any]:
    """Train the suite of ``preset`` in this process while a watcher follows it (module doc, 1); return what was
    measured."""
    run, train_dir, folder, watched = get_preset(preset), work / "train", work / "checkpoints", work / "watched"
    prepare_corpus(run, train_dir, progress=False)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(train_dir / paths.CORPUS_DIR / paths.TOKENIZER_DIR, folder / "tokenizer", dirs_exist_ok=True)
    observer = Observer(folder, ["--preset", preset, "--run-dir", str(watched), "--settle", "1", "--poll", "1",
                                 "--device", device])  # fmt: skip
    started = time.perf_counter()

    def hand_over(step: int, record: dict[str, Any]) -> None:
        if not (folder / paths.step_dir_name(step)).exists():  # a resumed benchmark re-announces old checkpoints
            observer.observe(train_dir / paths.MODEL_DIR / paths.step_dir_name(step), step)

    train_suite(run, train_dir, progress=False, on_checkpoint=hand_over)
    trained = time.perf_counter()
    code = observer.finish(wait=True)
    if code not in (0, None):
        raise SystemExit(f"saetrack watch exited with {code}; see {folder / 'watch.log'}")
    return {"training_s": trained - started, "watcher_after_training_s": time.perf_counter() - trained,
            "observe_path_s": observer.seconds, "observe_model_s": observe_model_seconds(train_dir, work),
            "costs": read_costs(watched / "live")}  # fmt: skip


def observe_model_seconds(train_dir: Path, work: Path, repeats: int = 5) -> list[float]:
    """Seconds of ``Observer.observe(model)`` (``save_pretrained`` into the folder) for the suite's last model."""
    suite = LocalSuite(train_dir / paths.MODEL_DIR)
    model = suite.load_hf(suite.steps[-1])
    observer = Observer(work / "observe_model", watch=False)
    return [observer.observe(model, step) for step in range(repeats)]


def offline_equals_live(work: Path) -> tuple[int, int]:
    """Train the watched run's final config offline; return (links byte-identical, links)."""
    run = RunConfig.from_dict(json.loads((work / "watched" / RUN_CONFIG_FILE).read_text()))
    offline = work / "offline"
    prepare_corpus(run, offline, progress=False)
    cache_activations(run, offline, progress=False)
    train_chain(run, offline, progress=False)
    same = 0
    for step in run.sae_steps:
        name = Path(paths.CHAIN_DIR) / paths.step_dir_name(step) / "sae_weights.safetensors"
        same += (work / "watched" / name).read_bytes() == (offline / name).read_bytes()
    return same, len(run.sae_steps)


def later_link_model(run: RunConfig, rates: Any) -> dict[str, float]:
    """The planner's cost of one later link of ``run`` (module doc, 3): tokens, FLOPs, seconds, device bytes."""
    inputs = plan_inputs(run, rates)
    sae_tokens = run.chain.link_tokens
    forward_tokens = sae_tokens + inputs.context_tokens("heldout")
    sae_flops = 12 * inputs.d_model * inputs.d_sae * sae_tokens
    forward_flops = 2 * 12 * inputs.d_model**2 * max(run.cache.layer, 1) * forward_tokens
    return {"sae_tokens": sae_tokens, "forward_tokens": forward_tokens, "tflop": (sae_flops + forward_flops) / 1e12,
            "seconds": sae_tokens * inputs.sae_step_seconds + forward_tokens * inputs.forward_seconds,
            "device_gib": sae_training_device_bytes(inputs) / 2**30}  # fmt: skip


def report(preset: str, measured: dict[str, Any] | None, device: str) -> dict[str, Any]:
    """Print the measured costs and the projection; return them as a dict."""
    rates = measure_rates(device)
    nano_model = later_link_model(get_preset(preset).with_overrides({"cache.mode": "streamed"}), rates)
    result: dict[str, Any] = {"device": device, "rates_tflops": [rates.sae_flops / 1e12, rates.forward_flops / 1e12]}
    if measured is not None:
        costs = measured["costs"]
        later = [costs[s]["seconds"] for s in sorted(costs)[1:]]
        median, first, last = statistics.median(later), costs[min(costs)], costs[max(costs)]
        factor = median / nano_model["seconds"]
        peak = max(c["peak_host_bytes"] for c in costs.values()) / 2**30
        blocked_path = statistics.median(measured["observe_path_s"]) * 1e3
        blocked_model = statistics.median(measured["observe_model_s"]) * 1e3
        print(f"{preset}, watched live ({len(costs)} links): later link median {median:.1f} s (min {min(later):.1f}, "
              f"max {max(later):.1f}); first link, calibration included, {first['seconds']:.0f} s; watcher peak host "
              f"memory {peak:.2f} GiB")  # fmt: skip
        print(f"  per later link: {last['sae_tokens']:,} tokens trained, {last['forward_tokens']:,} forwarded")
        print(f"  training blocked per checkpoint: observe(folder) median {blocked_path:.1f} ms, observe(model) "
              f"median {blocked_model:.1f} ms; suite trained in {measured['training_s']:.0f} s, watcher done "
              f"{measured['watcher_after_training_s']:.0f} s later")  # fmt: skip
        print(f"  the FLOP model's floor: {nano_model['seconds']:.2f} s per later link; measured median / floor = "
              f"{factor:.1f} (the last link, after the training ended: {last['seconds']:.1f} s)")  # fmt: skip
        result.update(measured=measured, later_median_s=median, model_factor=factor, peak_host_gib=peak)
    print(
        f"\nper later link, the FLOP model at {device}'s measured rates ({rates.sae_flops / 1e12:.2f} / "
        f"{rates.forward_flops / 1e12:.2f} TFLOP/s at an SAE step's / a forward's shape): a floor, fixed costs aside"
    )
    print(f"{'preset':<16} {'trained tokens':>14} {'forwarded':>11} {'TFLOP':>8} {'device GiB':>10} {'FLOP s':>9}")
    projected = {}
    for name in (preset, *PAPER_PRESETS):
        row = later_link_model(get_preset(name).with_overrides({"cache.mode": "streamed"}), rates)
        projected[name] = row
        print(f"{name:<16} {row['sae_tokens']:>14,} {row['forward_tokens']:>11,} {row['tflop']:>8.1f} "
              f"{row['device_gib']:>10.2f} {row['seconds']:>9.1f}")  # fmt: skip
    result["projected"] = projected
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="folder for the training run, watch and offline run")
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--offline", action="store_true", help="also check live == offline, byte for byte")
    parser.add_argument("--skip-live", action="store_true", help="only the projection (no training run)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    measured = None if args.skip_live else watch_live(args.preset, args.work, args.device)
    result = report(args.preset, measured, args.device)
    if args.offline and measured is not None:
        same, total = offline_equals_live(args.work)
        print(f"\nlive == offline: {same}/{total} links byte-identical (sae_weights.safetensors)")
        result["live_equals_offline"] = [same, total]
    (args.work / "watch_cost.json").write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
