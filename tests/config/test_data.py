"""The data sections: corpus, nano suite, model checkpoints and activation cache validate and derive what they say."""

from __future__ import annotations

import pytest

from saetrack.config import CacheConfig, ConfigError, CorpusConfig, ModelConfig, SuiteConfig, get_preset
from saetrack.data.cache_plan import cache_config_hash


def test_corpus_config_bounds() -> None:
    assert CorpusConfig().source == "sotu"
    for kwargs, match in [
        ({"heldout_fraction": 0.5}, r"corpus\.heldout_fraction = 0\.5 .*\(0, 0\.5\)"),
        ({"heldout_fraction": 0.0}, r"corpus\.heldout_fraction"),
        ({"vocab_size": 258}, r"corpus\.vocab_size = 258 .*>= 259"),
        ({"max_chars": 0}, r"corpus\.max_chars = 0"),
        ({"source": ""}, r"corpus\.source = ''"),
    ]:
        with pytest.raises(ConfigError, match=match):
            CorpusConfig(**kwargs)  # type: ignore[arg-type]


def test_suite_config_derives_schedule_and_tokens_per_step() -> None:
    suite = SuiteConfig(d_model=64, n_heads=2, d_mlp=256, context_length=32, batch_size=8, total_steps=48,
                        n_even_checkpoints=3, warmup_steps=4)  # fmt: skip
    assert suite.checkpoint_steps == (0, 1, 2, 4, 8, 16, 32, 48)
    assert suite.tokens_per_step == 8 * 32
    with pytest.raises(ConfigError, match=r"suite\.n_heads = 3 .*divide d_model=64"):
        SuiteConfig(d_model=64, n_heads=3)
    with pytest.raises(ConfigError, match=r"suite\.warmup_steps = 10 .*\[0, total_steps=10\)"):
        SuiteConfig(total_steps=10, n_even_checkpoints=2, warmup_steps=10)
    with pytest.raises(ConfigError, match=r"suite\.rotary_pct"):
        SuiteConfig(rotary_pct=0.0)
    with pytest.raises(ConfigError, match=r"suite\.n_even_checkpoints = 30 .*<= total_steps=20"):
        SuiteConfig(total_steps=20, n_even_checkpoints=30, warmup_steps=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"source": "ftp", "checkpoint_steps": (0,)}, r"model\.source = 'ftp'"),
        ({"source": "hub", "checkpoint_steps": (0,)}, r"model\.repo_id = None .*source='hub'"),
        ({"source": "local", "checkpoint_steps": (0,)}, r"model\.local_path = None .*source='local'"),
        ({"checkpoint_steps": ()}, r"at least one checkpoint step"),
        ({"checkpoint_steps": (0, 4, 2)}, r"strictly ascending"),
        ({"checkpoint_steps": (0,), "revision_template": "main"}, r"must contain '\{step\}'"),
        ({"checkpoint_steps": (0,), "n_layers": 0}, r"model\.n_layers = 0"),
    ],
)
def test_model_config_rejects(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ModelConfig(**kwargs)  # type: ignore[arg-type]


def test_model_config_accepts_each_source() -> None:
    assert ModelConfig(source="hub", repo_id="EleutherAI/pythia-70m", checkpoint_steps=(0, 1)).source == "hub"
    assert ModelConfig(source="local", local_path="ckpts", checkpoint_steps=(3,)).local_path == "ckpts"
    assert ModelConfig(checkpoint_steps=(0,)).revision_template.format(step=512) == "step512"


def test_cache_config_hook_name_and_checks() -> None:
    assert CacheConfig(layer=3).hook_name == "blocks.3.hook_resid_pre"
    assert CacheConfig().dtype == "float32"
    with pytest.raises(ConfigError, match=r"cache\.layer = -1"):
        CacheConfig(layer=-1)
    with pytest.raises(ConfigError, match=r"cache\.dtype = 'int8'"):
        CacheConfig(dtype="int8")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"cache\.batch_contexts = 0"):
        CacheConfig(batch_contexts=0)


def test_cache_layers_are_ascending_in_range_and_hash_like_before_when_unset() -> None:
    nano = get_preset("nano")
    assert nano.cache.layers == ()
    assert cache_config_hash(nano.with_overrides({"cache.layers": []})) == cache_config_hash(nano)
    assert cache_config_hash(nano.with_overrides({"cache.layers": [1, 3]})) != cache_config_hash(nano)
    with pytest.raises(ConfigError, match="strictly ascending"):
        nano.with_overrides({"cache.layers": [3, 1]})
    with pytest.raises(ConfigError, match="strictly ascending"):
        nano.with_overrides({"cache.layers": [1, 1]})
    with pytest.raises(ConfigError, match=r"must lie in \[0, 4\)"):
        nano.with_overrides({"cache.layers": [1, 4]})


def test_each_layer_run_is_the_single_layer_run_of_that_layer() -> None:
    nano = get_preset("nano")
    runs = nano.with_overrides({"cache.layers": [1, 3]}).layer_runs()
    assert [(r.preset, r.cache.layer, r.cache.layers) for r in runs] == [("nano/layer1", 1, ()), ("nano/layer3", 3, ())]
    alone = nano.with_overrides({"cache.layer": 3})
    assert cache_config_hash(runs[1]) == cache_config_hash(alone)
    assert runs[1].to_dict() == {**alone.to_dict(), "preset": "nano/layer3"}
    assert nano.layer_runs() == ()
