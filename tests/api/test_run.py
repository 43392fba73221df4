"""open_run and Run: the chain's steps and links, the config, and the checks on steps and features."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from sae_lens import SAE

from saetrack import paths
from saetrack.api import Feature, Run, StageNotRunError, open_run
from saetrack.config import get_preset
from saetrack.sae.weights import SAEWeights

pytestmark = pytest.mark.slow


def test_steps_config_and_links(api_run: Run, api_run_dir: Path) -> None:
    assert api_run.steps == get_preset("smoke").sae_steps
    assert api_run.config.to_dict() == get_preset("smoke").to_dict()
    assert api_run.run_dir == api_run_dir.resolve()
    step = api_run.steps[-1]
    assert api_run.link_dir(step) == api_run_dir.resolve() / paths.CHAIN_DIR / f"step{step}"
    weights = api_run.link(step)
    assert isinstance(weights, SAEWeights) and weights.W_dec.shape == (api_run.n_features, 32)
    sae = api_run.sae(step)
    assert isinstance(sae, SAE)
    assert torch.equal(sae.W_dec.detach(), weights.W_dec)
    assert "preset='smoke'" in repr(api_run)


def test_firing_frequency_is_the_saved_sparsity(api_run: Run) -> None:
    frequency = api_run.firing_frequency(api_run.steps[0])
    assert frequency is not None and frequency.shape == (api_run.n_features,)
    assert np.all((frequency >= 0) & (frequency <= 1)) and frequency.max() > 0


def test_feature_indices_and_steps_are_checked(api_run: Run) -> None:
    assert isinstance(api_run.feature(np.int64(3)), Feature)
    with pytest.raises(ValueError, match=r"feature 128 is out of range: this run's SAEs have 128 features \(0-127\)"):
        api_run.feature(128)
    with pytest.raises(ValueError, match="out of range"):
        api_run.feature(-1)
    with pytest.raises(TypeError, match="int"):
        api_run.feature(True)
    with pytest.raises(KeyError, match="step 5 is not a checkpoint"):
        api_run.link(5)


def test_live_features_are_the_formation_stage_ones(api_run: Run) -> None:
    assert api_run.live_features == tuple(api_run.formation().live_features.tolist())


def test_opening_needs_a_run_directory_with_a_chain(tmp_path: Path, run_copy: Callable[..., Path]) -> None:
    with pytest.raises(FileNotFoundError, match="no run directory"):
        open_run(tmp_path / "absent")
    with pytest.raises(StageNotRunError, match="--only chain"):
        open_run(run_copy(paths.CHAIN_DIR))
