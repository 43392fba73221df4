"""``python -m saetrack`` is the ``saetrack`` console command."""

from __future__ import annotations

import subprocess
import sys

from saetrack import paths


def test_python_dash_m_saetrack_runs_the_console_command() -> None:
    done = subprocess.run([sys.executable, "-m", "saetrack", "watch", "--help"], capture_output=True, text=True,
                          timeout=120, cwd=paths.REPO_ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "usage: saetrack watch" in done.stdout and "checkpoint-<N>" in done.stdout
