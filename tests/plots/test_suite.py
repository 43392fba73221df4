"""Fig. S1: the nano suite's train and held-out loss against step + 1, with the held-out unigram entropy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from saetrack import paths, store
from saetrack.plots.suite import loss_curve_figure


@pytest.fixture(scope="module")
def trained(smoke_run_dir: Path) -> tuple[Path, dict]:
    """The session's smoke run and the manifest of its trained suite."""
    return smoke_run_dir, store.read_manifest(smoke_run_dir / paths.MODEL_DIR)


def test_loss_curve_figure(trained: tuple[Path, dict]) -> None:
    _, manifest = trained
    fig = loss_curve_figure(manifest)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    assert len(ax.lines) == 3
    np.testing.assert_allclose(ax.lines[0].get_xdata(), np.array(manifest["checkpoint_steps"]) + 1)
    assert ax.lines[2].get_ydata()[0] == pytest.approx(manifest["heldout_unigram_entropy"])


def test_loss_curve_figure_on_a_hand_made_manifest() -> None:
    manifest = {
        "checkpoints": [
            {"step": 0, "train_loss": 6.2, "heldout_loss": 6.3},
            {"step": 9, "train_loss": 4.0, "heldout_loss": 4.5},
            {"step": 99, "train_loss": 2.0, "heldout_loss": 2.5},
        ],
        "heldout_unigram_entropy": 5.25,
        "config": {"suite": {"n_layers": 2, "d_model": 32}},
    }
    (ax,) = loss_curve_figure(manifest).axes
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [1, 10, 100])
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), [6.2, 4.0, 2.0])
    np.testing.assert_array_equal(ax.lines[1].get_ydata(), [6.3, 4.5, 2.5])
    assert ax.get_title() == "nano suite: 2 layers, d_model 32"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["train loss (recent steps)", "held-out loss", "held-out unigram entropy (5.25)"]
