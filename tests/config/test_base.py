"""Validation helpers and the config hash every section and stage uses."""

from __future__ import annotations

import hashlib
import json

import pytest

from saetrack.config import PRESETS, ConfigError, config_hash, get_preset
from saetrack.config.base import fail, require_positive


@pytest.mark.parametrize(
    "field", ["chain.link_tokens", "chain.l1_coefficient", "suite.d_model", "cache.heldout_tokens"]
)
def test_non_positive_sizes_are_rejected(field: str) -> None:
    with pytest.raises(ConfigError, match=rf"{field} = 0 is invalid: must be > 0"):
        get_preset("nano", {field: 0})


def test_config_hash_is_16_hex_of_the_canonical_json() -> None:
    payload = {"b": [1, 2], "a": {"y": 0.5, "x": None}}
    expected = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    assert config_hash(payload) == expected
    assert config_hash({"a": {"x": None, "y": 0.5}, "b": (1, 2)}) == expected  # key order and tuples do not matter
    assert config_hash({"b": [2, 1], "a": {"y": 0.5, "x": None}}) != expected
    assert len(expected) == 16 and int(expected, 16) >= 0


def test_fail_and_require_positive_name_field_value_and_rule() -> None:
    with pytest.raises(ConfigError, match=r"^chain\.decoder_norm = 'odd' is invalid: one of 'unit'\.$"):
        fail("chain", "decoder_norm", "odd", "one of 'unit'")
    require_positive("suite", {"a": 1, "b": 0.5})  # all positive: nothing raised
    with pytest.raises(ConfigError, match=r"suite\.b = -1 is invalid: must be > 0"):
        require_positive("suite", {"a": 1, "b": -1, "c": 0})  # the first offending field is named
    assert issubclass(ConfigError, ValueError)


def test_preset_registry_is_filled_with_builders() -> None:
    assert {"smoke", "nano", "pythia-160m-l4"} <= set(PRESETS)
    assert all(callable(builder) for builder in PRESETS.values())
    assert PRESETS["smoke"]().preset == "smoke"
