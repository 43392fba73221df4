"""The statistics stage (notebook 06): the statistical-learning phase of Ge et al. 2025, per checkpoint.

For every checkpoint of the chain's schedule (``run.sae_steps``, the checkpoints the cache and the chain cover) the
measures of :mod:`saetrack.analysis.statistical_learning`, whose docstring defines them:

* the corpus unigram and bigram statistics, counted (sparse) over the run's *training* token stream
  (``run_dir/corpus``, :func:`saetrack.data.corpus.load_corpus`) over the model's vocabulary, with their plug-in
  entropies ``H(U)`` and ``H(B|A)``;
* on the cache's held-out contexts (:attr:`~saetrack.data.activations.ActivationSource.heldout_tokens`; at most
  ``n_contexts``, evenly spaced over the set, nothing random), each checkpoint's unigram KL (corpus unigram against
  the predicted next-token marginal), bigram KL (corpus bigram conditional against each prediction, over positions
  whose previous token occurs in the training stream, with their share) and held-out loss.

The paper's "statistical learning -> feature learning" transition reads off these curves: the KLs fall to a small
fraction of their initial values while the loss approaches ``H(U)`` and then ``H(B|A)``, before sparse features
form. Written to ``run_dir/statistics/`` (``arrays.npz``: steps, loss, unigram_kl, bigram_kl, bigram_coverage; the
entropies in ``manifest.json``); skipped when the manifest matches the config.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from saetrack import paths, store
from saetrack.analysis import statistical_learning as sl
from saetrack.config.base import config_hash
from saetrack.config.run import RunConfig
from saetrack.data.activations import open_activations
from saetrack.data.cache_plan import cache_config_hash
from saetrack.data.checkpoints import open_source
from saetrack.data.corpus import load_corpus
from saetrack.pipeline.skeleton import StageRun, finished_manifest, run_stage
from saetrack.runtime import keep_freed_memory

__all__ = [
    "ARRAYS_FILE",
    "DEFAULT_HELDOUT_CONTEXTS",
    "KL_FRACTION",
    "StatisticsResult",
    "analyse_statistics",
    "checkpoint_measures",
    "heldout_contexts",
    "load_statistics",
    "output_hashes",
    "statistics_config_hash",
    "summary_numbers",
]

ARRAYS_FILE = "arrays.npz"
#: Held-out contexts evaluated per checkpoint unless told otherwise (all of them when the set is smaller).
DEFAULT_HELDOUT_CONTEXTS = 256
#: The KL curves "settle" at the first checkpoint below this fraction of their value at the first checkpoint.
KL_FRACTION = 0.1
#: Float64 log-probabilities held at once per forward batch (sets the batch size; the numbers do not depend on it).
#: Kept under glibc's largest mmap threshold (32 MiB, with :func:`saetrack.runtime.keep_freed_memory`), so the
#: temporaries are reused instead of page-faulted afresh each batch: measured on nano (28 checkpoints, one after the
#: other with /usr/bin/time on a quiet machine), 128 MiB took 95-108 s with 80-91 s in the kernel, 16 MiB 49 s with
#: 1.5 s; either change alone saves little.
LOGITS_BUDGET_BYTES = 16 << 20
_VERSION = 1
_ARRAY_NAMES = ("steps", "loss", "unigram_kl", "bigram_kl", "bigram_coverage")


def statistics_config_hash(run: RunConfig, n_contexts: int = DEFAULT_HELDOUT_CONTEXTS) -> str:
    """Hash of the stage's inputs: the cache's config hash (corpus, model, token plan), the checkpoints, the number
    of held-out contexts and the version of the measures."""
    return config_hash(
        {"cache": cache_config_hash(run), "steps": list(run.sae_steps), "heldout_contexts": n_contexts, "v": _VERSION}
    )


@dataclass(frozen=True)
class StatisticsResult:
    """The arrays of a finished statistics stage (T checkpoints), with the corpus entropies (nats)."""

    steps: np.ndarray  # [T]
    loss: np.ndarray  # [T] held-out cross-entropy
    unigram_kl: np.ndarray  # [T] KL(corpus unigram || predicted marginal)
    bigram_kl: np.ndarray  # [T] mean KL(corpus p(.|previous) || prediction) over covered positions
    bigram_coverage: np.ndarray  # [T] share of positions whose previous token occurs in the training stream
    unigram_entropy: float  # H(U)
    bigram_entropy: float  # H(B|A)
    manifest: dict[str, Any]


def heldout_contexts(tokens: np.ndarray, n_contexts: int) -> np.ndarray:
    """``min(n_contexts, available)`` rows of the held-out token set ``[N, n]``, evenly spaced (row ``floor(k N /
    m)`` for ``k < m``), as int64 - the contexts the measures are evaluated on; no randomness."""
    if n_contexts < 1:
        raise ValueError(f"n_contexts = {n_contexts} is invalid: must be >= 1.")
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[0] == 0 or tokens.shape[1] < 2:
        raise ValueError(f"the held-out token set has shape {tokens.shape}; need [contexts >= 1, length >= 2].")
    m = min(n_contexts, tokens.shape[0])
    rows = (np.arange(m, dtype=np.int64) * tokens.shape[0]) // m
    return np.asarray(tokens[rows], dtype=np.int64)


def checkpoint_measures(
    model: Any, contexts: np.ndarray, stats: sl.NgramStatistics, device: str = "cpu"
) -> sl.PredictionMeasures:
    """Loss, unigram KL, bigram KL and coverage of ``model`` (logits ``[b, n, V]`` from a LongTensor ``[b, n]``) on
    ``contexts`` against the corpus statistics ``stats`` (:class:`~saetrack.analysis.statistical_learning.
    PredictionAccumulator`), forwarding batches sized to :data:`LOGITS_BUDGET_BYTES`."""
    n, vocab = contexts.shape[1], stats.vocab_size
    batch = max(1, LOGITS_BUDGET_BYTES // (8 * n * vocab))
    acc = sl.PredictionAccumulator(stats)
    with torch.inference_mode():
        for start in range(0, len(contexts), batch):
            tokens = torch.from_numpy(contexts[start : start + batch]).to(device)
            acc.add(model(tokens), tokens)
    return acc.measures()


def _corpus_statistics(run_dir: Path, vocab_size: int) -> sl.NgramStatistics:
    """Unigram and bigram counts of the run's training stream over ``vocab_size`` token ids."""
    _, train_stream, _ = load_corpus(run_dir)
    if len(train_stream) < 2:
        raise ValueError(
            f"the corpus at {Path(run_dir) / paths.CORPUS_DIR} holds {len(train_stream)} training tokens; the "
            "statistical-learning measures need the run's training stream."
        )
    return sl.count_ngrams(train_stream, vocab_size)


def _build_statistics(
    run: RunConfig, run_dir: Path, stage: StageRun, n_contexts: int, progress: bool, device: str
) -> dict[str, Any]:
    """Count the corpus, evaluate every checkpoint on the held-out contexts and write the folder atomically."""
    keep_freed_memory()
    source = open_activations(run, run_dir)  # checks that the cache (and its token sets) is current
    available = np.asarray(source.heldout_tokens)
    contexts = heldout_contexts(available, n_contexts)
    checkpoints = open_source(run.model, run_dir)
    steps = list(run.sae_steps)
    stats: sl.NgramStatistics | None = None
    rows: list[sl.PredictionMeasures] = []
    timings = {"corpus_counts": 0.0, "checkpoints": 0.0}
    for step in tqdm(steps, desc="statistical learning", disable=not progress):
        if checkpoints.weights_hash(step) != source.weights_hash(step):
            raise store.StaleArtifactError(
                f"the weights of checkpoint step {step} differ from those notebook 01 cached; rerun notebook 01."
            )
        model = checkpoints.load_hooked(step, device=device)
        if stats is None:
            t0 = time.perf_counter()
            stats = _corpus_statistics(run_dir, int(model.cfg.d_vocab))
            timings["corpus_counts"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows.append(checkpoint_measures(model, contexts, stats, device))
        timings["checkpoints"] += time.perf_counter() - t0
        del model
    assert stats is not None  # run.sae_steps is never empty (validated config)
    arrays = {
        "steps": np.asarray(steps, dtype=np.int64),
        **{name: np.array([getattr(r, name) for r in rows]) for name in _ARRAY_NAMES[1:]},
    }
    with stage.atomic() as tmp:
        np.savez(tmp / ARRAYS_FILE, **arrays)
        return stage.finish(
            into=tmp,
            config={"cache_config_hash": cache_config_hash(run), "steps": steps, "heldout_contexts": n_contexts},
            files={ARRAYS_FILE: store.file_sha256(tmp / ARRAYS_FILE)},
            timings=timings,
            entropies={"unigram": sl.unigram_entropy(stats), "bigram": sl.bigram_entropy(stats)},
            corpus={
                "train_tokens": stats.n_tokens,
                "vocab_size": stats.vocab_size,
                "distinct_tokens": int((stats.unigram_counts > 0).sum()),
                "distinct_bigrams": int(stats.bigram_counts.nnz),
            },
            heldout={
                "contexts": len(contexts),
                "available_contexts": len(available),
                "context_length": int(contexts.shape[1]),
                "positions": rows[0].positions,
            },
            units="nats",
        )


def analyse_statistics(
    run: RunConfig,
    run_dir: Path,
    *,
    n_contexts: int = DEFAULT_HELDOUT_CONTEXTS,
    force: bool = False,
    progress: bool = True,
    device: str = "cpu",
) -> dict[str, Any]:
    """The statistical-learning phase (Ge et al. 2025): per checkpoint of ``run.sae_steps``, the unigram KL, bigram
    KL, bigram coverage and held-out loss on ``n_contexts`` held-out contexts, and the corpus entropies.

    Runs the checkpoints' models on ``device``. Returns the stage manifest; skipped when ``run_dir/statistics`` is
    current with this config (``force`` recomputes).
    """
    if n_contexts < 1:
        raise ValueError(f"n_contexts = {n_contexts} is invalid: must be >= 1.")
    run_dir = Path(run_dir)
    return run_stage(
        run_dir / paths.STATISTICS_DIR,
        "statistics",
        statistics_config_hash(run, n_contexts),
        lambda stage: _build_statistics(run, run_dir, stage, n_contexts, progress, device),
        force=force,
    )


def load_statistics(
    run_dir: Path, run: RunConfig | None = None, n_contexts: int = DEFAULT_HELDOUT_CONTEXTS
) -> StatisticsResult:
    """The arrays of a finished statistics stage (checked against ``run`` and ``n_contexts`` when ``run`` is given)."""
    out = Path(run_dir) / paths.STATISTICS_DIR
    expected = statistics_config_hash(run, n_contexts) if run is not None else None
    manifest = finished_manifest(out, expected, "statistics stage", "06")
    data = np.load(out / ARRAYS_FILE, allow_pickle=False)
    return StatisticsResult(
        **{name: data[name] for name in _ARRAY_NAMES},
        unigram_entropy=float(manifest["entropies"]["unigram"]),
        bigram_entropy=float(manifest["entropies"]["bigram"]),
        manifest=manifest,
    )


def _number(value: float) -> float | None:
    """A JSON-ready float: ``None`` for NaN or infinity."""
    return float(value) if math.isfinite(value) else None


def _first_step(steps: np.ndarray, mask: np.ndarray) -> int | None:
    """The step of the first ``True`` in ``mask``; ``None`` when there is none."""
    where = np.nonzero(mask)[0]
    return int(steps[where[0]]) if where.size else None


def summary_numbers(result: StatisticsResult) -> dict[str, Any]:
    """The statistical-learning numbers for the run's results JSON (Ge et al. 2025's two-phase transition).

    Per-checkpoint lists of the four measures; the corpus entropies; the steps where the unigram and the bigram KL
    first fall below :data:`KL_FRACTION` of their value at the first checkpoint, where the bigram KL is smallest (the
    model closest to the corpus bigram statistics; a model that beats the bigram model moves away from them again, so
    its bigram KL need never fall to a fraction of its start), and where the loss first falls below
    ``H(U)`` and ``H(B|A)`` (``None``: never); the loss relative to both entropies at the first and final checkpoints.
    """
    steps = result.steps
    h_u, h_b = result.unigram_entropy, result.bigram_entropy

    def settled(curve: np.ndarray) -> int | None:
        finite = np.isfinite(curve)
        if not finite.any():
            return None
        index = sl.first_below_fraction(curve[finite], KL_FRACTION)
        return None if index is None else int(steps[finite][index])

    def at(i: int) -> dict[str, Any]:
        loss = float(result.loss[i])
        return {
            "step": int(steps[i]),
            "loss": _number(loss),
            "loss_minus_unigram_entropy": _number(loss - h_u),
            "loss_minus_bigram_entropy": _number(loss - h_b),
        }

    return {
        "units": "nats",
        "steps": [int(s) for s in steps],
        **{name: [_number(v) for v in getattr(result, name)] for name in _ARRAY_NAMES[1:]},
        "unigram_entropy": h_u,
        "bigram_entropy": h_b,
        "kl_fraction": KL_FRACTION,
        "unigram_kl_settled_step": settled(result.unigram_kl),
        "bigram_kl_settled_step": settled(result.bigram_kl),
        "bigram_kl_min_step": _first_step(steps, result.bigram_kl == np.nanmin(result.bigram_kl))
        if np.isfinite(result.bigram_kl).any()
        else None,
        "loss_below_unigram_entropy_step": _first_step(steps, result.loss < h_u),
        "loss_below_bigram_entropy_step": _first_step(steps, result.loss < h_b),
        "loss_vs_entropies": {"first": at(0), "final": at(len(steps) - 1)},
    }


def output_hashes(run: RunConfig) -> dict[str, str]:
    """Output folder -> config hash of the statistics stage (default number of held-out contexts)."""
    return {paths.STATISTICS_DIR: statistics_config_hash(run)}
