"""``saetrack watch SOURCE``: follow a training run's checkpoints as they appear (options in :mod:`saetrack.cli`).

The loop looks at SOURCE every ``--poll`` seconds. Checkpoints that became ready (:mod:`saetrack.live.checkpoints`
for a folder, :mod:`saetrack.live.hub` for a Hub repository) are verified unchanged and handed to
:class:`saetrack.live.follow.LiveChain`, which trains their links. It ends when the link at ``--until-step`` is done,
when the marker file exists in SOURCE with nothing left to read, or after ``--idle-timeout`` seconds without a new
checkpoint. Bad input and a failed link end in one message (exit code 2 and 1), never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import huggingface_hub

from saetrack import paths
from saetrack.cli.run import _lock_run_dir, _parse_overrides
from saetrack.config import ConfigError, get_preset
from saetrack.live.checkpoints import CheckpointWatch, ReadyCheckpoint, verify_unchanged
from saetrack.live.config import WatchSource, check_watchable
from saetrack.live.follow import RUN_CONFIG_FILE, LiveChain
from saetrack.live.hub import HubRevisionWatch, ReadyRevision, verify_revision
from saetrack.runtime import resolve_device
from saetrack.sae.calibration import CalibrationError
from saetrack.stages.chain.links import ChainTrainingError

__all__ = ["run"]

HUB_PREFIX = "hf:"


def _source(args: argparse.Namespace, parser: argparse.ArgumentParser) -> WatchSource:
    if args.source.startswith(HUB_PREFIX):
        repo = args.source.removeprefix(HUB_PREFIX)
        if repo.count("/") != 1:
            parser.error(f"SOURCE {args.source!r} is invalid: a Hub repository is hf:OWNER/NAME.")
        return WatchSource("hub", repo, args.revision_template)
    folder = Path(args.source).expanduser()
    if not folder.is_dir():
        parser.error(f"SOURCE {args.source!r} is not a folder (nor hf:OWNER/NAME): the training run creates it.")
    return WatchSource("local", str(folder.resolve()))


def _setup(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[LiveChain, Any]:
    """The live chain and the watcher of the options; bad values end in one ``parser.error`` line."""
    source = _source(args, parser)
    try:
        overrides = _parse_overrides(args.overrides)
        base = get_preset(args.preset, overrides)
        check_watchable(base)
        device = resolve_device(args.device)
    except (ConfigError, ValueError) as error:
        parser.error(str(error))
    if args.settle < 0 or args.poll <= 0 or args.idle_timeout <= 0 or args.explorer_every < 0:
        parser.error("--settle and --explorer-every must be >= 0, --poll and --idle-timeout > 0.")
    name = args.name or f"watch-{Path(source.location).name}"
    run_dir = Path(args.run_dir).resolve() if args.run_dir else paths.run_dir(name)
    calibrate = not {"chain.l1_coefficient", "chain.target_l0"} & set(overrides)  # a penalty set by hand is kept
    restart = "chain.restart_l0_ratio" not in overrides  # the outcome rule, unless set by hand (None: off)
    chain = LiveChain(base, source, run_dir, name, device=device, progress=not args.quiet,
                      say=lambda line: print(line, flush=True), calibrate=calibrate, restart=restart,
                      explorer_every=args.explorer_every)  # fmt: skip
    if source.kind == "hub":
        return chain, HubRevisionWatch(source.location, args.revision_template)
    return chain, CheckpointWatch(Path(source.location), settle_seconds=args.settle)


def _config_file(chain: LiveChain, first: ReadyCheckpoint | ReadyRevision) -> Path:
    """The first checkpoint's ``config.json`` (downloaded for a Hub source)."""
    if isinstance(first, ReadyCheckpoint):
        return first.folder / "config.json"
    return Path(huggingface_hub.hf_hub_download(chain.source.location, "config.json", revision=first.commit))


def _verify(chain: LiveChain, ready: list[ReadyCheckpoint | ReadyRevision]) -> None:
    for item in ready:
        if isinstance(item, ReadyCheckpoint):
            verify_unchanged(item)
        else:
            verify_revision(item, chain.source.location)


def _finished(args: argparse.Namespace, watch: Any, steps: list[int], idle: float) -> str | None:
    """Why the watch ends now, or ``None`` to go on."""
    if args.until_step is not None and steps and steps[-1] >= args.until_step:
        return f"the link at step {steps[-1]} reached --until-step {args.until_step}"
    marker = Path(args.source) / args.marker
    if not args.source.startswith(HUB_PREFIX) and marker.exists() and not watch.pending:
        return f"{marker} says the training run has finished"
    if idle > args.idle_timeout:
        return f"no new checkpoint for {idle:.0f} s (--idle-timeout {args.idle_timeout:g})"
    return None


def _loop(args: argparse.Namespace, chain: LiveChain, watch: Any) -> str:
    """Poll, train, repeat; return why it ended."""
    ready: dict[int, ReadyCheckpoint | ReadyRevision] = {}
    last_new = time.monotonic()
    while True:
        new = [r for r in watch.poll() if args.until_step is None or r.step <= args.until_step]
        if new:
            ready.update({r.step: r for r in new})
            items = [ready[s] for s in sorted(ready)]
            if isinstance(items[0], ReadyRevision):
                chain.revisions.update({r.step: r.commit for r in items})  # type: ignore[union-attr]
            _verify(chain, new)
            chain.update(sorted(ready), _config_file(chain, items[0]), watch.pending)
            _verify(chain, new)  # nothing rewrote them while they were read
            last_new = time.monotonic()
        reason = _finished(args, watch, sorted(ready), time.monotonic() - last_new)
        if reason is not None:
            return reason
        time.sleep(args.poll)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``saetrack watch``: follow SOURCE until it ends (module doc); return the exit code."""
    chain, watch = _setup(args, parser)
    chain.run_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock_run_dir(chain.run_dir)
    if lock is None:
        print(f"saetrack watch: another process is working on {chain.run_dir}; wait for it to finish.", file=sys.stderr)
        return 2
    print(f"saetrack watch: following {chain.source.location} into {chain.run_dir} (preset {args.preset}, device "
          f"{chain.device})", flush=True)  # fmt: skip
    try:
        reason = _loop(args, chain, watch)
        if chain.explorer_every:
            chain.refresh_explorer(final=True)
    except KeyboardInterrupt:
        print("saetrack watch: stopped; the same command resumes at the first unfinished link.", file=sys.stderr)
        return 130
    except (ChainTrainingError, CalibrationError, RuntimeError, ValueError, OSError) as error:
        print(f"saetrack watch: {error}", file=sys.stderr)
        return 1
    config = chain.run_dir / RUN_CONFIG_FILE
    print(f"saetrack watch: done ({reason}). Report: {chain.run_dir / 'live' / 'index.html'}\n"
          f"saetrack watch: the notebooks on this run: saetrack run --config {config} --run-dir {chain.run_dir} "
          "--only formation drift crosscoder explorer", flush=True)  # fmt: skip
    return 0
