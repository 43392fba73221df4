"""The drift so far and the phase estimate so far of a watched chain."""

from __future__ import annotations

import numpy as np

from saetrack.analysis.drift import link_cosine_to_final
from saetrack.live.readings import drift_so_far
from saetrack.sae.io import load_firing_frequency
from saetrack.sae.weights import load_decoder


def test_drift_so_far_reads_every_link_against_the_latest(watched_smoke: dict) -> None:
    run_dir, run = watched_smoke["run_dir"], watched_smoke["run"]
    folders = {s: run_dir / "chain" / f"step{s}" for s in run.sae_steps}
    readings = drift_so_far(run, folders)
    assert readings["steps"] == [0, 1, 2, 4, 8]
    assert readings["median_cosine_to_latest"][-1] == 1.0  # the latest link against itself
    alive = load_firing_frequency(folders[8]) > 0
    expected = np.median(link_cosine_to_final(load_decoder(folders[0]), load_decoder(folders[8]))[alive])
    assert np.isclose(readings["median_cosine_to_latest"][0], expected)
    assert readings["alive_at_latest"] == int(alive.sum())
    assert -1 <= readings["median_cosine_to_previous"] <= 1


def test_phases_wait_for_enough_links(watched_smoke: dict) -> None:
    run_dir, run = watched_smoke["run_dir"], watched_smoke["run"]
    two = drift_so_far(run, {s: run_dir / "chain" / f"step{s}" for s in (0, 1)})
    assert two["phases"] is None and "three phases could not be fitted" in two["phase_note"]
    assert two["median_cosine_to_previous"] is not None
