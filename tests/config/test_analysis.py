"""The analysis sections (formation, drift, scale study) validate their values and name what is allowed."""

from __future__ import annotations

import pytest

from saetrack.config import ConfigError, DriftConfig, FormationConfig, ScaleConfig


def test_defaults_are_the_papers() -> None:
    formation = FormationConfig()
    assert (formation.top_k, formation.n_random_activation, formation.n_random_feature) == (25, 150, 100)
    assert DriftConfig().formed_fraction == 0.5
    assert ScaleConfig().presets == () and ScaleConfig().parallel_sizes == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"top_k": 1, "min_active": 1}, r"formation\.top_k = 1 .*>= 2"),
        ({"top_k": 4, "min_active": 5}, r"formation\.min_active = 5 .*<= top_k=4"),
        ({"token_share": 0.0}, r"formation\.token_share = 0\.0 .*\(0, 1\]"),
        ({"token_share": 1.5}, r"formation\.token_share"),
        ({"min_density": 1.0}, r"formation\.min_density = 1\.0 .*\[0, 1\)"),
        ({"n_random_feature": 0}, r"formation\.n_random_feature = 0 .*> 0"),
        ({"umap_seed": -1}, r"formation\.umap_seed = -1 .*>= 0"),
    ],
)
def test_formation_config_rejects(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        FormationConfig(**kwargs)  # type: ignore[arg-type]


def test_drift_config_rejects() -> None:
    assert DriftConfig(formed_fraction=1.0).formed_fraction == 1.0
    with pytest.raises(ConfigError, match=r"drift\.formed_fraction = 0\.0"):
        DriftConfig(formed_fraction=0.0)
    with pytest.raises(ConfigError, match=r"drift\.min_phase_checkpoints = 0"):
        DriftConfig(min_phase_checkpoints=0)


def test_scale_config_knows_the_presets() -> None:
    assert ScaleConfig(presets=("smoke-s", "smoke")).presets == ("smoke-s", "smoke")
    with pytest.raises(ConfigError, match=r"\['nope'\] are not"):
        ScaleConfig(presets=("smoke", "nope"))
    with pytest.raises(ConfigError, match="no preset may appear twice"):
        ScaleConfig(presets=("smoke", "smoke"))
    with pytest.raises(ConfigError, match=r"scale\.parallel_sizes = 0"):
        ScaleConfig(parallel_sizes=0)
