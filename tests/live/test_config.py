"""The watched run's config: the preset's settings over the checkpoints so far; when one run's links are another's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from saetrack.config import get_preset
from saetrack.data.cache_plan import plan_tokens
from saetrack.live.config import (
    WATCH_RESTART_BELOW,
    WATCH_RESTART_L0_RATIO,
    WatchSource,
    check_watchable,
    checkpoint_shape,
    prefix_agrees,
    watched_config,
)
from saetrack.sae.calibration import DEFAULT_TARGET_L0, default_target_l0

SOURCE = WatchSource("local", "/tmp/some-training-run")


def test_watched_config_studies_every_ready_checkpoint_streamed_without_baselines_or_noise_floor() -> None:
    run = watched_config(get_preset("smoke"), SOURCE, [0, 10, 20], (2, 32), "watch-t")
    assert run.preset == "watch-t" and run.suite is None
    assert run.model.source == "local" and run.model.local_path == str(Path("/tmp/some-training-run").resolve())
    assert run.model.checkpoint_steps == (0, 10, 20) and run.sae_steps == (0, 10, 20)
    assert (run.model.n_layers, run.model.d_model) == (2, 32)
    assert run.chain.baseline == () and run.noise_floor_links == 0 and run.cache.streamed
    assert run.chain.target_l0 == 8.0  # a quarter of the width for a 32-wide model
    assert run.chain.lr_link == get_preset("smoke").chain.lr_link  # everything else from the preset


def test_the_outcome_rule_is_on_and_the_carried_rule_off_unless_set_by_hand() -> None:
    default = watched_config(get_preset("smoke"), SOURCE, [0, 10], (2, 32), "w")
    assert default.chain.restart_l0_ratio == WATCH_RESTART_L0_RATIO == 2.0 and default.chain.restart_below is None
    assert get_preset("smoke").chain.restart_l0_ratio is None  # the offline chain is the paper's unless set
    by_hand = get_preset("smoke", {"chain.restart_l0_ratio": 3.0, "chain.restart_below": -0.5})
    kept = watched_config(by_hand, SOURCE, [0], (2, 32), "w", restart=False)
    assert (kept.chain.restart_l0_ratio, kept.chain.restart_below) == (3.0, -0.5)
    off = watched_config(get_preset("smoke"), SOURCE, [0], (2, 32), "w", restart=False)  # --set ...=None
    assert off.chain.restart_l0_ratio is None and not off.chain.may_restart
    assert watched_config(get_preset("smoke", {"chain.restart_below": WATCH_RESTART_BELOW}), SOURCE, [0], (2, 32),
                          "w").chain.restart_below == 0.0  # fmt: skip


def test_a_penalty_set_by_hand_is_kept_and_a_target_set_by_hand_wins() -> None:
    kept = watched_config(get_preset("smoke"), SOURCE, [0], (2, 32), "w", calibrate=False)
    assert kept.chain.target_l0 is None and kept.chain.l1_coefficient == get_preset("smoke").chain.l1_coefficient
    base = get_preset("smoke", {"chain.target_l0": 5.0})
    assert watched_config(base, SOURCE, [0], (2, 32), "w").chain.target_l0 == 5.0


def test_default_target_l0() -> None:
    assert default_target_l0(768) == DEFAULT_TARGET_L0 == 32.0
    assert default_target_l0(64) == 16.0


def test_hub_source_model_section() -> None:
    run = watched_config(get_preset("smoke"), WatchSource("hub", "me/run", "ckpt-{step}"), [5], (2, 32), "w")
    assert (run.model.source, run.model.repo_id, run.model.revision_template) == ("hub", "me/run", "ckpt-{step}")


@pytest.mark.parametrize(
    ("config", "shape"),
    [({"num_hidden_layers": 12, "hidden_size": 768}, (12, 768)), ({"n_layer": 4, "n_embd": 64}, (4, 64))],
)
def test_checkpoint_shape_reads_neox_llama_and_gpt2_names(tmp_path: Path, config: dict, shape: tuple) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert checkpoint_shape(tmp_path / "config.json") == shape


def test_checkpoint_shape_without_the_fields_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="num_hidden_layers"):
        checkpoint_shape(tmp_path / "config.json")


def test_a_shorter_watched_run_is_a_prefix_of_a_longer_one() -> None:
    base = get_preset("smoke")
    short = watched_config(base, SOURCE, [0, 10], (2, 32), "w")
    long = watched_config(base, SOURCE, [0, 10, 20, 40], (2, 32), "w")
    assert prefix_agrees(short, long)
    assert all(plan_tokens(short).train[s] == plan_tokens(long).train[s] for s in (0, 10))
    assert not prefix_agrees(long, short)
    other_steps = watched_config(base, SOURCE, [0, 15, 20], (2, 32), "w")
    assert not prefix_agrees(short, other_steps)
    other_lr = watched_config(get_preset("smoke", {"chain.lr_link": 1e-2}), SOURCE, [0, 10, 20], (2, 32), "w")
    assert not prefix_agrees(short, other_lr)


def test_a_noise_floor_on_the_last_link_breaks_the_prefix() -> None:
    """With a noise floor the last checkpoint's slice is larger, so its link would read other rows once it is not
    last: exactly why a watched run has none."""
    base = get_preset("smoke")
    short = watched_config(base, SOURCE, [0, 10], (2, 32), "w").with_overrides({"drift.noise_floor_links": 2})
    long = watched_config(base, SOURCE, [0, 10, 20], (2, 32), "w").with_overrides({"drift.noise_floor_links": 2})
    assert plan_tokens(short).train[10] != plan_tokens(long).train[10]
    assert not prefix_agrees(short, long)


def test_a_streamed_hf_corpus_is_refused_with_the_way_out_named() -> None:
    base = get_preset("smoke", {"corpus.source": "hf:someone/texts"})
    with pytest.raises(ValueError, match=r"cannot be watched: a streamed hf: corpus grows.*--set corpus.source=sotu"):
        check_watchable(base)
    with pytest.raises(ValueError, match="cannot be watched"):
        watched_config(base, SOURCE, [0, 10], (2, 32), "w")
    check_watchable(get_preset("smoke", {"corpus.source": "/data/my-texts"}))  # a local folder is tokenized once
    check_watchable(get_preset("nano"))
