"""The pipeline's shape as data: stage names in order, each reading only earlier stages, and no stage imported until
its output hashes are asked for."""

from __future__ import annotations

import subprocess
import sys

import pytest

from saetrack import paths
from saetrack.config import get_preset
from saetrack.notebooks import NOTEBOOK_DIR
from saetrack.pipeline.shape import STAGE_NAMES, STAGES, get_stage, stage_of_output


def test_stages_in_order_each_reading_earlier_ones() -> None:
    assert STAGE_NAMES == ("cache", "chain", "formation", "drift", "scale", "crosscoder", "explorer")
    for position, stage in enumerate(STAGES):
        assert set(stage.inputs) <= set(STAGE_NAMES[:position]), stage.name
        assert (NOTEBOOK_DIR / stage.notebook).is_file() and stage.notebook.startswith(f"0{position + 1}_")
    assert get_stage("drift") is STAGES[3]
    with pytest.raises(KeyError, match=r"unknown stage 'train'.*'cache', 'chain'"):
        get_stage("train")


def test_the_shape_imports_no_stage_until_hashes_are_asked_for() -> None:
    probe = (
        "import sys\nfrom saetrack.config import get_preset\nfrom saetrack.pipeline.shape import get_stage\n"
        "print('saetrack.stages.drift' in sys.modules, 'torch' in sys.modules)\n"
        "get_stage('drift').output_hashes(get_preset('smoke'))\nprint('saetrack.stages.drift' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                          cwd=paths.REPO_ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False", "True"]


def test_each_output_folder_belongs_to_the_stage_that_writes_it() -> None:
    run = get_preset("nano")
    owners = {folder: stage_of_output(folder, run) for folder in ("corpus", "model", "cache", "baseline", "statistics",
                                                                   "crosscoder_vs_chain", "scale")}  # fmt: skip
    assert owners == {"corpus": "cache", "model": "cache", "cache": "cache", "baseline": "chain",
                      "statistics": "crosscoder", "crosscoder_vs_chain": "crosscoder", "scale": "scale"}  # fmt: skip
    with pytest.raises(KeyError, match=r"no stage writes 'figures'; output folders: \['corpus'"):
        stage_of_output("figures", run)
