"""``python -m saetrack.explorer runs/<preset>``: serve a run's explorer on localhost (also ``saetrack-explorer``), or
with ``--export-neuronpedia DIR`` write its links as SAEDashboard's Neuronpedia batches."""

from __future__ import annotations

import argparse
import importlib
import sys

from saetrack.explorer.serve import ExplorerNotFoundError, serve

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m saetrack.explorer",
        description="Serve a run's feature-evolution explorer on localhost (it also opens from the file system: "
        "figures/<preset>/explorer/index.html), or export its links for Neuronpedia.",
    )
    parser.add_argument("path", help="a run directory (runs/<preset>) or an explorer folder")
    parser.add_argument(
        "--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free port; default %(default)s)"
    )
    parser.add_argument("--no-browser", action="store_true", help="do not open the page in a browser")
    export = parser.add_argument_group("export (instead of serving)")
    export.add_argument(
        "--export-neuronpedia",
        metavar="DIR",
        default="",
        help="write each link's features as SAEDashboard's Neuronpedia batches to DIR/step<k>/batch-<n>.json",
    )
    export.add_argument("--steps", type=int, nargs="+", metavar="STEP", help="only these links (default: every link)")
    export.add_argument("--device", default="cpu", help="device recomputing the contexts' activations (default cpu)")
    return parser


def _export(args: argparse.Namespace) -> int:
    """Export the run at ``args.path`` (its module imported now: the server needs neither torch nor the run API)."""
    exporter = importlib.import_module("saetrack.stages.explorer.neuronpedia")
    written = exporter.export_run_dir(args.path, args.export_neuronpedia, args.steps, device=args.device)
    files = sum(len(v) for v in written.values())
    print(f"wrote {len(written)} link(s), {files} batch file(s), under {args.export_neuronpedia}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and serve (or export) the explorer it names; exit code 2 with one line on stderr when the path
    holds no explorer or run, or a step is not a link."""
    args = _parser().parse_args(argv)
    try:
        if args.export_neuronpedia:
            return _export(args)
        serve(args.path, port=args.port, open_browser=not args.no_browser)
    except (ExplorerNotFoundError, OSError, KeyError, ValueError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"saetrack.explorer: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
