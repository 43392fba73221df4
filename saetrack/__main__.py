"""``python -m saetrack``: the ``saetrack`` console command (``python -m saetrack watch SOURCE``, ``... run``)."""

from __future__ import annotations

import sys

from saetrack.cli import main

if __name__ == "__main__":
    sys.exit(main())
