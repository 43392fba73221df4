"""The explorer config section: its defaults, its own validation and the run-level bound by the formation's top-k."""

from __future__ import annotations

import pytest

from saetrack.config import ConfigError, ExplorerConfig, get_preset


def test_defaults() -> None:
    cfg = ExplorerConfig()
    assert cfg.enabled is True
    assert (cfg.contexts_per_checkpoint, cfg.context_before, cfg.context_after, cfg.nearest) == (5, 8, 2, 8)
    assert get_preset("smoke").explorer == cfg
    assert get_preset("smoke").to_dict()["explorer"] == {
        "enabled": True, "contexts_per_checkpoint": 5, "context_before": 8, "context_after": 2, "nearest": 8,
    }  # fmt: skip


def test_zero_context_tokens_around_the_activating_one_are_allowed() -> None:
    cfg = ExplorerConfig(context_before=0, context_after=0, contexts_per_checkpoint=1, nearest=1)
    assert cfg.context_before == cfg.context_after == 0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("contexts_per_checkpoint", 0, "explorer.contexts_per_checkpoint = 0 is invalid: must be > 0"),
        ("contexts_per_checkpoint", -3, "explorer.contexts_per_checkpoint = -3 is invalid: must be > 0"),
        ("nearest", 0, "explorer.nearest = 0 is invalid: must be > 0"),
        ("context_before", -1, "explorer.context_before = -1 is invalid: must be >= 0"),
        ("context_after", -2, "explorer.context_after = -2 is invalid: must be >= 0"),
    ],
)
def test_invalid_values_name_the_field(field: str, value: int, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ExplorerConfig(**{field: value})
    assert str(caught.value) == message + "."


def test_contexts_per_checkpoint_at_most_the_formation_top_k() -> None:
    smoke = get_preset("smoke")
    top_k = smoke.formation.top_k
    assert smoke.with_overrides({"explorer.contexts_per_checkpoint": top_k}).explorer.contexts_per_checkpoint == top_k
    with pytest.raises(ConfigError, match=rf"explorer\.contexts_per_checkpoint = {top_k + 1} .*top_k = {top_k}"):
        smoke.with_overrides({"explorer.contexts_per_checkpoint": top_k + 1})
    with pytest.raises(ConfigError, match=r"explorer\.contexts_per_checkpoint = 6 .*top_k = 5"):
        smoke.with_overrides({"formation.top_k": 5, "explorer.contexts_per_checkpoint": 6})
    with pytest.raises(ConfigError, match=r"explorer\.context_before = -1"):
        smoke.with_overrides({"explorer.context_before": -1})
