"""The crosscoder's controls: what each control reads, its normalisation, its hash, and the nulls' summary."""

from __future__ import annotations

import numpy as np
import pytest

from saetrack.config import RunConfig
from saetrack.crosscoder.activations import snapshot_moments, snapshot_scales
from saetrack.stages.crosscoder.controls import ControlInput, control_hash, control_inputs, nulls_summary


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    """``[4, 50, 3]`` activations whose snapshots differ in mean and spread."""
    rng = np.random.default_rng(0)
    return rng.standard_normal((4, 50, 3)) * np.array([1, 2, 3, 4])[:, None, None] + np.arange(4)[:, None, None]


def test_the_smoke_run_has_three_controls_and_drops_the_steps_up_to_eight(run: RunConfig) -> None:
    specs = control_inputs(run)
    assert list(specs) == ["repeated", "dropped_early", "centred"]
    assert run.crosscoder_steps[specs["dropped_early"].first :] == (16, 32, 48)
    assert control_inputs(run.with_overrides({"crosscoder.controls": False})) == {}
    # fewer than two snapshots left: no dropped-early control
    assert "dropped_early" not in control_inputs(run.with_overrides({"crosscoder.dropped_early_max_step": 32}))
    hashes = {control_hash("abc", spec) for spec in specs.values()}
    assert len(hashes) == 3 and control_hash("abc", specs["centred"]) != control_hash("abd", specs["centred"])


def test_the_repeated_control_trains_on_the_last_block_and_is_measured_on_it_at_every_snapshot(
    data: np.ndarray,
) -> None:
    spec = ControlInput("repeated", repeat_last=True)
    view = spec.view(data)
    assert view.shape == (1, 50, 3) and np.shares_memory(view, data) and spec.n_snapshots(4) == 4
    np.testing.assert_array_equal(view[0], data[-1])
    scales, offsets = spec.normalisation(view)
    np.testing.assert_allclose(scales, snapshot_scales(data)[-1:])
    assert offsets is None
    heldout = data.swapaxes(0, 1)  # [n, T, d]
    columns = spec.heldout(heldout)
    assert columns.shape == heldout.shape and all(np.array_equal(columns[:, k], heldout[:, -1]) for k in range(4))


def test_the_dropped_and_centred_controls_read_a_suffix_and_centre_it(data: np.ndarray) -> None:
    dropped = ControlInput("dropped_early", first=2)
    view = dropped.view(data)
    assert view.shape == (2, 50, 3) and np.shares_memory(view, data) and dropped.n_snapshots(4) == 2
    np.testing.assert_array_equal(dropped.heldout(data.swapaxes(0, 1)), data[2:].swapaxes(0, 1))
    scales, offsets = dropped.normalisation(view)
    np.testing.assert_allclose(scales, snapshot_scales(data)[2:]) and offsets is None
    centred = ControlInput("centred", centred=True)
    scales, offsets = centred.normalisation(centred.view(data))
    means, rms = snapshot_moments(data)
    np.testing.assert_allclose(offsets, means) and np.testing.assert_allclose(scales, rms)
    normalised = (data - offsets[:, None]) / scales[:, None, None]
    np.testing.assert_allclose(np.mean(np.sum(normalised**2, axis=-1), axis=1), 1.0)  # unit RMS norm per snapshot


def test_the_nulls_summary_of_planted_runs(run: RunConfig) -> None:
    """Main norms where every feature is present from the first snapshot on; a repeated control with the same; a
    dropped-early control whose features are the main's, one of them first present at its first snapshot."""
    steps = np.asarray(run.crosscoder_steps)
    t, f = len(steps), 6
    rng = np.random.default_rng(1)
    norms = np.ones((f, t))
    norms[5, :5] = 0.1  # feature 5 emerges at index 5, step 16, in the main crosscoder
    w_last = rng.standard_normal((f, 5))
    emergence = np.where(np.arange(f) == 5, 5, 0)
    main = {
        "steps": steps,
        "norms": norms,
        "alive": np.ones(f, dtype=bool),
        "emergence": emergence,
        "w_dec_last": w_last,
    }
    dropped_norms = np.ones((f, 3))
    controls = {
        "repeated": {"norms": np.ones((f, t)), "fire_counts": np.ones(f), "explained_variance": np.full(t, 0.9),
                     "w_dec_last": w_last, "steps": steps},
        "dropped_early": {"norms": dropped_norms, "fire_counts": np.ones(f), "explained_variance": np.full(3, 0.8),
                          "w_dec_last": w_last[::-1] * 2, "steps": steps[5:]},
    }  # fmt: skip
    settling = {
        "settling": {"settled": True, "final_relative_change": 0.01, "curve": {"step": [], "relative_change": []}}
    }
    out = nulls_summary(run, main, controls, {name: settling for name in controls})
    # five features present everywhere, feature 5 at 3 of 8 snapshots: (5 + 3/8) / 6 at the first under permutation
    assert out["permuted"]["emerged_at_first_mean"]["0.5"] == pytest.approx((5 + 3 / 8) / 6, abs=0.02)
    assert out["repeated"]["emerged_at_first"] == {"0.3": 1.0, "0.5": 1.0, "0.7": 1.0, "0.9": 1.0}
    dropped = out["dropped_early"]
    assert dropped["dropped_steps"] == [0, 1, 2, 4, 8] and dropped["first_step"] == 16
    assert dropped["matched"] == dropped["matched_emerged_at_first"] == 6  # the same directions, reversed
    assert dropped["matched_emerged_at_first_share"] == 1.0
    # five of the six the full crosscoder had at step 0, and feature 5 at step 16: all by the new first step
    assert dropped["same_features_in_full_emerged_by_first_step"] == 1.0
    assert dropped["at_first_features_in_full_emerged_by_first_step"] == 1.0
    assert dropped["same_features_in_full_emergence_histogram"]["0"] == 5
    assert dropped["same_features_in_full_emergence_histogram"]["16"] == 1
    assert out["repeated"]["explained_variance_min"] == 0.9 and out["dropped_early"]["settled"] is True
    quantiles = [out["permuted"][f"emerged_at_first_{q}"]["0.5"] for q in ("q025", "q05", "q95", "q975")]
    assert quantiles == sorted(quantiles)


def test_features_the_full_crosscoder_had_later_count_as_piled_onto_the_new_first_snapshot(run: RunConfig) -> None:
    steps = np.asarray(run.crosscoder_steps)
    f = 4
    w_last = np.eye(f, 5)
    main = {"steps": steps, "norms": np.ones((f, len(steps))), "alive": np.ones(f, dtype=bool),
            "emergence": np.array([0, 0, 7, 7]), "w_dec_last": w_last}  # fmt: skip  # two features emerge at step 48
    dropped = {"norms": np.ones((f, 3)), "fire_counts": np.ones(f), "explained_variance": np.ones(3),
               "w_dec_last": w_last, "steps": steps[5:]}  # fmt: skip  # ... but are present from step 16 here
    settling = {"settling": {"settled": True, "final_relative_change": 0.0, "curve": {}}}
    out = nulls_summary(run, main, {"dropped_early": dropped}, {"dropped_early": settling})["dropped_early"]
    assert out["matched_emerged_at_first_share"] == 1.0 and out["emerged_at_first"]["0.5"] == 1.0
    assert out["same_features_in_full_emerged_by_first_step"] == 0.5  # piled: 1.0 against 0.5
    assert out["at_first_features_in_full_emerged_by_first_step"] == 0.5
