"""The feature view reads what the formation, drift and crosscoder stages stored, through their own loaders."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from saetrack import paths
from saetrack.api import Run, StageNotRunError, open_run
from saetrack.api.feature import ActivationStats, Context, CrosscoderMatch, Drift
from saetrack.config import get_preset
from saetrack.stages.formation import top_contexts

pytestmark = pytest.mark.slow

PATTERNS = {"maintaining", "shifting", "grouping", "other", "interrupted", "excluded"}


def test_top_contexts_are_the_formation_stage_renders(api_run: Run) -> None:
    feature, step = api_run.live_features[0], api_run.steps[-1]
    contexts = api_run.feature(feature).top_contexts(step, k=3)
    expected = top_contexts(
        api_run.formation(), feature, len(api_run.steps) - 1, api_run.tokenizer(), api_run.analysis_tokens(), n=3
    )
    assert contexts == [Context(*row) for row in expected]
    assert 1 <= len(contexts) <= 3
    assert all("«" in c.text and "»" in c.text and "<mark>" in c.html for c in contexts)
    values = [c.activation for c in contexts]
    assert values == sorted(values, reverse=True) and values[-1] > 0


def test_top_contexts_name_what_is_allowed(api_run: Run) -> None:
    feature = api_run.feature(0)
    stored = api_run.formation().top_values.shape[-1]
    with pytest.raises(ValueError, match=rf"k must lie in \[1, {stored}\]"):
        feature.top_contexts(api_run.steps[0], k=stored + 1)
    with pytest.raises(KeyError, match=r"step 3 is not a checkpoint of the chain; steps: \[0, 1, 2, 4"):
        feature.top_contexts(3)


def test_activation_stats_are_the_stored_ones(api_run: Run) -> None:
    result = api_run.formation()
    for position, step in enumerate(api_run.steps):
        stats = api_run.feature(5).activation_stats(step)
        assert isinstance(stats, ActivationStats)
        assert stats.label == result.labels[position, 5] and stats.live == bool(result.live[5])
        assert np.allclose(stats.top_activations, result.top_values[position, 5])
        assert stats.max_activation == pytest.approx(float(result.top_values[position, 5].max()))
        active = result.top_values[position, 5][result.top_values[position, 5] > 0]
        assert stats.n_active == active.size
        assert stats.mean_top_activation == pytest.approx(float(active.mean()) if active.size else 0.0)
        assert stats.dominant_share == pytest.approx(float(result.shares[position, 5]))
        assert stats.frequency is not None and 0.0 <= stats.frequency <= 1.0
        if stats.n_active:
            assert stats.dominant_token >= 0 and stats.dominant_text == api_run.tokenizer().decode(
                [stats.dominant_token]
            )


def test_drift_is_the_drift_stage_cosine_and_adjacent_links(api_run: Run) -> None:
    index = api_run.live_features[0]
    drift = api_run.feature(index).drift()
    assert isinstance(drift, Drift) and drift.steps == api_run.steps
    assert np.allclose(drift.to_final, api_run.drift().cosine[:, index])
    assert drift.to_final[-1] == pytest.approx(1.0)
    assert drift.adjacent.shape == (len(api_run.steps) - 1,)
    first, second = (api_run.link(s).W_dec[index].numpy().astype(np.float64) for s in api_run.steps[:2])
    cosine = first @ second / np.linalg.norm(first) / np.linalg.norm(second)
    assert drift.adjacent[0] == pytest.approx(cosine, abs=1e-6)
    assert drift.formation_step == api_run.feature(index).formation_step


def test_pattern_and_formation_step(api_run: Run) -> None:
    drift = api_run.drift()
    for index in range(api_run.n_features):
        feature = api_run.feature(index)
        assert feature.pattern in PATTERNS
        assert (feature.pattern == "excluded") == (not feature.live)
        if index not in set(drift.live_features.tolist()):
            assert feature.formation_step is None
        else:
            time = drift.formation_time_of(index)
            assert feature.formation_step == (None if time < 0 else int(drift.steps[time]))


def test_crosscoder_match_is_the_method_comparison_matching(api_run: Run) -> None:
    manifest, arrays = api_run.method_comparison()
    matches = api_run.crosscoder_matches()
    alive = int(api_run.crosscoder().alive.sum())
    assert len(matches) == min(len(api_run.live_features), alive) and set(matches) <= set(api_run.live_features)
    for chain, other in zip(arrays["pair_chain"].tolist(), arrays["pair_crosscoder"].tolist(), strict=True):
        assert matches[chain] == other  # the pairs the stage stored are pairs of this matching
    chain, other = next(iter(matches.items()))
    match = api_run.feature(chain).crosscoder()
    assert isinstance(match, CrosscoderMatch) and match.crosscoder_feature == other
    assert match.final_step == manifest["final_step"] and match.above_threshold == (match.cosine >= 0.7)
    weights = api_run.link(match.final_step).W_dec[chain].numpy()
    assert -1 <= match.cosine <= 1 and np.isfinite(weights).all()
    assert match.steps == api_run.config.crosscoder_steps
    assert np.allclose(match.norms, api_run.crosscoder().norms[other])
    assert match.emergence_step in (*match.steps, None)
    assert match.formation_step == api_run.feature(chain).formation_step


def test_a_feature_without_a_partner_is_named(api_run_dir: Path) -> None:
    run = open_run(api_run_dir)
    matching = run.crosscoder_matching()
    run._cache["matching"] = dataclasses.replace(  # as if feature 0 were not live
        matching, index_a=matching.index_a[matching.index_b != 0], index_b=matching.index_b[matching.index_b != 0]
    )
    with pytest.raises(KeyError, match="feature 0 has no matched crosscoder feature: only live features"):
        run.feature(0).crosscoder()


def test_a_stage_that_did_not_run_is_named(run_copy: Callable[..., Path]) -> None:
    run = open_run(run_copy(paths.DRIFT_DIR, paths.CROSSCODER_DIR, paths.CROSSCODER_COMPARISON_DIR))
    feature = run.feature(0)
    assert feature.pattern in PATTERNS  # the formation stage is there
    with pytest.raises(StageNotRunError, match="run `saetrack run --preset smoke --only drift` first"):
        feature.drift()
    with pytest.raises(StageNotRunError, match="--only drift"):
        _ = feature.formation_step
    with pytest.raises(StageNotRunError, match="--only crosscoder"):
        feature.crosscoder()


def test_a_run_with_the_crosscoder_off_says_how_to_turn_it_on(api_run_dir: Path) -> None:
    run = open_run(api_run_dir, config=get_preset("smoke").with_overrides({"crosscoder.enabled": False}))
    with pytest.raises(StageNotRunError, match=r"off for this run .*--set crosscoder.enabled=true"):
        run.feature(0).crosscoder()
