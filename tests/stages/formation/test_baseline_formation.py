"""Control (c): formation on the from-scratch SAEs (stages.formation.baseline_formation), with known answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from saetrack.analysis import feature_scan as fs
from saetrack.analysis import features as fx
from saetrack.analysis.formation import progress_measures
from saetrack.config import RunConfig
from saetrack.stages.formation.baseline_formation import (
    BaselineControl,
    control_lines,
    control_summary,
    own_set_formation,
)
from tests.analysis.helpers import chain_problem


def test_own_set_formation_measures_each_feature_on_its_own_top_k(smoke: RunConfig) -> None:
    run = smoke.with_overrides({"formation.top_k": 5, "formation.min_active": 2})
    (x,), (weights,) = chain_problem(n_steps=1, n_points=200, d=8, d_sae=16, seed=3)
    tokens = np.random.default_rng(0).integers(0, 4, 200)
    out = own_set_formation(run, weights, x, tokens)
    values, indices = fx.top_k_datapoints(weights, x, k=5)
    labels, _, _ = fx.classify_token_concept(values, indices, tokens, 0.5, 2)
    np.testing.assert_array_equal(out["labels"], labels)
    flt = fx.filter_features([fx.feature_statistics(weights, x)])
    np.testing.assert_array_equal(out["live"], flt.live)
    np.testing.assert_array_equal(out["dead"], flt.dead)
    np.testing.assert_array_equal(out["ultra_low"], flt.ultra_low)
    expected = progress_measures([x], [weights], indices, n_random_activation=150, n_random_feature=100,
                                 seed=run.seed, progress=False)  # fmt: skip
    np.testing.assert_allclose(out["activation_cosine"], expected["activation_cosine"][0])
    np.testing.assert_allclose(out["feature_cosine"], expected["feature_cosine"][0])


def test_control_summary_counts_and_medians_per_type() -> None:
    control = {
        "control__steps": np.array([1, 48]),
        "control__baseline__labels": np.array(
            [["token", "token", "concept", "inactive"], ["token", "concept", "concept", "concept"]]
        ),
        "control__baseline__live": np.array([[True, True, True, True], [True, True, True, False]]),
        "control__baseline__activation_cosine": np.array([[0.8, 0.6, 0.1, 9.0], [0.7, 0.2, 0.4, 9.0]]),
        "control__baseline__feature_cosine": np.zeros((2, 4)),
        "control__chain__labels": np.array([["token"] * 4, ["concept"] * 4]),
        "control__chain__live": np.ones((2, 4), dtype=bool),
        "control__chain__activation_cosine": np.full((2, 4), 0.5),
        "control__chain__feature_cosine": np.full((2, 4), 0.25),
        "control__baseline__dead": np.array([[False] * 4, [True, True, False, False]]),
        "control__baseline__ultra_low": np.array([[False] * 4, [False, False, False, True]]),
        "control__chain__dead": np.array([[False, False, False, True], [False] * 4]),
        "control__chain__ultra_low": np.zeros((2, 4), dtype=bool),
    }
    summary = control_summary(control)
    assert [row["dead_fraction_scratch"] for row in summary["per_step"]] == [0.0, 0.5]
    assert [row["dead_fraction_chain"] for row in summary["per_step"]] == [0.25, 0.0]
    assert summary["per_step"][1]["ultra_low_fraction_scratch"] == 0.25
    assert summary["per_step"][1]["baseline"]["dead_fraction"] == 0.5
    old_folder = {k: v for k, v in control.items() if not k.endswith(("dead", "ultra_low"))}
    assert control_summary(old_folder)["per_step"][0]["dead_fraction_chain"] is None
    assert summary["steps"] == [1, 48]
    first, last = summary["per_step"]
    assert first["baseline"]["n_token"] == 2 and first["baseline"]["n_concept"] == 1
    assert first["baseline"]["median_token_activation_cosine"] == pytest.approx(0.7)
    assert last["baseline"]["n_concept"] == 2  # the fourth concept-level feature is not live
    assert last["baseline"]["median_concept_activation_cosine"] == pytest.approx(0.3)
    assert summary["baseline_concept_rise_activation_cosine"] == pytest.approx(0.2)
    assert first["chain"]["median_concept_activation_cosine"] is None
    assert summary["chain_concept_rise_activation_cosine"] is None
    assert control_summary({})["per_step"] == []


def test_baseline_control_says_why_it_is_skipped(smoke: RunConfig, tmp_path: Path) -> None:
    missing = BaselineControl(smoke, tmp_path)
    assert missing.steps == [] and "no finished baselines" in (missing.skipped or "")
    none = BaselineControl(smoke.with_overrides({"chain.baseline": []}), tmp_path)
    assert "trains no from-scratch baselines" in (none.skipped or "")
    assert none.arrays()["control__steps"].tolist() == []


def test_control_lines_print_the_numbers_or_why_not() -> None:
    side = {"n_token": 3, "n_concept": 2, "median_token_activation_cosine": 0.71234,
            "median_concept_activation_cosine": None, "dead_fraction": 0.4912}  # fmt: skip
    summary = {
        "per_step": [{"step": 7, "baseline": side, "chain": side}],
        "baseline_concept_rise_activation_cosine": 0.25,
        "chain_concept_rise_activation_cosine": None,
    }
    lines = control_lines(summary)
    assert lines[0] == (
        "step 7: from-scratch 3 token / 2 concept-level features, median M 0.712 / n/a, dead 0.491; chain link "
        "3 / 2, 0.712 / n/a, dead 0.491"
    )
    assert lines[1].endswith("from-scratch +0.250, chain n/a")
    assert control_lines({"skipped": "no baselines"}) == ["control (c) not run: no baselines"]


def test_own_set_formation_encodes_the_analysis_set_once(smoke: RunConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    run = smoke.with_overrides({"formation.top_k": 5, "formation.min_active": 2})
    (x,), (weights,) = chain_problem(n_steps=1, n_points=200, d=8, d_sae=16, seed=4)
    tokens = np.random.default_rng(1).integers(0, 4, 200)
    scans: list[int] = []
    original = fs.scan_device

    def counted(*args: Any, **kwargs: Any) -> fs.FeatureScan:
        scans.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(fs, "scan_device", counted)
    out = own_set_formation(run, weights, x, tokens)
    assert len(scans) == 1  # statistics and top-k from one scan (was one pass each)
    given = own_set_formation(
        run, weights, x, tokens, fx.feature_statistics(weights, x), fx.top_k_datapoints(weights, x, k=5)
    )
    for name in ("labels", "live", "dead", "ultra_low", "activation_cosine", "feature_cosine"):
        np.testing.assert_array_equal(out[name], given[name])
