"""The ``saetrack`` command: ``saetrack run`` runs the pipeline as ``run_all.py`` does.

This module imports nothing heavy (no torch, no notebook machinery): the parsers are built from the presets' names
and the pipeline's shape (:mod:`saetrack.pipeline.shape`), so ``saetrack --help`` and ``saetrack run --help`` answer
at once; the work of a subcommand is imported only when it runs (:func:`_subcommand`).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from saetrack import __version__
from saetrack.config import DEFAULT_PRESET, PRESETS
from saetrack.pipeline.shape import STAGE_NAMES

__all__ = ["RUN_DESCRIPTION", "WATCH_DESCRIPTION", "main", "run_main", "run_parser", "watch_parser"]

#: What ``saetrack run --help`` (and ``python run_all.py --help``) says before the options.
RUN_DESCRIPTION = f"""\
Run the pipeline for one preset: the numbered notebooks (01 cache ... 07 explorer), executed through papermill in
order, then the figures, the results and the notebook renders copied to figures/<preset>/.

examples:
  saetrack run                                   the default preset ({DEFAULT_PRESET}), offline on a CPU
  saetrack run --preset smoke                    the whole pipeline at test size (a few minutes)
  saetrack run --only cache chain                some stages only
  saetrack run --force                           rebuild stages whose outputs are already current
  saetrack run --rerun                           re-execute the notebooks from finished outputs (redraws figures)
  saetrack run --set chain.l1_coefficient=1e-3   override a config field (validated)
  saetrack run --preset pythia-410m-l4 --plan    print the run's resource plan and stop
  saetrack run --push-to-hub me/saetrack-nano    then push the trained chain to the Hub
  saetrack run --preset pythia-410m-l4 --chain-from-hub me/chain --chain-revision <commit>
                                                 analyse a chain from the Hub instead of training one

Stages whose outputs match the config are skipped (and say so); an interrupted run resumes where it stopped. While a
stage runs, its notebook's output streams here, each line prefixed with "  <preset>:<stage> | ". Executed notebooks
go to runs/<preset>/notebooks/, figures to figures/<preset>/. The Hub token comes from HF_TOKEN or `hf auth login`
and is never printed or written anywhere.
"""


def run_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the options of ``saetrack run`` (and ``run_all.py``) to ``parser``; return it."""
    parser.add_argument("--preset", default=DEFAULT_PRESET, help=f"one of {sorted(PRESETS)} (default: %(default)s)")
    parser.add_argument("--only", nargs="+", metavar="STAGE", help=f"run only these stages: {list(STAGE_NAMES)}")
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
        "--ranks",
        type=int,
        default=None,
        metavar="N",
        help="with --plan: plan a torchrun job of N ranks (GPUs): per-rank memory, the chain and baselines "
        "data-parallel (default: torchrun's WORLD_SIZE, else 1)",
    )
    parser.add_argument(
        "--spread",
        action="store_true",
        help="in a job of several ranks (torchrun, srun): deal whole units out over the ranks - layers' chains, "
        "baselines, seed control, noise floor, formation, drift, the scale study's sizes - through claims in the "
        "shared run directory, instead of training each link data-parallel; rank 0 then draws. With --plan "
        "(and --ranks N): the units dealt over N ranks and the projected wall time",
    )
    parser.add_argument(
        "--ignore-resources",
        action="store_true",
        help="go on even when the resource plan says the run does not fit this machine",
    )
    parser.add_argument("--run-dir", default="", help="run directory (default: runs/<preset>)")
    parser.add_argument("--config", default="", metavar="FILE",
                        help="a whole run config (JSON, e.g. the run_config.json saetrack watch writes) instead of "
                        "--preset; --set still applies")  # fmt: skip
    hub = parser.add_argument_group("Hugging Face Hub")
    hub.add_argument("--push-to-hub", metavar="REPO", default="", help="push the finished chain to this repo")
    hub.add_argument("--hub-branch", default=None, help="branch to push to (default: main)")
    hub.add_argument("--hub-overwrite", action="store_true", help="replace files that already exist in the repo")
    hub.add_argument("--hub-public", action="store_true", help="create the repo public (default: private)")
    hub.add_argument("--chain-from-hub", metavar="REPO", default="", help="download this chain instead of training one")
    hub.add_argument("--chain-revision", default="", help="commit hash (40 hex) the downloaded chain is pinned to")
    return parser


#: What ``saetrack watch --help`` says before the options.
WATCH_DESCRIPTION = f"""\
Follow a training run as it writes checkpoints: when checkpoint k appears and is complete (its files whole and
unchanged for --settle seconds, then hashed), train link k of the SAE-Track chain from link k-1, measure its quality
and the drift so far, print one line, and refresh the report (RUN_DIR/live/index.html). Killed, the same command
resumes at the first unfinished link.

SOURCE is a folder of step<N>/ or checkpoint-<N>/ checkpoints (save_pretrained or the Hugging Face Trainer), or
hf:OWNER/NAME, a Hub repository whose step<N> branches appear over time. The settings come from --preset and --set;
the sparsity penalty is calibrated to chain.target_l0 (default: 32, at most d_model/4) on the first
checkpoint, unless --set gives chain.target_l0 or chain.l1_coefficient. A link whose L0 lands more than twice or
less than half the previous link's is retrained as a first link (a chain restart, marked in the report), unless
--set gives chain.restart_l0_ratio (None: never).

examples:
  saetrack watch out/checkpoints                         follow a folder until it holds saetrack.done
  saetrack watch out/checkpoints --until-step 10000      stop after the link at step 10000
  saetrack watch hf:me/my-run --idle-timeout 7200        follow a Hub repo's branches
  saetrack watch out/checkpoints --set cache.layer=6 --set chain.target_l0=64
  saetrack watch out/checkpoints --explorer-every 5      the explorer over the chain so far, every 5 links

Afterwards the notebooks run on the watched run as on any other:
  saetrack run --config RUN_DIR/run_config.json --run-dir RUN_DIR --only formation drift crosscoder explorer
(default preset: {DEFAULT_PRESET}; RUN_DIR defaults to runs/watch-<name of SOURCE>)
"""


def watch_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the options of ``saetrack watch`` to ``parser``; return it."""
    parser.add_argument("source", metavar="SOURCE", help="checkpoint folder, or hf:OWNER/NAME")
    parser.add_argument("--preset", default=DEFAULT_PRESET, help=f"settings to start from, one of {sorted(PRESETS)}")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a config field by dotted name (repeatable)")  # fmt: skip
    parser.add_argument("--run-dir", default="", help="run directory (default: runs/watch-<name>)")
    parser.add_argument("--name", default="", help="the run's name (default: the folder's or repository's name)")
    parser.add_argument("--until-step", type=int, default=None, help="stop after the link at this step")
    parser.add_argument(
        "--marker",
        default="saetrack.done",
        help="stop once this file exists in SOURCE and every checkpoint is done (default %(default)s)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=3600.0,
        help="stop after this many seconds without a new checkpoint (default %(default)s)",
    )
    parser.add_argument("--poll", type=float, default=10.0, help="seconds between looks (default %(default)s)")
    parser.add_argument(
        "--settle",
        type=float,
        default=5.0,
        help="seconds a checkpoint's files must stay unchanged before it is read (default %(default)s)",
    )
    parser.add_argument("--revision-template", default="step{step}", help="Hub branch names (default %(default)s)")
    parser.add_argument("--explorer-every", type=int, default=0, metavar="N",
                        help="rebuild formation, drift and the explorer every N new links and at the end (default: "
                        "0, never; the HTML summary is refreshed after every link)")  # fmt: skip
    parser.add_argument("--device", default="auto", help="'cpu', 'cuda', 'cuda:1', or 'auto' (default)")
    parser.add_argument("--quiet", action="store_true", help="print only the per-checkpoint lines")
    return parser


def _subcommand(name: str) -> object:
    """The module that carries out subcommand ``name`` (``saetrack.cli.<name>``), imported now: it loads torch and
    the notebook machinery, which ``--help`` must not wait for."""
    return importlib.import_module(f"saetrack.cli.{name}")


def run_main(argv: list[str] | None = None, prog: str = "run_all.py") -> int:
    """``run_all.py``: parse the options of ``saetrack run`` from ``argv`` and run the pipeline; return the exit
    code."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = run_parser(argparse.ArgumentParser(prog=prog, description=RUN_DESCRIPTION, formatter_class=formatter))
    args = parser.parse_args(argv)
    return _subcommand("run").run(args, parser)  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    """The ``saetrack`` console command: parse ``argv`` (default ``sys.argv[1:]``) and run the subcommand it names;
    return the exit code."""
    parser = argparse.ArgumentParser(
        prog="saetrack",
        description="SAE-Track: chains of sparse autoencoders over a language model's training checkpoints "
        "(arXiv 2412.17626).",
    )
    parser.add_argument("--version", action="version", version=f"saetrack {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run the pipeline (the numbered notebooks) for a preset",
        description=RUN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run_parser(run)
    watch = commands.add_parser(
        "watch",
        help="follow a training run's checkpoints as they appear, one chain link per checkpoint",
        description=WATCH_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    watch_parser(watch)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parser.print_help()
        return 2
    sub = {"run": run, "watch": watch}[args.command]
    return _subcommand(args.command).run(args, sub)  # type: ignore[attr-defined]
