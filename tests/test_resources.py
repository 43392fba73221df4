"""Whether a plan fits the machine: the refusal with numbers, the --plan table, the machine's limits."""

from __future__ import annotations

import pytest

from saetrack.config import get_preset
from saetrack.resources import (
    GB,
    Rates,
    ResourceError,
    check_fits,
    format_plan,
    human_time,
    machine_limits,
    plan_run,
)

RATES = Rates("cpu", sae_flops=1e11, forward_flops=1e11)


def test_a_run_that_does_not_fit_is_refused_with_its_numbers() -> None:
    stages = [s for s in plan_run(get_preset("pythia-1.4b-l3"), RATES) if s.owner not in ("crosscoder", "scale")]
    with pytest.raises(ResourceError, match=r"disk: the run needs 1\d\d\.\d GB, 20\.0 GB are free.*--ignore-resources"):
        check_fits(stages, {"disk": int(20 * GB), "host": int(256 * GB)})
    check_fits(stages, {"disk": int(1000 * GB), "host": int(256 * GB), "device": int(80 * GB)})
    with pytest.raises(ResourceError, match=r"formation: needs \d+\.\d GB of host memory, the machine has 8\.0 GB"):
        check_fits(stages, {"disk": int(1000 * GB), "host": int(8 * GB)})


def test_the_plan_table_lists_every_line_with_host_and_device_peaks() -> None:
    run = get_preset("pythia-1.4b-l3")
    stages = plan_run(run, RATES)
    text = format_plan(run, stages, RATES, {"disk": int(20 * GB)})
    for line in stages:
        assert any(row.startswith(line.stage) for row in text.splitlines()), line.stage
    assert "host GB" in text and "device GB" in text and "GFLOP/s" in text


def test_a_plan_that_fits_says_so() -> None:
    run = get_preset("nano")
    text = format_plan(run, plan_run(run, RATES), RATES, {"disk": int(1000 * GB), "host": int(256 * GB)})
    assert "the run fits this machine" in text


def test_machine_limits_read_disk_and_host_memory(tmp_path) -> None:
    limits = machine_limits(tmp_path / "not" / "yet", "cpu")
    assert limits["disk"] > 0 and limits["host"] > 0 and "device" not in limits


def test_human_time_reads_seconds_minutes_then_hours() -> None:
    assert [human_time(s) for s in (5, 119, 125, 7199, 7200, 36000)] == [
        "5 s", "119 s", "2 min", "120 min", "2.0 h", "10.0 h"
    ]  # fmt: skip
