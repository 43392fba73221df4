"""The scale stage's plan: one line per other size and per seed-study run, each a whole pipeline."""

from __future__ import annotations

import pytest

from saetrack.config import get_preset
from saetrack.planning import plan_run
from tests.planning.conftest import RATES


def test_the_scale_stage_is_the_other_sizes_and_the_seed_runs_whole_pipelines() -> None:
    run = get_preset("nano")
    lines = [s for s in plan_run(run, RATES) if s.owner == "scale"]
    sizes = [p for p in run.scale.presets if p != "nano"]
    assert [s.stage for s in lines[: len(sizes)]] == [f"scale {p}" for p in sizes]
    for preset, line in zip(sizes, lines, strict=False):
        whole = [s for s in plan_run(get_preset(preset), RATES) if s.owner in ("cache", "chain", "formation", "drift")]
        assert line.seconds == pytest.approx(sum(s.seconds for s in whole))
        assert line.host == max(s.host for s in whole)
    # every model x chain seed, plus the warm-up control, less the one that is the scale study's own nano-s run
    n_variants = len(run.scale.model_seeds) * len(run.scale.chain_seeds) + 1 - 1
    assert sum(s.stage.startswith("seeds ") for s in lines) == n_variants
    alone = run.with_overrides({"scale.presets": (), "scale.seed_preset": ""})
    assert "scale" not in {s.owner for s in plan_run(alone, RATES)}
