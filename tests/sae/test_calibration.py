"""Calibrating the sparsity penalty to a target L0: the search on known L0(λ) curves, its errors, and real short SAE
runs on synthetic activations reaching the target."""

from __future__ import annotations

import math

import numpy as np
import pytest

from saetrack.config.chain import ChainConfig
from saetrack.sae.calibration import (
    CalibrationError,
    calibrate_coefficient,
    log_slope,
    refine_coefficient,
    short_run_l0,
)
from saetrack.sae.training import synthetic_activations


def _curve(scale: float, d_sae: int = 512) -> tuple[list[float], object]:
    """L0(λ) = d_sae / (1 + λ / scale): falls from d_sae, equals d_sae / 2 at λ = scale; records the λ asked for."""
    asked: list[float] = []

    def l0_at(coefficient: float) -> float:
        asked.append(coefficient)
        return d_sae / (1.0 + coefficient / scale)

    return asked, l0_at


@pytest.mark.parametrize("start", [1e-6, 1e-3, 1.0, 1e3])
def test_the_search_brackets_from_either_side_and_lands_within_the_tolerance(start: float) -> None:
    asked, l0_at = _curve(scale=0.02)
    result = calibrate_coefficient(l0_at, target_l0=32.0, start=start, tolerance=0.05)
    exact = 0.02 * (512 / 32 - 1)  # L0(λ) = 32 exactly here
    assert abs(result.l0 / 32 - 1) <= 0.05 and result.l0 == pytest.approx(512 / (1 + result.coefficient / 0.02))
    assert math.isclose(result.coefficient, exact, rel_tol=0.06)
    assert [c for c, _ in result.runs] == asked and len(asked) <= 16 and result.target_l0 == 32.0


def test_a_start_already_on_target_costs_one_run() -> None:
    asked, l0_at = _curve(scale=1.0)
    result = calibrate_coefficient(l0_at, target_l0=256.0, start=1.0)
    assert asked == [1.0] and result.coefficient == 1.0 and result.l0 == 256.0


def test_an_sae_that_dies_or_never_sparsifies_is_an_error_naming_the_fix() -> None:
    with pytest.raises(CalibrationError, match="the SAE dies"):
        calibrate_coefficient(lambda c: 0.0, target_l0=20.0, start=1.0, max_runs=6)
    with pytest.raises(CalibrationError, match="too few tokens to sparsify"):
        calibrate_coefficient(lambda c: 400.0, target_l0=20.0, start=1.0, max_runs=6)
    with pytest.raises(CalibrationError, match="did not land within the tolerance"):  # a step: no λ gives L0 20
        calibrate_coefficient(lambda c: 10.0 if c > 1.5 else 30.0, target_l0=20.0, start=1.0, max_runs=10)
    with pytest.raises(ValueError, match="must be > 0"):
        calibrate_coefficient(lambda c: 1.0, target_l0=0.0, start=1.0)


def test_short_runs_on_synthetic_activations_reach_the_target_l0() -> None:
    x, _ = synthetic_activations(18432, 16, n_features=64, firing_probability=0.05, seed=0)
    chain = ChainConfig(schedule=(0,), expansion_factor=4, lr_first=3e-3, warmup_steps_first=10, batch_size=256)
    l0_at = short_run_l0(x[:16384], x[16384:], chain, to_sae_l1=lambda c: c, n_tokens=49152, seed=0)
    first, again = l0_at(1e-3), l0_at(1e-3)
    assert first == again  # a fresh SAE from the same seed on the same tokens: L0(λ) is a function
    assert l0_at(1.0) < first  # a stronger penalty, fewer active features
    result = calibrate_coefficient(l0_at, target_l0=8.0, start=1e-2, tolerance=0.2)
    assert abs(result.l0 / 8.0 - 1) <= 0.2
    assert result.l0 == pytest.approx(l0_at(result.coefficient))
    assert np.isfinite(result.coefficient) and result.coefficient > 0


def test_the_log_slope_is_the_local_power_law_between_the_runs_around_the_target() -> None:
    runs = [(1e-3, 0.5), (2.5e-4, 4.0), (6.25e-5, 27.0), (1.5625e-5, 156.0), (3.125e-5, 70.0), (4.4e-5, 45.0)]
    expected = (math.log(45.0) - math.log(27.0)) / (math.log(4.4e-5) - math.log(6.25e-5))  # 45 above 32, 27 below
    assert log_slope(runs, 32.0) == pytest.approx(expected) and expected < 0
    assert log_slope([(1.0, 50.0), (2.0, 40.0)], 32.0) == -1.0  # not bracketed: the plain inverse law


@pytest.mark.parametrize("shift", [0.2, 1.0, 3.0, 8.0])
def test_refining_at_the_full_budget_lands_on_the_target_in_a_few_runs(shift: float) -> None:
    # the full-length runs are sparser than the short ones by a factor `shift` at every λ: L0 = shift^-1 * 8 / λ^0.7
    asked: list[float] = []

    def full_l0(coefficient: float) -> float:
        asked.append(coefficient)
        return 8.0 / shift * coefficient**-0.7

    short = (8.0 / 32.0) ** (1 / 0.7)  # the short runs' λ for L0 32
    result = refine_coefficient(full_l0, 32.0, short, slope=-1.0, tolerance=0.1, max_runs=4)
    assert abs(result.l0 / 32 - 1) <= 0.1 and [c for c, _ in result.runs] == asked and len(asked) <= 4
    assert asked[0] == short  # the short runs' λ itself first, not a rounding of it
    assert result.coefficient == asked[-1] and result.l0 == pytest.approx(full_l0(result.coefficient))


def test_a_refinement_that_runs_out_returns_the_nearest_run_and_a_dead_run_weakens_the_penalty() -> None:
    values = iter([0.0, 22.0, 50.0])
    result = refine_coefficient(lambda c: next(values), 32.0, 1e-3, slope=-1.0, tolerance=0.1, max_runs=3)
    assert [round(c / 1e-3, 6) for c, _ in result.runs][:2] == [1.0, 0.25]  # dead at 1e-3: a quarter of it next
    assert result.l0 == 22.0  # 32/22 is nearer 1 than 50/32, and nothing landed within 10%
    with pytest.raises(ValueError, match="slope < 0"):
        refine_coefficient(lambda c: 1.0, 32.0, 1e-3, slope=0.5)
