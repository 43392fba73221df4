"""``import saetrack`` stays light; ``saetrack.open_run`` and ``saetrack.Run`` come from the run API on first use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import saetrack
import saetrack.api


def test_importing_the_package_does_not_import_torch() -> None:
    code = "import sys, saetrack; print('torch' in sys.modules, saetrack.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", saetrack.__version__]


def test_the_run_api_is_exported_lazily() -> None:
    assert {"open_run", "Run", "__version__"} <= set(saetrack.__all__)
    assert saetrack.open_run is saetrack.api.open_run
    assert saetrack.Run is saetrack.api.Run
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        _ = saetrack.nothing_here  # type: ignore[attr-defined]


@pytest.mark.slow
def test_open_run_from_the_top_level(api_run_dir: Path) -> None:
    run = saetrack.open_run(api_run_dir)
    assert isinstance(run, saetrack.Run) and run.steps[0] == 0
