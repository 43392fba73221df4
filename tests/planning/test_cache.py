"""The cache stage's plan: the corpus, the cache a cached preset writes, the suite's training."""

from __future__ import annotations

import pytest

from saetrack.config import get_preset
from saetrack.data.cache_plan import planned_cache_bytes
from tests.planning.conftest import RATES, by_line


def test_a_cached_plan_counts_the_cache_the_cache_stage_would_write() -> None:
    run = get_preset("smoke")
    by = by_line("smoke")
    assert by["cache"].disk == planned_cache_bytes(run, run.suite.d_model)
    assert by["chain"].forward_tokens == 0 and by["cache"].forward_tokens > 0
    assert by_line("pythia-410m-l4")["cache"].forward_tokens == 0  # streamed: nothing cached


def test_a_suite_preset_counts_its_suite_training_in_the_cache_stage() -> None:
    run = get_preset("nano")
    trained = by_line("nano")["cache"]
    given = by_line("nano", **{"model.source": "local", "model.local_path": "elsewhere"})["cache"]
    suite = run.suite
    tokens = suite.total_steps * suite.batch_size * suite.context_length
    params = 12 * suite.d_model**2 * suite.n_layers + 2 * run.corpus.vocab_size * suite.d_model
    assert trained.seconds - given.seconds == pytest.approx(6 * params * tokens / RATES.forward_flops)
    assert any("trains the model suite" in note for note in trained.notes)
