"""The explorer's arrays of the finished smoke run agree with the run API feature by feature, and the built site fits
the plan's disk bound and is the one ``python -m saetrack.explorer runs/smoke`` serves (the published copy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from saetrack import paths
from saetrack.api import Run, open_run
from saetrack.explorer.serve import site_root
from saetrack.planning.common import plan_inputs
from saetrack.planning.explorer import PLOTLY_BYTES, explorer_disk_bytes
from saetrack.stages.explorer.arrays import RunArrays, gather_arrays
from saetrack.stages.explorer.site import site_bytes
from tests.planning.conftest import RATES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(smoke_pipeline: tuple[Path, str]) -> Run:
    """The finished smoke run."""
    return open_run(smoke_pipeline[0])


@pytest.fixture(scope="module")
def arrays(run: Run) -> RunArrays:
    """Its explorer arrays with 8 nearest features."""
    return gather_arrays(run, nearest=8)


def test_shapes(run: Run, arrays: RunArrays) -> None:
    n_steps, n = len(run.steps), run.n_features
    assert arrays.preset == "smoke" and arrays.steps.tolist() == list(run.steps)
    for name in ("labels", "dominant", "shares", "frequency", "to_final", "progress"):
        assert getattr(arrays, name).shape == (n_steps, n), name
    assert arrays.adjacent.shape == (n_steps - 1, n)
    for name in ("live", "patterns", "sub_patterns", "formation_step"):
        assert getattr(arrays, name).shape == (n,), name
    assert arrays.baseline.shape == arrays.dead_fraction.shape == (n_steps,)
    assert len(arrays.link_metrics) == n_steps and all(arrays.link_metrics)
    assert arrays.noise_to_final.shape[1] == n and arrays.noise_to_final.shape[0] >= 1
    assert arrays.nearest.shape == arrays.nearest_cosine.shape == (n, min(8, n - 1))
    live = np.zeros(n, dtype=bool)
    live[list(run.live_features)] = True
    np.testing.assert_array_equal(arrays.live, live)
    assert np.isnan(arrays.progress[:, ~live]).all() and np.isfinite(arrays.progress[:, live]).all()
    np.testing.assert_allclose(arrays.to_final[-1, live], 1.0, atol=1e-6)  # the final link against itself


def test_formation_step_agrees_with_the_feature_view(run: Run, arrays: RunArrays) -> None:
    formed = np.flatnonzero(arrays.formation_step >= 0)
    never = np.flatnonzero(arrays.formation_step < 0)
    assert formed.size > 0
    for f in [*formed[:6].tolist(), *never[:4].tolist()]:
        expected = run.feature(f).formation_step
        assert (None if arrays.formation_step[f] < 0 else int(arrays.formation_step[f])) == expected, f
    assert set(arrays.formation_step[formed].tolist()) <= set(run.steps)
    assert (arrays.formation_step[~arrays.live] == -1).all()  # non-live features never form


def test_crosscoder_match_agrees_with_the_run(run: Run, arrays: RunArrays) -> None:
    assert run.config.crosscoder.enabled and arrays.crosscoder is not None
    cc = arrays.crosscoder
    matches = run.crosscoder_matches()
    assert matches
    assert {f: int(cc.match[f]) for f in np.flatnonzero(cc.match >= 0)} == matches
    assert np.isnan(cc.match_cosine[cc.match < 0]).all() and np.isfinite(cc.match_cosine[cc.match >= 0]).all()
    assert cc.norms.shape == (cc.emergence_step.size, cc.steps.size)
    assert cc.final_step in cc.steps.tolist()
    emerged = cc.emergence_step >= 0
    assert set(cc.emergence_step[emerged].tolist()) <= set(cc.steps.tolist())


def test_nearest_excludes_self_best_first(arrays: RunArrays) -> None:
    n = arrays.nearest.shape[0]
    assert (arrays.nearest != np.arange(n)[:, None]).all()
    assert ((arrays.nearest >= 0) & (arrays.nearest < n)).all()
    assert (np.diff(arrays.nearest_cosine, axis=1) <= 1e-6).all()
    assert all(len(set(row)) == row.size for row in arrays.nearest)


def test_the_site_fits_the_plan_and_is_served_from_figures(run: Run, smoke_pipeline: tuple[Path, str]) -> None:
    run_dir = smoke_pipeline[0]
    built = run_dir / paths.EXPLORER_DIR
    sizes = site_bytes(built)
    bound = explorer_disk_bytes(plan_inputs(run.config, RATES))
    assert sizes["features"] > 0 and sizes["checkpoints"] > 0
    assert sizes["total"] <= bound and sizes["vendor"] <= PLOTLY_BYTES
    assert sizes["total"] - sizes["vendor"] <= bound - PLOTLY_BYTES  # the data part of the bound holds
    published = paths.figures_dir("smoke") / paths.EXPLORER_DIR
    assert site_root(run_dir) == (published.parent, f"{paths.EXPLORER_DIR}/index.html")
