"""A dead or saturated link is an error naming the fix (the rule on known numbers, and a chain that dies)."""

from __future__ import annotations

from pathlib import Path

import pytest

from saetrack.config import get_preset
from saetrack.stages.chain import train_chain
from saetrack.stages.chain.health import LinkHealthError, check_link_health, link_health


def _metrics(l0: float, dead: float, ev: float) -> dict[str, float]:
    return {"l0": l0, "dead_fraction": dead, "explained_variance": ev}


@pytest.mark.parametrize(
    ("metrics", "verdict"),
    [
        (_metrics(0.9, 0.1, 0.5), "dead"),  # fewer than one feature per token
        (_metrics(1.2, 0.8, -0.1), "dead"),  # the new user's case: most features dead, worse than the mean
        (_metrics(1.2, 0.8, 0.1), None),  # many dead features but a useful reconstruction
        (_metrics(30.0, 0.1, -0.05), None),  # a poor link is not a dead one
        (_metrics(33.0, 0.0, 0.9), "saturated"),  # more features per token than dimensions (d_in 32)
        (_metrics(32.0, 0.0, 0.9), None),
    ],
)
def test_the_rule_on_known_numbers(metrics: dict[str, float], verdict: str | None) -> None:
    assert link_health(metrics, d_in=32) == verdict


def test_the_message_names_the_link_its_numbers_and_the_fix() -> None:
    with pytest.raises(LinkHealthError) as raised:
        strict = get_preset("smoke", {"chain.link_check": "error"})
        check_link_health(strict, _metrics(0.5, 0.8, -0.12), 32, "link 2/8 (step 1)")
    message = str(raised.value)
    assert message.startswith("link 2/8 (step 1) is dead: explained variance -0.120, L0 0.50, dead 80%")
    assert "--set chain.target_l0=8" in message and "lower chain.l1_coefficient" in message
    calibrated = get_preset("smoke", {"chain.target_l0": 8.0, "chain.link_check": "error"})
    with pytest.raises(LinkHealthError, match=r"calibrated to L0 8 .* lower chain.target_l0"):
        check_link_health(calibrated, _metrics(40.0, 0.0, 0.5), 32, "link 5/8 (step 8)")
    check_link_health(get_preset("smoke", {"chain.link_check": "error"}), _metrics(10.0, 0.0, 0.5), 32, "fine")


def test_a_chain_whose_penalty_kills_its_first_link_stops_there(smoke_run_dir: Path, tmp_path: Path) -> None:
    run = get_preset("smoke", {"chain.l1_coefficient": 10.0, "chain.link_check": "error"})
    for name in ("corpus", "model", "cache"):
        (tmp_path / name).symlink_to(smoke_run_dir / name)
    with pytest.raises(LinkHealthError, match=r"link 1/8 \(step 0\) is dead"):
        train_chain(run, tmp_path, progress=False)
    assert not (tmp_path / "chain" / "step0" / "manifest.json").exists()  # never saved as finished


def test_link_check_warn_goes_on_and_is_not_hashed() -> None:
    from saetrack.stages.chain import chain_config_hash

    warn = get_preset("smoke")
    assert warn.chain.link_check == "warn"
    assert chain_config_hash(warn) == chain_config_hash(warn.with_overrides({"chain.link_check": "error"}))
    with pytest.warns(UserWarning, match="saturated.*the chain goes on"):
        check_link_health(warn, _metrics(40.0, 0.0, 0.5), 32, "link 5/8 (step 8)")
