"""The chain section: schedule and baselines, token budgets per link, the allowed choices."""

from __future__ import annotations

import dataclasses

import pytest

from saetrack.config import ChainConfig, ConfigError, config_hash
from saetrack.config.chain import (
    CHAIN_HASH_DEFAULTS,
    COMPARISON_ONLY_FIELDS,
    LINK_ARCHITECTURES,
    MATMUL_PRECISIONS,
    training_fields,
)


def test_baseline_must_be_in_schedule() -> None:
    with pytest.raises(ConfigError, match=r"chain\.baseline"):
        ChainConfig(schedule=(0, 1, 2), baseline=(5,))


def test_token_budgets_of_links_and_baselines() -> None:
    chain = ChainConfig(schedule=(0, 2, 4), first_tokens=1000, link_tokens=50)
    assert [chain.tokens_for(p) for p in range(3)] == [1000, 50, 50]
    assert chain.baseline_token_budget == 1000  # default: as many tokens as the first SAE
    assert ChainConfig(schedule=(0,), baseline_tokens=300).baseline_token_budget == 300


def test_the_continuity_rule_reserves_the_first_links_budget_for_every_link() -> None:
    chain = ChainConfig(schedule=(0, 2, 4), first_tokens=1000, link_tokens=50)
    assert [chain.reserved_tokens_for(p) for p in range(3)] == [1000, 50, 50]  # the rule off: the budgets
    ruled = dataclasses.replace(chain, restart_below=0.0)
    assert [ruled.reserved_tokens_for(p) for p in range(3)] == [1000, 1000, 1000]
    assert [ruled.tokens_for(p) for p in range(3)] == [1000, 50, 50]  # a link that continues trains its own budget
    assert "restart_below" not in training_fields(dataclasses.asdict(chain))  # off: committed hashes unchanged
    assert training_fields(dataclasses.asdict(ruled))["restart_below"] == 0.0
    by_outcome = dataclasses.replace(chain, restart_l0_ratio=2.0)  # the outcome rule reserves the same
    assert by_outcome.may_restart and not chain.may_restart
    assert [by_outcome.reserved_tokens_for(p) for p in range(3)] == [1000, 1000, 1000]
    assert "restart_l0_ratio" not in training_fields(dataclasses.asdict(chain))
    assert training_fields(dataclasses.asdict(by_outcome))["restart_l0_ratio"] == 2.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"schedule": ()}, r"chain\.schedule = \(\) .*at least one"),
        ({"schedule": (0,), "restart_below": float("nan")}, r"chain\.restart_below = nan .*finite"),
        ({"schedule": (0,), "restart_l0_ratio": 1.0}, r"chain\.restart_l0_ratio = 1\.0 .*above 1"),
        ({"schedule": (0,), "restart_l0_ratio": float("inf")}, r"chain\.restart_l0_ratio = inf .*finite"),
        ({"schedule": (0,), "restart_below": float("-inf")}, r"chain\.restart_below = -inf .*finite"),
        ({"schedule": (0, 2, 1)}, r"strictly ascending"),
        ({"schedule": (0, 0, 1)}, r"strictly ascending"),
        ({"schedule": (-1, 0)}, r"non-negative"),
        ({"schedule": (0,), "l1_scale": "rms"}, r"chain\.l1_scale = 'rms'"),
        ({"schedule": (0,), "decoder_norm": "l2"}, r"chain\.decoder_norm = 'l2' .*Eq\. 5"),
        ({"schedule": (0,), "optimizer_policy": "reuse"}, r"chain\.optimizer_policy"),
        ({"schedule": (0,), "warmup_steps_link": -1}, r"chain\.warmup_steps_link = -1 .*>= 0"),
        ({"schedule": (0,), "baseline_tokens": 0}, r"chain\.baseline_tokens = 0 .*> 0"),
        ({"schedule": (0,), "batch_size": 0}, r"chain\.batch_size = 0 .*> 0"),
        ({"schedule": (0,), "matmul_precision": "fp16"}, r"chain\.matmul_precision = 'fp16' .*'fp32', 'tf32'"),
    ],
)
def test_invalid_values_are_named(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ChainConfig(**kwargs)  # type: ignore[arg-type]


def test_defaults_are_the_papers_choices() -> None:
    chain = ChainConfig(schedule=(0,))
    assert (chain.decoder_norm, chain.l1_scale, chain.optimizer_policy) == ("unit", "activation_norm", "fresh")
    assert chain.apply_b_dec_to_input and chain.l1_coefficient == 8e-5


def test_seed_control_picks_baselines_back_from_the_last() -> None:
    def picks(k: int | None) -> tuple[int, ...]:
        return ChainConfig(schedule=tuple(range(10)), baseline=(1, 3, 5, 7, 9), seed_control=k).seed_control_indices

    assert picks(None) == (1, 3, 5, 7, 9)  # every baseline checkpoint
    assert ChainConfig(schedule=tuple(range(10)), baseline=(1, 3, 5, 7, 9)).seed_control_indices == (5, 9)  # default
    assert picks(0) == ()
    assert picks(1) == (9,)
    assert picks(2) == (5, 9)  # the middle and the last
    assert picks(3) == (3, 5, 9)
    assert picks(5) == picks(6) == (1, 3, 5, 7, 9)  # at most every baseline checkpoint
    assert ChainConfig(schedule=(0, 1)).seed_control_indices == ()  # no baselines, nothing to repeat
    with pytest.raises(ConfigError, match=r"chain\.seed_control = -1 is invalid: must be >= 0"):
        picks(-1)


def test_training_fields_leave_out_the_comparison_only_fields() -> None:
    chain = {"link_tokens": 10, "seed_control": 2, "baseline": [1]}
    assert training_fields(chain) == {"link_tokens": 10, "baseline": [1]}
    assert COMPARISON_ONLY_FIELDS == ("seed_control",)


def test_matmul_precision_enters_the_chain_hash_only_when_not_fp32() -> None:
    chain = dataclasses.asdict(ChainConfig(schedule=(0, 1)))
    assert chain["matmul_precision"] == "fp32" and MATMUL_PRECISIONS == ("fp32", "tf32", "bf16")
    assert CHAIN_HASH_DEFAULTS == {
        "matmul_precision": "fp32",
        "target_l0": None,
        "calibration_tokens": 262_144,
        "calibration_full_runs": 4,
        "architecture": "standard",
        "k": None,
        "jumprelu_init_threshold": 0.01,
        "jumprelu_bandwidth": 0.05,
        "restart_below": None,
        "restart_l0_ratio": None,
    }
    # at the defaults the hashed section is the one of before the fields existed: existing runs stay current
    before_the_field = {k: v for k, v in chain.items() if k not in CHAIN_HASH_DEFAULTS}
    assert config_hash(training_fields(chain)) == config_hash(training_fields(before_the_field))
    for precision in ("tf32", "bf16"):
        other = dataclasses.asdict(ChainConfig(schedule=(0, 1), matmul_precision=precision))
        assert training_fields(other)["matmul_precision"] == precision
        assert config_hash(training_fields(other)) != config_hash(training_fields(chain))


def test_a_target_l0_is_positive_and_enters_the_hash_only_when_set() -> None:
    chain = dataclasses.asdict(ChainConfig(schedule=(0, 1)))
    assert chain["target_l0"] is None and "target_l0" not in training_fields(chain)
    with pytest.raises(ConfigError, match=r"chain\.target_l0 = 0"):
        ChainConfig(schedule=(0,), target_l0=0)
    with pytest.raises(ConfigError, match=r"chain\.calibration_tokens"):
        ChainConfig(schedule=(0,), calibration_tokens=0)
    target = dataclasses.asdict(ChainConfig(schedule=(0, 1), target_l0=16.0))
    assert training_fields(target)["target_l0"] == 16.0
    assert config_hash(training_fields(target)) != config_hash(training_fields(chain))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"architecture": "gated"}, r"chain\.architecture = 'gated' .*'standard', 'topk', 'batchtopk', 'jumprelu'"),
        ({"k": 8}, r"chain\.k = 8 .*only for architecture 'topk' or 'batchtopk' \(not 'standard'\)"),
        ({"architecture": "topk"}, r"chain\.k = None .*needs k, or target_l0"),
        ({"architecture": "topk", "k": 0}, r"chain\.k = 0 .*an integer >= 1"),
        ({"architecture": "batchtopk", "k": 2.5}, r"chain\.k = 2\.5 .*an integer >= 1"),
        ({"architecture": "topk", "k": 8, "target_l0": 10.0}, r"chain\.k = 8 .*must equal round\(target_l0\) = 10"),
        ({"architecture": "topk", "target_l0": 0.4}, r"chain\.target_l0 = 0\.4 .*k = round\(target_l0\) must be >= 1"),
        ({"architecture": "jumprelu", "jumprelu_bandwidth": 0.0}, r"chain\.jumprelu_bandwidth = 0\.0 .*> 0"),
        ({"architecture": "jumprelu", "jumprelu_init_threshold": -1.0}, r"chain\.jumprelu_init_threshold = -1\.0"),
        (
            {"architecture": "jumprelu", "matmul_precision": "bf16"},
            r"chain\.matmul_precision = 'bf16' .*'standard' only",
        ),
    ],
)
def test_invalid_architecture_fields_are_named(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ChainConfig(schedule=(0,), **kwargs)  # type: ignore[arg-type]


def test_k_of_topk_comes_from_k_or_the_target_l0() -> None:
    assert LINK_ARCHITECTURES == ("standard", "topk", "batchtopk", "jumprelu")
    assert ChainConfig(schedule=(0,), architecture="topk", k=16).topk_k == 16
    by_target = ChainConfig(schedule=(0,), architecture="batchtopk", target_l0=31.6)
    assert by_target.topk_k == 32 and not by_target.searches_coefficient  # k = round(target), no search
    assert ChainConfig(schedule=(0,), architecture="topk", k=32, target_l0=31.6).topk_k == 32
    assert ChainConfig(schedule=(0,), target_l0=16.0).searches_coefficient  # the L1 lambda is searched
    assert ChainConfig(schedule=(0,), architecture="jumprelu", target_l0=16.0).searches_coefficient  # L0 coefficient
    assert ChainConfig(schedule=(0,)).topk_k is None and not ChainConfig(schedule=(0,)).searches_coefficient


def test_architecture_fields_enter_the_hash_only_away_from_their_defaults() -> None:
    chain = dataclasses.asdict(ChainConfig(schedule=(0, 1)))
    assert chain["architecture"] == "standard"
    before_the_fields = {k: v for k, v in chain.items() if k not in CHAIN_HASH_DEFAULTS}
    assert config_hash(training_fields(chain)) == config_hash(training_fields(before_the_fields))
    hashes = {config_hash(training_fields(chain))}
    for kwargs in (
        {"architecture": "topk", "k": 8},
        {"architecture": "batchtopk", "k": 8},
        {"architecture": "jumprelu"},
        {"architecture": "jumprelu", "jumprelu_bandwidth": 0.1},
        {"architecture": "jumprelu", "jumprelu_init_threshold": 0.1},
    ):
        hashes.add(config_hash(training_fields(dataclasses.asdict(ChainConfig(schedule=(0, 1), **kwargs)))))
    assert len(hashes) == 6  # every choice is a different chain


def test_calibration_full_runs_must_not_be_negative() -> None:
    assert ChainConfig(schedule=(0,), calibration_full_runs=0).calibration_full_runs == 0  # short runs only
    with pytest.raises(ConfigError, match="calibration_full_runs"):
        ChainConfig(schedule=(0,), calibration_full_runs=-1)
