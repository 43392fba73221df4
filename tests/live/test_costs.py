"""The per-link cost records of a watched run: wall time, tokens and the watcher's peak memory."""

from __future__ import annotations

import resource
from pathlib import Path

import numpy as np

from saetrack.live.costs import COSTS_FILE, link_cost, peak_host_bytes, read_costs, record_cost, tokens_spent


def test_peak_host_bytes_is_this_processes_resident_peak_and_grows_with_an_allocation() -> None:
    before = peak_host_bytes()
    assert before == resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports kilobytes
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    assert peak_host_bytes() >= block.nbytes and block.sum() == block.size


def test_a_cost_record_says_seconds_tokens_and_memory_on_the_cpu() -> None:
    cost = link_cost(12.34567, 50_000, 66_384, "cpu")
    assert cost["seconds"] == 12.346 and cost["sae_tokens"] == 50_000 and cost["forward_tokens"] == 66_384
    assert cost["peak_host_bytes"] > 0 and cost["peak_device_bytes"] is None


def test_records_merge_by_step_so_a_restarted_watcher_keeps_the_earlier_links(tmp_path: Path) -> None:
    assert read_costs(tmp_path) == {}
    record_cost(tmp_path, 8, {"seconds": 2.0})
    record_cost(tmp_path, 0, {"seconds": 60.0})
    everything = record_cost(tmp_path / ".." / tmp_path.name, 8, {"seconds": 3.0})  # replaced, not appended
    assert everything == {0: {"seconds": 60.0}, 8: {"seconds": 3.0}} == read_costs(tmp_path)
    assert list(everything) == [0, 8] and (tmp_path / COSTS_FILE).is_file()


def test_tokens_spent_counts_a_thrown_away_link_and_every_held_out_pass() -> None:
    first = {"training": {"n_tokens": 1000}}  # no rule: the training tokens and one evaluation
    assert tokens_spent(first, 100) == (1000, 1100)
    kept = {"training": {"n_tokens": 50}, "carried_explained_variance": 0.9, "previous_l0": 30.0, "continued_l0": 31.0,
            "continued_tokens": None}  # fmt: skip
    assert tokens_spent(kept, 100) == (50, 50 + 3 * 100)  # two readings and the evaluation
    by_l0 = {"training": {"n_tokens": 1000}, "carried_explained_variance": None, "previous_l0": 30.0,
             "continued_l0": 128.0, "continued_tokens": 50, "restart_cause": "l0"}  # fmt: skip
    assert tokens_spent(by_l0, 100) == (1050, 1050 + 3 * 100)  # one reading, two evaluations
