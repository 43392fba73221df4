"""The plan of several layers: each layer planned as its own run, the corpus, the suite and (cached) the forward
counted once - at the deepest layer - and no scale study per layer."""

from __future__ import annotations

import pytest

from saetrack.config import get_preset
from saetrack.planning.cache import suite_training
from saetrack.planning.common import plan_inputs
from tests.planning.conftest import RATES, by_line


def test_each_layer_is_its_own_run_with_the_shared_work_counted_once() -> None:
    both = by_line("nano", **{"cache.layers": [1, 3]})
    one, three = by_line("nano", **{"cache.layer": 1}), by_line("nano", **{"cache.layer": 3})
    assert "L1 corpus" in both and "L3 corpus" not in both
    assert not any("scale" in name for name in both)
    for name in ("chain", "baselines", "formation", "drift", "explorer"):  # the layers' own work, unchanged
        assert both[f"L1 {name}"].seconds == pytest.approx(one[name].seconds)
        assert both[f"L3 {name}"].seconds == pytest.approx(three[name].seconds)
    # one forward to layer 3 caches both layers; the suite is trained once
    suite_seconds = suite_training(plan_inputs(get_preset("nano"), RATES))[1]
    assert both["L3 cache"].forward_tokens == three["cache"].forward_tokens and both["L1 cache"].forward_tokens == 0
    assert both["L3 cache"].seconds == pytest.approx(three["cache"].seconds - suite_seconds)
    assert both["L1 cache"].seconds == pytest.approx(suite_seconds)
    assert both["L1 cache"].disk == one["cache"].disk and both["L3 cache"].disk == three["cache"].disk
    total_forward = sum(line.forward_tokens for line in both.values() if line.stage.endswith("cache"))
    assert total_forward == three["cache"].forward_tokens < one["cache"].forward_tokens + three["cache"].forward_tokens


def test_streamed_links_share_the_deepest_layers_forward_and_download_once() -> None:
    both = by_line("pythia-410m-l4", **{"cache.layers": [4, 12]})
    alone = {layer: by_line("pythia-410m-l4", **{"cache.layer": layer}) for layer in (4, 12)}
    for name in ("chain", "baselines"):  # side by side: one forward to layer 12 feeds both layers' links
        assert both[f"L12 {name}"].forward_tokens == alone[12][name].forward_tokens
        assert both[f"L4 {name}"].forward_tokens == 0
        assert any("captured in layer 12's forward" in note for note in both[f"L4 {name}"].notes)
        assert both[f"L4 {name}"].seconds == pytest.approx(alone[4][name].sae_tokens * _sae_seconds())
        assert both[f"L12 {name}"].device == 2 * alone[12][name].device  # both layers train at once
    assert both["L12 probes"].forward_tokens == alone[12]["probes"].forward_tokens  # the comparison: per layer
    assert both["L12 cache"].disk == 0 < both["L4 cache"].disk  # the Hub checkpoints are downloaded once
    assert not any("downloads" in note for note in both["L12 cache"].notes)


def test_a_torchrun_job_trains_the_layers_one_after_the_other_on_their_own_forwards() -> None:
    from saetrack.planning import plan_run

    run = get_preset("pythia-410m-l4").with_overrides({"cache.layers": [4, 12]})
    lines = {line.stage: line for line in plan_run(run, RATES, ranks=8)}
    assert lines["L4 chain"].forward_tokens == lines["L12 chain"].forward_tokens > 0
    assert any("data-parallel over 8 ranks" in note for note in lines["L4 chain"].notes)
    assert not any("lock-step" in note or "captured" in note for note in lines["L4 chain"].notes)


def _sae_seconds() -> float:
    """Seconds per token of a pythia-410m-l4 SAE step at the test rates."""
    return plan_inputs(get_preset("pythia-410m-l4"), RATES).sae_step_seconds
