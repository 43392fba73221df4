"""The analysis sections (formation, drift, scale study) validate their values and name what is allowed."""

from __future__ import annotations

import pytest

from saetrack.config import ConfigError, DriftConfig, FormationConfig, ScaleConfig, get_preset
from saetrack.config.analysis import DENSITY_ONLY_FIELDS, DRIFT_HASH_DEFAULTS, drift_hash_fields


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


def test_density_strides_default_to_2_4_8_and_reject_stride_1_and_disorder() -> None:
    assert DriftConfig().density_strides == (2, 4, 8) and DriftConfig(density_strides=()).density_strides == ()
    for bad in ((1, 2), (4, 2), (2, 2), (0,)):
        with pytest.raises(ConfigError, match=r"drift\.density_strides .*strictly ascending strides >= 2"):
            DriftConfig(density_strides=bad)


def test_the_drift_hash_never_sees_the_density_strides() -> None:
    # the committed runs' drift section, from before the field: what the drift stage's hash must keep seeing
    before = {"formed_fraction": 0.5, "n_sampled_features": 8, "trajectories_per_pattern": 2, "n_histograms": 6,
              "min_phase_checkpoints": 2, "max_segments": 6, "noise_floor_links": None}  # fmt: skip
    for strides in ((2, 4, 8), (), (16,)):
        section = get_preset("nano", {"drift.density_strides": strides}).to_dict()["drift"]
        assert drift_hash_fields(section) == before
    assert DENSITY_ONLY_FIELDS == ("density_strides",) and DRIFT_HASH_DEFAULTS == {}
    moved = get_preset("nano", {"drift.max_segments": 4}).to_dict()["drift"]
    assert drift_hash_fields(moved)["max_segments"] == 4  # every other field still counts
