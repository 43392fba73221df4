"""The offline corpus, its byte-level BPE tokenizer and the token streams the nano suite trains on.

The default corpus (``CorpusConfig.source == "stdlib"``) is text every Python install already has: the
running interpreter's standard-library ``.py`` sources (without ``site-packages``/``dist-packages`` and the
test suites) plus its documentation topics (``pydoc_data.topics``). Other sources are a local text file or
folder, or ``"hf:<dataset>"`` (online only).

Documents are held out by a hash of their name (so the split never depends on order or on the machine), a
byte-level BPE tokenizer is trained on the training documents only, and both splits are tokenized into
1-D token streams (documents joined by ``<|endoftext|>``). :func:`prepare_corpus` writes everything to
``run_dir/corpus/`` with a manifest; :func:`load_corpus` reads it back; :func:`contexts` cuts fixed-length
contexts from a stream so each consumer can take its own disjoint slice.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from saetrack import paths, store
from saetrack.config.run import RunConfig
from saetrack.data.checkpoints import open_source
from saetrack.data.documents import collect_documents, corpus_sha256, split_documents
from saetrack.data.tokens import build_tokenizer, load_tokenizer, separator_id, tokenize_stream, unigram_entropy
from saetrack.stages.base import StageRun, run_stage

__all__ = [
    "HELDOUT_TOKENS",
    "TRAIN_TOKENS",
    "corpus_config_hash",
    "load_corpus",
    "prepare_corpus",
]


log = logging.getLogger(__name__)

TRAIN_TOKENS = "train_tokens.npy"
HELDOUT_TOKENS = "heldout_tokens.npy"


# ----------------------------------------------------------------------------------------------
# Collecting documents
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Held-out split
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Tokenizer and token streams
# ----------------------------------------------------------------------------------------------


def corpus_config_hash(run: RunConfig) -> str:
    """Hash the corpus stage's manifest carries: the corpus section, plus the model when its tokenizer is used."""
    return run.section_hash("corpus") if run.model.source == "suite" else run.section_hash("corpus", "model")


# ----------------------------------------------------------------------------------------------
# Cutting contexts from a stream
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# The stage
# ----------------------------------------------------------------------------------------------


def _corpus_dir(run_dir: Path) -> Path:
    return Path(run_dir) / paths.CORPUS_DIR


def _build_corpus(run: RunConfig, run_dir: Path, stage: StageRun) -> dict[str, Any]:
    """Collect, split and tokenize the documents; write the corpus folder atomically."""
    assert run.corpus is not None
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
        tokenizer.save_pretrained(str(tmp / paths.TOKENIZER_DIR))
        files = {
            TRAIN_TOKENS: store.save_npy(tmp / TRAIN_TOKENS, train_tokens),
            HELDOUT_TOKENS: store.save_npy(tmp / HELDOUT_TOKENS, heldout_tokens),
        }
        for path in sorted((tmp / paths.TOKENIZER_DIR).iterdir()):
            files[f"{paths.TOKENIZER_DIR}/{path.name}"] = store.file_sha256(path)
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


def prepare_corpus(run: RunConfig, run_dir: Path) -> dict[str, Any]:
    """Build ``run_dir/corpus/`` (tokenizer, train and held-out token streams, manifest); return the manifest.

    For the nano suite (``model.source == "suite"``) a byte-level BPE tokenizer is trained on the training
    documents; for any other model the text is tokenized with **that model's own tokenizer**.
    Skipped (the existing manifest is returned) when the manifest matches :func:`corpus_config_hash`.
    Otherwise the whole folder is rebuilt in a temporary folder and renamed into place, so a killed run
    never leaves a half-built corpus.
    """
    if run.corpus is None:
        raise ValueError(f"run {run.preset!r} has no corpus section (model.source = {run.model.source!r}).")
    return run_stage(
        Path(run_dir) / paths.CORPUS_DIR,
        "corpus",
        corpus_config_hash(run),
        lambda stage: _build_corpus(run, run_dir, stage),
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
