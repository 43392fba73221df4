"""The statistics stage (notebook 06): the statistical-learning measures of the smoke suite, end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from saetrack import paths, store
from saetrack.analysis.statistical_learning import bigram_entropy, count_ngrams, unigram_entropy
from saetrack.config import RunConfig
from saetrack.data.corpus import load_corpus
from saetrack.stages.crosscoder.statistics import (
    ARRAYS_FILE,
    analyse_statistics,
    checkpoint_measures,
    heldout_contexts,
    load_statistics,
    output_hashes,
    statistics_config_hash,
    summary_numbers,
)


@pytest.fixture(scope="module")
def statistics_run(run: RunConfig, smoke_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the smoke run's corpus, suite and cache (the stage needs nothing else)."""
    work = tmp_path_factory.mktemp("statistics_run")
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR, paths.CACHE_DIR):
        shutil.copytree(smoke_run_dir / folder, work / folder)
    return work


def test_statistics_stage_end_to_end_at_smoke_size(run: RunConfig, statistics_run: Path) -> None:
    manifest = analyse_statistics(run, statistics_run, n_contexts=16, progress=False)
    result = load_statistics(statistics_run, run, n_contexts=16)
    n_steps = len(run.sae_steps)
    np.testing.assert_array_equal(result.steps, run.sae_steps)
    for name in ("loss", "unigram_kl", "bigram_kl", "bigram_coverage"):
        values = getattr(result, name)
        assert values.shape == (n_steps,) and np.isfinite(values).all() and (values >= 0).all(), name
    assert (result.bigram_coverage <= 1).all()
    # the entropies are those of the training stream, counted over the model's vocabulary
    _, train, _ = load_corpus(statistics_run)
    stats = count_ngrams(train, manifest["corpus"]["vocab_size"])
    assert result.unigram_entropy == pytest.approx(unigram_entropy(stats))
    assert result.bigram_entropy == pytest.approx(bigram_entropy(stats))
    assert 0 < result.bigram_entropy < result.unigram_entropy
    heldout = manifest["heldout"]
    assert heldout["contexts"] == 16 and heldout["positions"] == 16 * (run.cache.context_length - 1)
    # training moves the predictions towards the corpus statistics: both KLs and the loss fall
    assert result.unigram_kl[-1] < result.unigram_kl[0] and result.bigram_kl[-1] < result.bigram_kl[0]
    assert result.loss[-1] < result.loss[0]

    # current: the second call does no work and returns the same manifest
    mtime = (statistics_run / paths.STATISTICS_DIR / ARRAYS_FILE).stat().st_mtime_ns
    assert analyse_statistics(run, statistics_run, n_contexts=16, progress=False) == manifest
    assert (statistics_run / paths.STATISTICS_DIR / ARRAYS_FILE).stat().st_mtime_ns == mtime
    assert manifest["config_hash"] == statistics_config_hash(run, 16) != output_hashes(run)[paths.STATISTICS_DIR]
    with pytest.raises(store.StaleArtifactError, match="another config"):
        load_statistics(statistics_run, run)  # made with 16 contexts, asked for the default

    numbers = summary_numbers(result)
    json.dumps(numbers, allow_nan=False)
    assert numbers["steps"] == list(run.sae_steps) and len(numbers["unigram_kl"]) == n_steps
    assert numbers["loss_vs_entropies"]["final"]["step"] == run.sae_steps[-1]
    final = numbers["loss_vs_entropies"]["final"]
    assert final["loss_minus_bigram_entropy"] == pytest.approx(result.loss[-1] - result.bigram_entropy)
    for key in ("unigram_kl_settled_step", "bigram_kl_settled_step", "loss_below_unigram_entropy_step"):
        assert numbers[key] is None or numbers[key] in run.sae_steps
    assert numbers["bigram_kl_min_step"] == run.sae_steps[int(np.argmin(result.bigram_kl))]


class _Fixed(torch.nn.Module):
    """A "model" predicting the same logits at every position."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(*tokens.shape, -1)


def test_checkpoint_measures_of_a_unigram_model_have_zero_unigram_kl() -> None:
    stream = np.random.default_rng(0).integers(0, 9, size=3000)
    stats = count_ngrams(stream, 10)  # token 9 never occurs
    with np.errstate(divide="ignore"):
        model = _Fixed(torch.from_numpy(np.log(stats.unigram)))
    contexts = heldout_contexts(stream[:2000].reshape(50, 40), 20)
    measures = checkpoint_measures(model, contexts, stats)
    assert measures.unigram_kl == pytest.approx(0.0, abs=1e-12)
    assert measures.positions == 20 * 39 and measures.bigram_coverage == 1.0


def test_heldout_contexts_are_evenly_spaced_and_validated() -> None:
    tokens = np.arange(40).reshape(10, 4)
    np.testing.assert_array_equal(heldout_contexts(tokens, 5)[:, 0], [0, 8, 16, 24, 32])
    assert heldout_contexts(tokens, 500).shape == (10, 4)  # all of them when fewer are available
    with pytest.raises(ValueError, match="n_contexts"):
        heldout_contexts(tokens, 0)
    with pytest.raises(ValueError, match="length >= 2"):
        heldout_contexts(tokens[:, :1], 3)
