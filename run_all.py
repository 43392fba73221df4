"""Regenerate every figure: ``python run_all.py [options]`` is ``saetrack run [options]``.

The notebooks run in order through papermill for one preset (default: the embedded nano preset, offline on a CPU);
``python run_all.py --help`` lists the options. The command itself lives in :mod:`saetrack.cli`.
"""

from __future__ import annotations

import sys

from saetrack.cli import run_main


def main(argv: list[str] | None = None) -> int:
    """Run the pipeline with ``saetrack run``'s options from ``argv`` (default: the command line); the exit code."""
    return run_main(argv, prog="run_all.py")


if __name__ == "__main__":
    sys.exit(main())
