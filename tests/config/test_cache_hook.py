"""``cache.hook``: which activation of the block the SAE reads; left out of the config hashes at its default."""

from __future__ import annotations

import pytest

from saetrack.config import ConfigError, get_preset
from saetrack.config.data import CACHE_HASH_DEFAULTS, CACHE_HOOKS, CacheConfig, hashed_cache_section
from saetrack.data.cache_plan import cache_config_hash


def test_hook_names() -> None:
    assert CacheConfig().hook == "resid_pre" and CacheConfig(layer=3).hook_name == "blocks.3.hook_resid_pre"
    names = [CacheConfig(layer=1, hook=hook).hook_name for hook in CACHE_HOOKS]  # type: ignore[arg-type]
    assert names == [
        "blocks.1.hook_resid_pre",
        "blocks.1.hook_resid_mid",
        "blocks.1.hook_resid_post",
        "blocks.1.hook_attn_out",
        "blocks.1.hook_mlp_out",
    ]
    with pytest.raises(ConfigError, match=r"cache\.hook = 'resid_final' is invalid"):
        CacheConfig(hook="resid_final")  # type: ignore[arg-type]


def test_the_default_hook_leaves_every_hash_unchanged() -> None:
    run = get_preset("smoke")
    section = run.to_dict()["cache"]
    assert section["hook"] == "resid_pre" and CACHE_HASH_DEFAULTS["hook"] == "resid_pre"
    assert "hook" not in hashed_cache_section(section)
    moved = run.with_overrides({"cache.hook": "mlp_out"})
    assert moved.cache.hook_name == "blocks.1.hook_mlp_out"
    assert hashed_cache_section(moved.to_dict()["cache"])["hook"] == "mlp_out"
    assert cache_config_hash(moved) != cache_config_hash(run)
    assert cache_config_hash(run.with_overrides({"cache.hook": "resid_pre"})) == cache_config_hash(run)


def test_the_layer_is_checked_for_every_hook() -> None:
    with pytest.raises(ConfigError, match=r"cache\.layer = 2 is invalid: must lie in \[0, 2\)"):
        get_preset("smoke").with_overrides({"cache.hook": "resid_post", "cache.layer": 2})
