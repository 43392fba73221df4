"""Regenerate every figure: run the numbered notebooks through papermill, in order, for one preset.

    python run_all.py                      # the embedded default preset (nano), offline on a CPU
    python run_all.py --preset smoke       # the whole pipeline at test size
    python run_all.py --only cache         # some stages only
    python run_all.py --force              # rebuild stages whose outputs are already current
    python run_all.py --rerun              # re-execute notebooks from finished outputs (regenerates figures)
    python run_all.py --set chain.l1_coefficient=1e-3   # override a config field (validated)

Stages whose manifests match the config are skipped (and say so); an interrupted run resumes.
Executed notebooks go to ``runs/<preset>/notebooks/``; figures to ``figures/<preset>/``.
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path
from typing import Any

from saetrack import paths
from saetrack.config import DEFAULT_PRESET, PRESETS, ConfigError, get_preset
from saetrack.notebooks import NotebookFailed, notebook_parameters, run_notebook
from saetrack.pipeline import STAGES
from saetrack.runtime import resolve_device


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r} is invalid: expected FIELD=VALUE, e.g. chain.l1_coefficient=1e-3.")
        try:
            overrides[key.strip()] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            overrides[key.strip()] = raw
    return overrides


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, validate the config, and run (or skip) each stage; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=DEFAULT_PRESET, help=f"one of {sorted(PRESETS)} (default: %(default)s)")
    stage_names = [s.name for s in STAGES]
    parser.add_argument("--only", nargs="+", metavar="STAGE", help=f"run only these stages: {stage_names}")
    parser.add_argument("--force", action="store_true", help="rebuild every stage's outputs, even current ones")
    parser.add_argument(
        "--rerun",
        action="store_true",
        help="execute the notebooks of current stages again without rebuilding their outputs (regenerates figures)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a config field by dotted name (repeatable)",
    )
    parser.add_argument("--device", default="auto", help="'cpu', 'cuda', 'cuda:1', or 'auto' (default)")
    parser.add_argument("--run-dir", default="", help="run directory (default: runs/<preset>)")
    args = parser.parse_args(argv)

    try:
        run = get_preset(args.preset, _parse_overrides(args.overrides))
        device = resolve_device(args.device)
    except (ConfigError, ValueError) as error:
        parser.error(str(error))
    unknown = sorted(set(args.only or []) - set(stage_names))
    if unknown:
        parser.error(f"--only {unknown} are not stages; stages: {stage_names}")

    run_dir = paths.run_dir(run.preset) if not args.run_dir else Path(args.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"saetrack: preset {run.preset} | device {device} | run directory {run_dir}", flush=True)
    total = time.perf_counter()
    for stage in STAGES:
        if args.only and stage.name not in args.only:
            continue
        if not (args.force or args.rerun) and stage.is_current(run, run_dir):
            print(f"[{stage.name}] up to date, nothing to do (outputs match the config)", flush=True)
            continue
        print(f"[{stage.name}] running {stage.notebook}: {stage.description} ...", flush=True)
        try:
            result = run_notebook(stage.notebook, notebook_parameters(run, run_dir, args.force, device), run_dir)
        except NotebookFailed as error:
            print(f"[{stage.name}] FAILED\n{error}", file=sys.stderr, flush=True)
            return 1
        print(f"[{stage.name}] done in {result.seconds:.1f} s -> {result.output}", flush=True)
    print(f"saetrack: finished in {time.perf_counter() - total:.1f} s; figures in {paths.figures_dir(run.preset)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
