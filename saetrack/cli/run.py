"""``saetrack run`` (and ``run_all.py``): the pipeline for one preset, from parsed options to published figures.

Imported only when the command runs (it loads torch through the resource plan and the notebook machinery); the
options themselves are declared in :mod:`saetrack.cli`.
"""

from __future__ import annotations

import argparse
import ast
import fcntl
import sys
import time
from pathlib import Path
from typing import IO, Any

import torch.distributed as dist

from saetrack import hub, ledger, paths, store
from saetrack.config import DEFAULT_PRESET, ConfigError, RunConfig, get_preset
from saetrack.distributed.ranks import init_ranks, rank_device, ranks_from_environment
from saetrack.ledger import render
from saetrack.notebooks import NotebookFailed
from saetrack.pipeline.layers import layer_folders
from saetrack.pipeline.ranked import DATA_PARALLEL_STAGES, run_data_parallel
from saetrack.pipeline.shape import STAGE_NAMES, STAGES
from saetrack.pipeline.spread import run_spread
from saetrack.pipeline.stages import last_executions, run_stages
from saetrack.planning.spread import format_spread, plan_spread
from saetrack.publish import publish_run
from saetrack.resources import (
    ResourceError,
    check_fits,
    format_plan,
    human_time,
    machine_limits,
    measure_rates,
    plan_run,
    planned_for,
)
from saetrack.runtime import resolve_device

__all__ = ["run"]


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


def _config(args: argparse.Namespace) -> RunConfig:
    """The run's config: ``--config FILE`` (a ``RunConfig.to_dict()`` JSON) or ``--preset``, then ``--set``."""
    overrides = _parse_overrides(args.overrides)
    if not getattr(args, "config", ""):
        return get_preset(args.preset, overrides)
    path = Path(args.config).expanduser()
    try:
        data = store.read_json(path)
    except (OSError, ValueError) as error:
        raise ConfigError(f"--config {args.config}: cannot read a run config there ({error}).") from error
    run = RunConfig.from_dict(data)
    return run.with_overrides(overrides) if overrides else run


def _planned_ranks(args: argparse.Namespace) -> int:
    """The ranks a plan is for: ``--ranks``, else the job's own (torchrun's ``WORLD_SIZE``), else 1."""
    return args.ranks if args.ranks is not None else ranks_from_environment().world_size


def _validated(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[RunConfig, str]:
    """The run's config and device from the options; any bad value ends in one ``parser.error`` message."""
    try:
        run = _config(args)
        device = resolve_device(args.device)
    except (ConfigError, ValueError) as error:
        parser.error(str(error))
    unknown = sorted(set(args.only or []) - set(STAGE_NAMES))
    if unknown:
        parser.error(f"--only {unknown} are not stages; stages: {list(STAGE_NAMES)}")
    if run.model.source == "local" and not Path(run.model.local_path or "").expanduser().is_dir():
        parser.error(f"model.local_path = {run.model.local_path!r} is not a folder (it must hold the step{{N}}/ "
                     "checkpoints of model.source='local').")  # fmt: skip
    ranks = _planned_ranks(args)
    if ranks < 1 or (run.chain.batch_size % ranks and not args.spread):  # a spread unit trains on one rank
        parser.error(f"--ranks {ranks}: the ranks must split chain.batch_size = {run.chain.batch_size} evenly.")
    if args.ranks is not None and not args.plan:
        parser.error("--ranks plans a torchrun job (with --plan); to run one, start the command with torchrun.")
    if run.cache.layers and (args.chain_from_hub or args.push_to_hub):
        parser.error("--chain-from-hub and --push-to-hub take one layer's chain: run them on the layer's own run "
                     "(--set cache.layer=L --run-dir RUN/layerL), not with cache.layers.")  # fmt: skip
    if args.spread and args.force:
        parser.error("--spread resumes every unit where it stopped, so --force would redo finished units on each "
                     "restart: delete the outputs to rebuild instead.")  # fmt: skip
    if bool(args.chain_from_hub) != bool(args.chain_revision):
        parser.error("--chain-from-hub REPO and --chain-revision COMMIT go together (a chain is loaded pinned).")
    return run, device


def _plan_or_check(args: argparse.Namespace, run: RunConfig, run_dir: Path, device: str) -> int | None:
    """With ``--plan``, print the resource plan (and the last measured times) and return 0; otherwise check the run
    fits this machine: 2 (after saying why) when it does not, ``None`` to go on."""
    rates = measure_rates(device)
    limits = machine_limits(run_dir, device)
    ranks = _planned_ranks(args)
    lines_ranks = 1 if args.spread else ranks  # a spread job's units each run in one process
    stages = planned_for(plan_run(run, rates, lines_ranks), args.only)  # only what this call will run is checked
    if args.plan:
        print(format_plan(run, stages, rates, limits, lines_ranks))
        if args.spread:
            print(format_spread(plan_spread(run, rates, ranks, args.only), ranks, human_time))
        runs = list(layer_folders(run, run_dir).values()) if run.cache.layers else [(run, run_dir)]
        for each, folder in runs:  # a run of several layers: each layer's folder
            measured = last_executions(each, folder)
            if measured:
                print(f"measured in {folder} (each notebook's last execution; *: for another config):")
                print("  " + ", ".join(f"{name} {human_time(s)}{'' if same else '*'}" for name, s, same in measured))
        return 0
    try:
        check_fits(stages, limits)
    except ResourceError as error:
        if not args.ignore_resources:
            print(f"saetrack: {error}\n{format_plan(run, stages, rates, limits)}", file=sys.stderr)
            return 2
        print(f"saetrack: warning (--ignore-resources): {error}", file=sys.stderr)
    return None


def _publish(run: RunConfig, run_dir: Path, started: float) -> None:
    """Re-evaluate the claims ledger, copy results and renders beside the figures, and say where they are (for a run
    of several layers, each layer's: ``figures/<preset>/layer<l>/``)."""
    if run.cache.layers:
        for layer_run, folder in layer_folders(run, run_dir).values():
            _publish(layer_run, folder, started)
        return
    if (run_dir / paths.RESULTS_JSON).exists():
        # every verdict from every section now in results.json, whichever notebooks ran (or were skipped) this time
        ledger.update(run_dir)
    published = publish_run(run.preset, run_dir)
    print(f"saetrack: finished in {time.perf_counter() - started:.1f} s; figures in {paths.figures_dir(run.preset)}")
    if published:
        renders = sum(path.suffix == ".html" and path.stem != "index" for path in published)
        print(f"saetrack: results.json and {renders} notebook renders (HTML, with an index) copied beside the figures")
        _sync_readme(run.preset)


def _push(args: argparse.Namespace, run: RunConfig, run_dir: Path) -> None:
    """Push the finished chain to ``--push-to-hub`` and print how to load it back."""
    commit = hub.push_chain(run_dir, run, args.push_to_hub, revision=args.hub_branch, private=not args.hub_public,
                            overwrite=args.hub_overwrite)  # fmt: skip
    print(
        f"[hub] pushed the chain to {args.push_to_hub} at commit {commit}\n"
        f"[hub] load a link:  sae_lens.SAE.from_pretrained({args.push_to_hub!r}, 'step{run.sae_steps[-1]}')\n"
        f"[hub] load pinned:  saetrack run --preset {run.preset} --chain-from-hub {args.push_to_hub} "
        f"--chain-revision {commit}",
        flush=True,
    )


def _data_parallel(
    args: argparse.Namespace, run: RunConfig, run_dir: Path, device: str, skip: tuple[str, ...]
) -> int | None:
    """In a ``torchrun`` job: join the ranks and compute the data-parallel stages together
    (:mod:`saetrack.pipeline.ranked`). Returns the exit code for a rank other than 0 (its part is done) or for a
    failure, ``None`` for rank 0 to go on to the notebooks."""
    ranks, device = init_ranks(device)
    try:
        run_data_parallel(run, run_dir, ranks, device=device, only=args.only, skip=skip, force=args.force,
                          log=lambda line: print(line, flush=True))  # fmt: skip
    except Exception as error:  # one line per rank, the job fails; the finished links stay for a restart
        print(f"saetrack: rank {ranks.rank} of {ranks.world_size} failed: {type(error).__name__}: {error}",
              file=sys.stderr, flush=True)  # fmt: skip
        return 1
    finally:
        dist.destroy_process_group()
    if not ranks.writer:
        print(
            f"saetrack: rank {ranks.rank} of {ranks.world_size}: data-parallel stages done; rank 0 goes on", flush=True
        )
        return 0
    return None


def _spread(args: argparse.Namespace, run: RunConfig, run_dir: Path, device: str, skip: tuple[str, ...]) -> int | None:
    """``--spread``: compute this rank's share of the run's units (:mod:`saetrack.pipeline.spread`). Returns the exit
    code for a rank other than 0 (its part is done) or for a failure, ``None`` for rank 0 to go on to the notebooks."""
    ranks = ranks_from_environment()
    try:
        run_spread(run, run_dir, ranks, device=rank_device(ranks, device), only=args.only, skip=skip,
                   log=lambda line: print(line, flush=True), progress=not args.quiet)  # fmt: skip
    except Exception as error:  # one line; the finished units (and finished links of this one) stay for a restart
        print(f"saetrack: rank {ranks.rank} of {ranks.world_size} failed: {type(error).__name__}: {error}",
              file=sys.stderr, flush=True)  # fmt: skip
        return 1
    if not ranks.writer:
        print(f"saetrack: rank {ranks.rank} of {ranks.world_size}: every unit is done; rank 0 draws", flush=True)
        return 0
    return None


def _ranked_segments(only: list[str] | None, skip: tuple[str, ...]) -> list[tuple[list[str], bool]]:
    """The selected stages in pipeline order, cut into runs of consecutive stages that are all data-parallel
    (:data:`DATA_PARALLEL_STAGES`) or all not: ``[(names, data_parallel), ...]``."""
    segments: list[tuple[list[str], bool]] = []
    for stage in STAGES:
        if (only and stage.name not in only) or stage.name in skip:
            continue
        ranked = stage.name in DATA_PARALLEL_STAGES
        if segments and segments[-1][1] == ranked:
            segments[-1][0].append(stage.name)
        else:
            segments.append(([stage.name], ranked))
    return segments


def _run_notebooks(
    args: argparse.Namespace, run: RunConfig, run_dir: Path, device: str, skip: tuple[str, ...], ranked: bool
) -> None:
    """Run (or skip) the stages' notebooks (:func:`run_stages`), in pipeline order. After a torchrun job's
    data-parallel stages (``ranked``) their notebooks only evaluate and draw, never retrain (not forced again), and
    ``--force`` applies to the rest."""
    common = dict(device=device, log=lambda line: print(line, flush=True), echo=not args.quiet, rerun=args.rerun)
    if not ranked:
        run_stages(run, run_dir, only=args.only, skip=skip, force=args.force, **common)  # type: ignore[arg-type]
        return
    for names, data_parallel in _ranked_segments(args.only, skip):
        run_stages(run, run_dir, only=names, skip=skip, force=args.force and not data_parallel,
                   **common)  # type: ignore[arg-type]  # fmt: skip


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``saetrack run``: validate the parsed options and the config, print the resource plan or check the run fits,
    run (or skip) each stage, publish the figures and renders, and push to the Hub when asked; return the exit code.
    Bad input ends in one message (``parser.error``), never a traceback."""
    run, device = _validated(args, parser)
    run_dir = paths.run_dir(run.preset) if not args.run_dir else Path(args.run_dir).resolve()
    planned = _plan_or_check(args, run, run_dir, device)
    if planned is not None:
        return planned
    run_dir.mkdir(parents=True, exist_ok=True)
    ranks = ranks_from_environment()  # a torchrun job's place, else rank 0 of 1
    lock = _lock_run_dir(run_dir) if ranks.writer else None
    if ranks.writer and lock is None:
        print(f"saetrack: another run is working on {run_dir}; wait for it to finish.", file=sys.stderr)
        return 2
    print(f"saetrack: preset {run.preset} | device {device} | run directory {run_dir}"
          + (f" | rank {ranks.rank} of {ranks.world_size}" if ranks.distributed else ""), flush=True)  # fmt: skip
    started = time.perf_counter()
    if args.chain_from_hub and ranks.writer:
        try:
            folders = hub.load_hub_chain(args.chain_from_hub, args.chain_revision, run_dir, run)
        except (ValueError, OSError, store.StaleArtifactError) as error:  # one message, no traceback
            where = f"{args.chain_from_hub}@{args.chain_revision}"
            print(f"saetrack: cannot load the chain {where}: {error}", file=sys.stderr)
            return 2
        print(f"[chain] {len(folders)} links installed from {args.chain_from_hub}@{args.chain_revision}", flush=True)
    skip = ("chain",) if args.chain_from_hub else ()
    if args.spread and (code := _spread(args, run, run_dir, device, skip)) is not None:
        return code
    if ranks.distributed and not args.spread and (code := _data_parallel(args, run, run_dir, device, skip)) is not None:
        return code
    try:
        _run_notebooks(args, run, run_dir, device, skip, ranks.distributed and not args.spread)
    except NotebookFailed as error:
        print(f"saetrack: FAILED\n{error}", file=sys.stderr, flush=True)
        return 1
    _publish(run, run_dir, started)
    if args.push_to_hub:
        _push(args, run, run_dir)
    return 0
