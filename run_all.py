"""Regenerate every figure: run the numbered notebooks through papermill, in order, for one preset.

    python run_all.py                      # the embedded default preset (nano), offline on a CPU
    python run_all.py --preset smoke       # the whole pipeline at test size
    python run_all.py --only cache chain   # some stages only
    python run_all.py --force              # rebuild stages whose outputs are already current
    python run_all.py --rerun              # re-execute the notebooks from finished outputs (regenerates figures)
    python run_all.py --set chain.l1_coefficient=1e-3   # override a config field (validated)
    python run_all.py --quiet              # only the stage lines, not the notebooks' output and progress bars
    python run_all.py --preset pythia-410m-l4 --plan   # print the resource plan of the whole run and stop
    python run_all.py --push-to-hub me/saetrack-nano    # then push the trained chain to the Hub
    python run_all.py --preset pythia-410m-l4 --chain-from-hub me/chain --chain-revision <commit>
                                           # analyse a chain downloaded from the Hub instead of training one

Stages whose outputs match the config are skipped (and say so); an interrupted run resumes. While a stage runs, its
notebook's printed output and progress bars stream here, each line prefixed with ``  <preset>:<stage> | `` (on a
terminal the bars redraw in place; in a log file or a pipe a bar shows one line every few seconds). Executed
notebooks go to ``runs/<preset>/notebooks/``; figures to ``figures/<preset>/``. The Hub token comes from ``HF_TOKEN`` or
``hf auth login`` and is never printed or written anywhere.
"""

from __future__ import annotations

import argparse
import ast
import fcntl
import sys
import time
from pathlib import Path
from typing import IO, Any

from saetrack import ledger, paths, store
from saetrack.config import DEFAULT_PRESET, PRESETS, ConfigError, get_preset
from saetrack.ledger import render
from saetrack.notebooks import NotebookFailed
from saetrack.pipeline.stages import STAGES, last_executions, run_stages
from saetrack.publish import publish_run
from saetrack.resources import (
    ResourceError,
    check_fits,
    format_plan,
    machine_limits,
    measure_rates,
    plan_run,
    planned_for,
)
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


def _human_seconds(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _sync_readme(preset: str) -> None:
    """Regenerate the README's headline and the figure index from the default preset's published claims ledger (only
    when its figures go to the repository's own ``figures/`` folder)."""
    if preset != DEFAULT_PRESET or paths.figures_dir(preset) != paths.REPO_ROOT / "figures" / preset:
        return
    try:
        changed = render.sync(preset)
    except (KeyError, ValueError, OSError, store.StaleArtifactError) as error:
        print(f"saetrack: README ledger blocks not regenerated ({type(error).__name__}: {error})")
        return
    for path in changed:
        print(f"saetrack: regenerated the ledger block of {path.relative_to(paths.REPO_ROOT)} from the claims ledger")


def _lock_run_dir(run_dir: Path) -> IO[str] | None:
    """Hold an exclusive lock on ``run_dir/.lock`` for this process's lifetime; ``None`` if another process has it."""
    handle = (run_dir / ".lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _parser() -> argparse.ArgumentParser:
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
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="print only the stage lines, not each notebook's printed output and progress bars",
    )
    parser.add_argument("--device", default="auto", help="'cpu', 'cuda', 'cuda:1', or 'auto' (default)")
    parser.add_argument(
        "--plan", action="store_true", help="print the resource plan of the run (nothing is loaded or run) and stop"
    )
    parser.add_argument(
        "--ignore-resources",
        action="store_true",
        help="go on even when the resource plan says the run does not fit this machine",
    )
    parser.add_argument("--run-dir", default="", help="run directory (default: runs/<preset>)")
    hub = parser.add_argument_group("Hugging Face Hub")
    hub.add_argument("--push-to-hub", metavar="REPO", default="", help="push the finished chain to this repo")
    hub.add_argument("--hub-branch", default=None, help="branch to push to (default: main)")
    hub.add_argument("--hub-overwrite", action="store_true", help="replace files that already exist in the repo")
    hub.add_argument("--hub-public", action="store_true", help="create the repo public (default: private)")
    hub.add_argument("--chain-from-hub", metavar="REPO", default="", help="download this chain instead of training one")
    hub.add_argument("--chain-revision", default="", help="commit hash (40 hex) the downloaded chain is pinned to")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, validate the config, and run (or skip) each stage; return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        run = get_preset(args.preset, _parse_overrides(args.overrides))
        device = resolve_device(args.device)
    except (ConfigError, ValueError) as error:
        parser.error(str(error))
    stage_names = [s.name for s in STAGES]
    unknown = sorted(set(args.only or []) - set(stage_names))
    if unknown:
        parser.error(f"--only {unknown} are not stages; stages: {stage_names}")
    if run.model.source == "local" and not Path(run.model.local_path or "").expanduser().is_dir():
        parser.error(f"model.local_path = {run.model.local_path!r} is not a folder (it must hold the step{{N}}/ "
                     "checkpoints of model.source='local').")  # fmt: skip
    if bool(args.chain_from_hub) != bool(args.chain_revision):
        parser.error("--chain-from-hub REPO and --chain-revision COMMIT go together (a chain is loaded pinned).")

    run_dir = paths.run_dir(run.preset) if not args.run_dir else Path(args.run_dir).resolve()
    rates = measure_rates(device)
    limits = machine_limits(run_dir, device)
    stages = planned_for(plan_run(run, rates), args.only)  # only what this call will run is checked
    if args.plan:
        print(format_plan(run, stages, rates, limits))
        measured = last_executions(run, run_dir)
        if measured:
            print(f"measured in {run_dir} (each notebook's last execution; *: for another config):")
            print("  " + ", ".join(f"{name} {_human_seconds(s)}{'' if same else '*'}" for name, s, same in measured))
        return 0
    try:
        check_fits(stages, limits)
    except ResourceError as error:
        if not args.ignore_resources:
            print(f"saetrack: {error}\n{format_plan(run, stages, rates, limits)}", file=sys.stderr)
            return 2
        print(f"saetrack: warning (--ignore-resources): {error}", file=sys.stderr)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock_run_dir(run_dir)
    if lock is None:
        print(f"saetrack: another run_all.py is working on {run_dir}; wait for it to finish.", file=sys.stderr)
        return 2
    print(f"saetrack: preset {run.preset} | device {device} | run directory {run_dir}", flush=True)
    started = time.perf_counter()
    skip: tuple[str, ...] = ()
    if args.chain_from_hub:
        from saetrack import hub

        try:
            folders = hub.load_hub_chain(args.chain_from_hub, args.chain_revision, run_dir, run)
        except (ValueError, OSError, store.StaleArtifactError) as error:  # one message, no traceback
            print(
                f"saetrack: cannot load the chain {args.chain_from_hub}@{args.chain_revision}: {error}", file=sys.stderr
            )
            return 2
        print(f"[chain] {len(folders)} links installed from {args.chain_from_hub}@{args.chain_revision}", flush=True)
        skip = ("chain",)

    def log(line: str) -> None:
        print(line, flush=True)

    try:
        run_stages(
            run,
            run_dir,
            only=args.only,
            skip=skip,
            force=args.force,
            rerun=args.rerun,
            device=device,
            log=log,
            echo=not args.quiet,
        )
    except NotebookFailed as error:
        print(f"saetrack: FAILED\n{error}", file=sys.stderr, flush=True)
        return 1
    if (run_dir / paths.RESULTS_JSON).exists():
        # every verdict from every section now in results.json, whichever notebooks ran (or were skipped) this time
        ledger.update(run_dir)
    published = publish_run(run.preset, run_dir)
    print(f"saetrack: finished in {time.perf_counter() - started:.1f} s; figures in {paths.figures_dir(run.preset)}")
    if published:
        renders = sum(path.suffix == ".html" for path in published)
        print(f"saetrack: the run's results.json and {renders} notebook renders (HTML) copied beside the figures")
        _sync_readme(run.preset)

    if args.push_to_hub:
        from saetrack import hub

        commit = hub.push_chain(
            run_dir,
            run,
            args.push_to_hub,
            revision=args.hub_branch,
            private=not args.hub_public,
            overwrite=args.hub_overwrite,
        )
        print(
            f"[hub] pushed the chain to {args.push_to_hub} at commit {commit}\n"
            f"[hub] load a link:  sae_lens.SAE.from_pretrained({args.push_to_hub!r}, 'step{run.sae_steps[-1]}')\n"
            f"[hub] load pinned:  python run_all.py --preset {run.preset} --chain-from-hub {args.push_to_hub} "
            f"--chain-revision {commit}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
