"""A finished smoke run's links exported for Neuronpedia: every feature, its contexts' exact activations, the files'
schema (SAEDashboard's batches), and one readable error for a step that is not a link."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from saetrack.api import open_run
from saetrack.data.activations import open_activations
from saetrack.sae.weights import feature_activations
from saetrack.stages.explorer.neuronpedia import SAE_SET, export_run_dir, model_id
from tests.stages.explorer.test_export import BATCH_SCHEMA

pytestmark = pytest.mark.slow


def test_a_run_exports_every_feature_of_the_chosen_links(smoke_pipeline: tuple[Path, str], tmp_path: Path) -> None:
    run_dir = smoke_pipeline[0]
    run = open_run(run_dir)
    steps = [run.steps[1], run.steps[-1]]
    written = export_run_dir(run_dir, tmp_path, steps)
    assert sorted(written) == steps
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed (it comes with nbformat)")
    validator = jsonschema.Draft202012Validator(BATCH_SCHEMA)
    for step in steps:
        batches = [json.loads(p.read_text()) for p in written[step]]
        for batch in batches:
            validator.validate(batch)
            assert batch["sae_id_suffix"] == f"step{step}" and batch["sae_set"] == SAE_SET
            assert batch["model_id"] == model_id(run) == "saetrack-smoke" and batch["layer"] == run.config.cache.layer
        features = [f for batch in batches for f in batch["features"]]
        assert [f["feature_index"] for f in features] == list(range(run.n_features))
        frequency = run.firing_frequency(step)
        np.testing.assert_allclose([f["frac_nonzero"] for f in features], np.clip(frequency, 0, 1), rtol=1e-6)
        # one feature's first context: its tokens' activations are the link's encoder on those tokens (Eq. 2)
        feature = int(run.live_features[0])
        first = features[feature]["activations"][0]
        contexts = run.feature(feature).top_contexts(step, k=run.config.formation.top_k)
        assert len(features[feature]["activations"]) == len(contexts)
        assert first["values"][first["qualifying_token_index"]] == pytest.approx(contexts[0].activation, rel=1e-3)
        row = int(run.formation().top_indices[run.position(step), feature, 0])
        start = row - first["qualifying_token_index"]
        rows = np.arange(start, start + len(first["values"]))
        x = np.asarray(open_activations(run.config, run.run_dir).analysis(step)[rows])  # read apart from the export
        expected = feature_activations(run.link(step), x)[:, feature].numpy()
        np.testing.assert_allclose(first["values"], expected, rtol=1e-4, atol=1e-6)


def test_a_step_that_is_not_a_link_is_refused(smoke_pipeline: tuple[Path, str], tmp_path: Path) -> None:
    run = open_run(smoke_pipeline[0])
    missing = max(run.steps) + 1
    with pytest.raises(KeyError, match="not a checkpoint of the chain"):
        export_run_dir(smoke_pipeline[0], tmp_path, [missing])
