"""A watched run trains one link per new checkpoint, keeps earlier links, and equals the offline chain bit for bit."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from saetrack import store
from saetrack.config.run import RunConfig
from saetrack.data.cache_plan import plan_tokens
from saetrack.data.corpus import prepare_corpus
from saetrack.live.costs import read_costs
from saetrack.live.follow import RUN_CONFIG_FILE
from saetrack.stages.cache import cache_activations
from saetrack.stages.chain import chain_config_hash, train_chain
from tests.live.conftest import UPDATES


def test_each_update_trains_only_the_new_links_and_keeps_the_earlier_ones(watched_smoke: dict) -> None:
    run_dir, lines, weights = watched_smoke["run_dir"], watched_smoke["lines"], watched_smoke["weights"]
    assert [line.split(" (")[0] for line in lines] == [f"[watch] step {s}" for s in (0, 1, 2, 4, 8)]
    for before, after in itertools.pairwise(weights):
        assert all(after[s] == before[s] for s in before)  # kept, not retrained
    manifest = store.read_manifest(run_dir / "chain" / "step0")
    run = watched_smoke["run"]
    assert manifest["config_hash"] == chain_config_hash(run) and len(manifest["adopted_from"]) == len(UPDATES) - 1
    assert store.read_manifest(run_dir / "chain")["steps"] == [0, 1, 2, 4, 8]
    config = manifest["config"]
    assert (config["model_architecture"], config["hook_name"]) == ("gpt_neox", "blocks.1.hook_resid_pre")


def test_every_later_link_records_the_continuity_readings_and_restarts_exactly_by_the_rule(watched_smoke: dict) -> None:
    run, run_dir = watched_smoke["run"], watched_smoke["run_dir"]
    assert run.chain.restart_below == 0.0  # opted into (off by default)
    assert run.chain.restart_l0_ratio == 2.0  # the watch's default
    links = [store.read_manifest(run_dir / "chain" / f"step{s}")["link"] for s in run.sae_steps]
    assert links[0]["carried_explained_variance"] is None and not links[0]["restarted"]
    for previous, link in itertools.pairwise(links):
        if link["carried_explained_variance"] <= 0.0:  # restarted before training: nothing continued or compared
            assert link["continued_l0"] is None is link["previous_l0"] and link["restart_cause"] == "carried"
        else:
            assert link["previous_l0"] == previous["metrics"]["l0"]  # the previous link's recorded held-out L0
            ratio = link["continued_l0"] / link["previous_l0"]
            assert (link["restart_cause"] == "l0") == (not 0.5 <= ratio <= 2.0)
            if link["restart_cause"] is None:
                assert link["continued_l0"] == link["metrics"]["l0"]
        assert link["restarted"] == (link["restart_cause"] is not None)
        assert (link["initialised_from"] is None) == link["restarted"]
        budget = run.chain.first_tokens if link["restarted"] else run.chain.link_tokens
        assert link["training"]["n_tokens"] == budget


def test_the_run_config_is_written_and_reads_back(watched_smoke: dict) -> None:
    data = json.loads((watched_smoke["run_dir"] / RUN_CONFIG_FILE).read_text())
    assert RunConfig.from_dict(data) == watched_smoke["run"]


def test_the_watched_chain_equals_the_offline_chain_of_its_final_config(watched_smoke: dict, tmp_path: Path) -> None:
    run = watched_smoke["run"]
    prepare_corpus(run, tmp_path, progress=False)
    cache_activations(run, tmp_path, progress=False)
    train_chain(run, tmp_path, progress=False)
    for step, live_bytes in watched_smoke["weights"][-1].items():
        assert (tmp_path / "chain" / f"step{step}" / "sae_weights.safetensors").read_bytes() == live_bytes, step


def test_every_link_records_its_cost_and_the_report_shows_it(watched_smoke: dict) -> None:
    run_dir, run = watched_smoke["run_dir"], watched_smoke["run"]
    costs = read_costs(run_dir / "live")
    assert sorted(costs) == [0, 1, 2, 4, 8]  # one record per link, kept across the three updates
    heldout = plan_tokens(run).heldout[1] * run.cache.context_length
    for step, cost in costs.items():
        link = store.read_manifest(run_dir / "chain" / f"step{step}")["link"]
        chain, position = run.chain, run.sae_steps.index(step)
        if position == 0:  # the first link: its budget and one evaluation, no continuity reading
            tokens, passes = chain.first_tokens, 1
        elif link["restart_cause"] == "carried":  # the carried reading, then a first link
            tokens, passes = chain.first_tokens, 2
        elif link["restart_cause"] == "l0":  # both readings, the continued link thrown away, then a first link
            tokens, passes = chain.first_tokens + link["continued_tokens"], 4
            assert link["continued_tokens"] == chain.link_tokens
        else:  # both readings and the continued link's evaluation
            tokens, passes = chain.link_tokens, 3
        assert cost["sae_tokens"] == tokens and cost["forward_tokens"] == tokens + passes * heldout
        assert cost["seconds"] > 0 and cost["peak_host_bytes"] > 0 and cost["peak_device_bytes"] is None
    status = json.loads((run_dir / "live" / "status.json").read_text())
    assert (
        status["costs"]["8"] == costs[8] and "peak memory so far: host" in (run_dir / "live" / "index.html").read_text()
    )
