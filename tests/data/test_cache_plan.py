"""The activation cache's plan: disjoint token spans per link, its size on disk, and the hash it is built under."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from saetrack.config import RunConfig, get_preset
from saetrack.data.cache_plan import (
    CacheTooLargeError,
    TokenPlan,
    cache_config_hash,
    check_disk_space,
    plan_tokens,
    planned_cache_bytes,
)
from saetrack.data.tokens import window_order


@pytest.fixture(scope="module")
def run(smoke: RunConfig) -> RunConfig:
    return smoke


def test_plan_gives_every_link_its_own_tokens(run) -> None:
    plan = plan_tokens(run)
    spans = [plan.train[s] for s in run.sae_steps]
    for (start_a, n_a), (start_b, _) in itertools.pairwise(spans):
        assert start_a + n_a == start_b  # consecutive, non-overlapping slices
    first = spans[0][1] * run.cache.context_length
    assert first >= run.chain.first_tokens
    for step in run.baseline_steps:
        assert plan.train[step][1] * run.cache.context_length >= run.chain.baseline_token_budget
    assert plan.analysis[0] + plan.analysis[1] <= plan.heldout[0]  # analysis and held-out sets disjoint


def test_uncacheable_budget_is_refused_with_the_size(tmp_path: Path) -> None:
    paper = get_preset("pythia-160m-l4")
    with pytest.raises(CacheTooLargeError, match=r"needs [\d,.]+ GB .*300,000,000 first-SAE tokens"):
        check_disk_space(paper, tmp_path, 768)
    assert check_disk_space(get_preset("smoke"), tmp_path, 32) < 50e6


def test_smoke_plan_by_hand(run) -> None:
    # contexts of 32 tokens: 32,768 first-SAE tokens = 1024 contexts, 4096 per later link = 128; the two baseline
    # checkpoints (steps 1 and 48) need the first SAE's budget
    plan = plan_tokens(run)
    assert plan == TokenPlan(
        context_length=32,
        analysis=(0, 64),
        heldout=(64, 32),  # 1024 held-out tokens, right after the analysis contexts
        train={0: (0, 1024), 1: (1024, 1024), 2: (2048, 128), 4: (2176, 128), 8: (2304, 128), 16: (2432, 128),
               32: (2560, 128), 48: (2688, 1024)},
    )  # fmt: skip
    assert plan.to_dict()["train"]["48"] == [2688, 1024] and plan.to_dict()["heldout"] == [64, 32]
    # (96 analysis + held-out contexts at 8 checkpoints + 3712 training contexts) x 32 tokens x d 32 x 4 bytes
    assert planned_cache_bytes(run, 32) == (96 * 8 + 3712) * 32 * 32 * 4 == 18_350_080
    assert planned_cache_bytes(run.with_overrides({"cache.dtype": "float16"}), 32) == 18_350_080 // 2
    assert planned_cache_bytes(run.with_overrides({"cache.dtype": "bfloat16"}), 32) == 18_350_080  # kept as float32


def test_cache_hash_follows_what_the_cache_depends_on(run) -> None:
    assert cache_config_hash(run) == cache_config_hash(get_preset("smoke"))
    for changed in ({"cache.layer": 0}, {"chain.link_tokens": 8192}, {"seed": 1}, {"corpus.vocab_size": 300},
                    {"chain.seed": 1}):  # fmt: skip
        assert cache_config_hash(run.with_overrides(changed)) != cache_config_hash(run), changed
    for unchanged in ({"chain.l1_coefficient": 1.0}, {"formation.top_k": 10}):
        assert cache_config_hash(run.with_overrides(unchanged)) == cache_config_hash(run), unchanged


def test_disk_check_uses_the_free_space(run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("shutil.disk_usage", lambda _: usage(0, 0, 20_000_000))  # 90%: 18,000,000 bytes usable
    with pytest.raises(CacheTooLargeError, match=r"needs 0\.0 GB .*only 0\.0 GB are free"):
        check_disk_space(run, tmp_path, 32)
    monkeypatch.setattr("shutil.disk_usage", lambda _: usage(0, 0, 21_000_000))
    assert check_disk_space(run, tmp_path, 32) == 18_350_080


def test_the_final_checkpoint_holds_the_noise_floor_links_fresh_rows(run) -> None:
    # no baseline at the final step: its slice is the final link's budget plus one per noise-floor link
    no_baselines = run.with_overrides({"chain.baseline": [], "drift.noise_floor_links": 3})
    plan = plan_tokens(no_baselines)
    assert plan.train[48][1] == (1 + 3) * 128 and plan.train[32][1] == 128
    assert plan_tokens(no_baselines.with_overrides({"drift.noise_floor_links": 0})).train[48][1] == 128


def test_the_plan_draws_its_windows_in_the_chain_seeds_order(run) -> None:
    assert plan_tokens(run).order_seed == run.chain_seed == run.seed == 0
    assert plan_tokens(run.with_overrides({"chain.seed": 3})).order_seed == 3
    assert plan_tokens(run.with_overrides({"seed": 2})).order_seed == 2  # no chain seed: the run seed
    plan = plan_tokens(run)
    stream = np.arange(64 * 32)  # 64 windows of 32 tokens, token id = position
    cut = plan.contexts(stream, (3, 5))
    assert cut.shape == (5, 32) and cut.dtype == np.int64
    windows = cut[:, 0] // 32
    np.testing.assert_array_equal(windows, window_order(64, 0)[3:8])
    np.testing.assert_array_equal(cut, windows[:, None] * 32 + np.arange(32))


def test_under_the_continuity_rule_every_link_slice_holds_a_first_links_budget(run) -> None:
    # any link may restart the chain (trained as a first link), so each slice reserves first_tokens (1024 contexts);
    # the noise floor's fresh rows follow every row the final link may read
    ruled = run.with_overrides({"chain.restart_below": 0.0, "chain.baseline": [], "drift.noise_floor_links": 2})
    plan = plan_tokens(ruled)
    assert [plan.train[s][1] for s in ruled.sae_steps] == [1024] * 7 + [1024 + 2 * 128]
    assert plan.train[1] == (1024, 1024) and plan.train[2] == (2048, 1024)
    assert cache_config_hash(ruled) != cache_config_hash(ruled.with_overrides({"chain.restart_below": None}))
