"""A run's computations without its notebooks: notebooks 01-04's stage functions, no figures (the seed study; a
torchrun job's inputs, :func:`prepare_inputs`).

The seed study of notebook 05 (:mod:`saetrack.stages.scale.seeds`) needs the numbers of several runs that differ only
in a seed or the warm-up, not their figures, so each of them runs here: corpus, model suite, activation cache, chain
(and baselines when the config has any), formation and drift - the same functions the notebooks call, skipped when
current and resumed when interrupted like every stage. :func:`adopt` first hard-links the finished corpus and model
suite of a sibling run whose config hashes match, so runs on one model train it once.

``python -m saetrack.pipeline.headless --config FILE --run-dir DIR [--adopt DIR ...] [--device DEVICE]`` runs one
(what :mod:`saetrack.pipeline.parallel` starts for each variant).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from saetrack import paths
from saetrack.config.run import RunConfig
from saetrack.data import corpus, suite
from saetrack.pipeline.skeleton import current_manifest
from saetrack.stages import cache, chain, drift, formation

__all__ = [
    "adopt",
    "adoptable_hashes",
    "input_steps",
    "main",
    "prepare_inputs",
    "run_headless",
]


def adoptable_hashes(run: RunConfig) -> dict[str, str]:
    """The stage folders another run directory may lend this run, with the config hash each must carry: the corpus
    and (nano suites) the model suite - the expensive parts a seed variant can share."""
    hashes = {paths.CORPUS_DIR: corpus.corpus_config_hash(run)}
    if run.model.source == "suite":
        hashes[paths.MODEL_DIR] = suite.suite_config_hash(run)
    return hashes


def adopt(run: RunConfig, run_dir: Path, sources: Sequence[Path]) -> list[str]:
    """Hard-link every folder of :func:`adoptable_hashes` that ``run_dir`` lacks (or holds stale) from the first of
    ``sources`` where it is finished with the same hash; return the folders adopted. Hard links cost no disk and the
    stages never write into a finished folder (they rebuild into a temporary one and rename), so sharing is safe."""
    adopted = []
    for folder, digest in adoptable_hashes(run).items():
        target = Path(run_dir) / folder
        if current_manifest(target, digest) is not None:
            continue
        for source in sources:
            origin = Path(source) / folder
            if current_manifest(origin, digest) is not None:
                shutil.rmtree(target, ignore_errors=True)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copytree(origin, target, copy_function=os.link)
                adopted.append(folder)
                break
    return adopted


def input_steps(
    run: RunConfig, run_dir: Path, *, device: str = "cpu", progress: bool = False, force: bool = False
) -> tuple[tuple[str, Callable[[], object]], ...]:
    """Notebook 01's computations for ``run`` in ``run_dir`` as named steps, each skipped when current: the corpus
    (its training tokens unless a chain was installed from the Hub), the nano model suite (``model.source="suite"``)
    and the activation cache (rebuilt with ``force``)."""
    training_tokens = not chain.chain_installed(run, run_dir)
    return (
        ("corpus", lambda: corpus.prepare_corpus(run, run_dir, progress=progress, training_tokens=training_tokens)),
        ("model", lambda: suite.train_suite(run, run_dir, progress=progress) if run.model.source == "suite" else None),
        ("cache", lambda: cache.cache_activations(run, run_dir, device=device, progress=progress, force=force)),
    )


def prepare_inputs(
    run: RunConfig, run_dir: Path, *, device: str = "cpu", progress: bool = False, force: bool = False
) -> None:
    """Run the steps of :func:`input_steps`: a run's corpus, model suite and activation cache."""
    for _, step in input_steps(run, run_dir, device=device, progress=progress, force=force):
        step()


def run_headless(run: RunConfig, run_dir: Path, *, device: str = "cpu", progress: bool = False) -> float:
    """Run the computations of notebooks 01-04 for ``run`` in ``run_dir`` (each stage skipped when current); return
    the seconds taken. Baselines and the comparison run only when the config has baseline checkpoints."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    steps = (
        *input_steps(run, run_dir, device=device, progress=progress),
        ("chain", lambda: chain.train_chain(run, run_dir, device=device, progress=progress)),
        ("baselines", lambda: chain.train_baselines(run, run_dir, device=device, progress=progress)),
        ("formation", lambda: formation.analyse_formation(run, run_dir, device=device, progress=progress)),
        ("drift", lambda: drift.analyse_drift(run, run_dir, device=device, progress=progress)),
    )
    for name, step in steps:
        t0 = time.perf_counter()
        step()
        print(f"[{run.preset}:{name}] done in {time.perf_counter() - t0:.1f} s", flush=True)
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of one headless run: ``--config`` (a JSON file of a validated run config), ``--run-dir``,
    ``--adopt`` (sibling run directories to lend finished folders) and ``--device``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="JSON file of the run config (RunConfig.to_dict())")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--adopt", nargs="*", default=[], help="run directories that may lend corpus and model")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    run = RunConfig.from_dict(json.loads(Path(args.config).read_text()))
    run_dir = Path(args.run_dir)
    adopted = adopt(run, run_dir, [Path(p) for p in args.adopt])
    if adopted:
        print(f"[{run.preset}] adopted {adopted} from {args.adopt}", flush=True)
    seconds = run_headless(run, run_dir, device=args.device)
    print(f"saetrack: headless run of {run.preset} in {run_dir} finished in {seconds:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
