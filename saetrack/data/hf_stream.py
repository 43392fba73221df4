"""Token streams of a large ``hf:`` corpus, read from the dataset in streaming mode and written to disk as they come.

The paper's presets need hundreds of millions of tokens: far more text than fits in memory at once. For them
:func:`stream_token_corpus` reads a Hugging Face dataset (a Hub name, or a local folder in the Hub's layout)
with ``datasets.load_dataset(..., streaming=True)``, one batch of documents at a time, tokenizes each batch
with the studied model's own tokenizer, and appends the tokens to two memory-mapped ``.npy`` files of
exactly the sizes asked for (the training and the held-out stream). It stops reading as soon as both are full.

The streams are those :func:`saetrack.data.tokens.tokenize_stream` gives on the same documents, split by
:func:`saetrack.data.documents.is_heldout` and truncated to the budgets: documents in dataset order, named
``hf:<dataset>/<row index>``, joined by the separator token within each split.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from saetrack.config.data import CorpusConfig
from saetrack.data.documents import CorpusSourceError, Document, is_heldout, open_hf_texts, update_corpus_digest
from saetrack.data.tokens import separator_id, token_dtype

__all__ = ["BATCH_DOCUMENTS", "HELDOUT_TOKENS", "TRAIN_TOKENS", "stream_token_corpus"]


#: Documents read and tokenized at once (the most ever held in memory).
BATCH_DOCUMENTS = 1000

#: File names of the two token streams in a corpus folder.
TRAIN_TOKENS = "train_tokens.npy"
HELDOUT_TOKENS = "heldout_tokens.npy"


class _StreamFile:
    """One split's token stream: a memory-mapped ``.npy`` of a fixed number of tokens, filled front to back."""

    def __init__(self, path: Path, n_tokens: int, dtype: np.dtype, separator: int) -> None:
        self.array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(n_tokens,))
        self.separator = np.array([separator], dtype=dtype)
        self.filled = 0
        self.documents = 0

    @property
    def full(self) -> bool:
        return self.filled >= self.array.shape[0]

    def append(self, ids: list[int]) -> int:
        """Write a document's ids (after the separator unless it is the split's first); return tokens written."""
        tokens = np.asarray(ids, dtype=self.array.dtype)
        if self.documents:
            tokens = np.concatenate([self.separator, tokens])
        tokens = tokens[: self.array.shape[0] - self.filled]
        self.array[self.filled : self.filled + tokens.size] = tokens
        self.filled += tokens.size
        self.documents += 1
        return int(tokens.size)

    def close(self) -> None:
        self.array.flush()


class _Counts:
    """What was read so far: rows, documents, characters, documents ignored because their split was full."""

    def __init__(self) -> None:
        self.rows = 0
        self.documents = 0
        self.chars = 0
        self.skipped = 0
        self.digest = hashlib.sha256()

    def read(self, index: int, doc: Document) -> None:
        self.rows = index + 1
        self.documents += 1
        self.chars += len(doc.text)
        update_corpus_digest(self.digest, [doc])


def _batches(texts: Iterator[str | None], size: int) -> Iterator[list[tuple[int, str | None]]]:
    """``(row index, text)`` pairs of ``texts`` in lists of ``size``."""
    rows = enumerate(texts)
    while batch := list(itertools.islice(rows, size)):
        yield batch


def _fill_batch(
    batch: list[tuple[int, str | None]],
    name: str,
    heldout_fraction: float,
    tokenizer: Any,
    streams: dict[bool, _StreamFile],
    counts: _Counts,
) -> int:
    """Tokenize the documents of ``batch`` whose split is not yet full and append them; return tokens written.

    Stops at the document that fills the last split: the rest of the batch counts as never read.
    """
    docs = [(index, Document(f"hf:{name}/{index}", text)) for index, text in batch if text]
    held = [is_heldout(doc.name, heldout_fraction) for _, doc in docs]
    wanted = [i for i, flag in enumerate(held) if not streams[flag].full]
    encodings = tokenizer.backend_tokenizer.encode_batch([docs[i][1].text for i in wanted], add_special_tokens=False)
    ids = dict(zip(wanted, (encoding.ids for encoding in encodings), strict=True))
    written = 0
    for position, (index, doc) in enumerate(docs):
        counts.read(index, doc)
        stream = streams[held[position]]
        if stream.full:
            counts.skipped += 1
        else:
            written += stream.append(ids[position])
        if all(s.full for s in streams.values()):
            return written
    if batch:
        counts.rows = batch[-1][0] + 1
    return written


def _fill(
    texts: Iterator[str | None],
    name: str,
    heldout_fraction: float,
    tokenizer: Any,
    streams: dict[bool, _StreamFile],
    counts: _Counts,
    progress: bool,
) -> None:
    """Read ``texts`` batch by batch into ``streams`` until both are full or the dataset ends (tqdm in tokens)."""
    total = sum(stream.array.shape[0] for stream in streams.values())
    with tqdm(total=total, desc=f"tokenizing {name}", unit="tok", unit_scale=True, disable=not progress) as bar:
        try:
            for batch in _batches(texts, BATCH_DOCUMENTS):
                bar.update(_fill_batch(batch, name, heldout_fraction, tokenizer, streams, counts))
                if all(stream.full for stream in streams.values()):
                    return
        except Exception as error:  # e.g. the connection drops mid-stream: say where
            error.add_note(f"while streaming 'hf:{name}' after {counts.rows:,} rows")
            raise


def _ran_out_message(corpus: CorpusConfig, streams: dict[bool, _StreamFile], counts: _Counts) -> str:
    got = {"train": (streams[False].filled, streams[False].array.shape[0])}
    got["held-out"] = (streams[True].filled, streams[True].array.shape[0])
    detail = ", ".join(f"{split} {have:,} of {need:,} tokens" for split, (have, need) in got.items())
    return (
        f"corpus.source = {corpus.source!r}: split {corpus.hf_split!r} of the dataset {corpus.source[3:]!r} ended "
        f"after {counts.rows:,} rows ({counts.documents:,} documents) before the token streams were full: got "
        f"{detail}. Use a bigger dataset (corpus.source), or need fewer tokens: lower chain.first_tokens / "
        "chain.link_tokens (training stream) or cache.analysis_contexts / cache.heldout_tokens (held-out stream)."
    )


def stream_token_corpus(
    corpus: CorpusConfig,
    tokenizer: Any,
    n_train_tokens: int,
    n_heldout_tokens: int,
    out_dir: Path,
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``out_dir/train_tokens.npy`` and ``heldout_tokens.npy`` of exactly the given sizes from an ``hf:`` corpus.

    ``corpus.source`` is ``"hf:<name>"``: a Hub dataset or a local folder in the Hub's layout, read with
    ``datasets.load_dataset(name, split=corpus.hf_split, streaming=True)``. Documents (non-empty values of
    ``corpus.hf_text_column``, in dataset order, named ``hf:<name>/<row index>``) go to the held-out stream when
    :func:`~saetrack.data.documents.is_heldout` says so, else to the training stream; each stream is the
    separator-joined token ids (:func:`~saetrack.data.tokens.tokenize_stream`'s layout, dtype
    :func:`~saetrack.data.tokens.token_dtype`) cut at its budget. Documents are tokenized ``BATCH_DOCUMENTS`` at a
    time with ``tokenizer`` (a fast Hugging Face tokenizer) and written into memory-mapped files; documents of a
    split already full are skipped, and reading stops once both streams are full.

    Raises :class:`~saetrack.data.documents.CorpusSourceError` when the dataset cannot be opened, lacks the text
    column, or ends before both streams are full (naming the tokens got and needed). Returns the facts for the
    corpus manifest: dataset, split and column; rows and documents read, train/held-out/skipped documents,
    characters and tokens per split; ``corpus_sha256`` over the documents read
    (:func:`~saetrack.data.documents.corpus_sha256`'s hash, in reading order).
    """
    if not corpus.source.startswith("hf:"):
        raise ValueError(f"corpus.source = {corpus.source!r} is invalid here: stream_token_corpus reads 'hf:' sources.")
    if n_train_tokens < 0 or n_heldout_tokens <= 0:
        raise ValueError(
            f"n_train_tokens = {n_train_tokens}, n_heldout_tokens = {n_heldout_tokens}: need >= 0 training tokens "
            "(0: the held-out text only) and > 0 held-out tokens."
        )
    name = corpus.source[3:]
    texts = open_hf_texts(name, corpus.hf_split, corpus.hf_text_column)
    dtype = token_dtype(len(tokenizer))
    separator = separator_id(tokenizer)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    streams = {
        False: _StreamFile(out_dir / TRAIN_TOKENS, n_train_tokens, dtype, separator),
        True: _StreamFile(out_dir / HELDOUT_TOKENS, n_heldout_tokens, dtype, separator),
    }
    counts = _Counts()
    try:
        _fill(texts, name, corpus.heldout_fraction, tokenizer, streams, counts, progress)
        complete = all(stream.full for stream in streams.values())
        message = None if complete else _ran_out_message(corpus, streams, counts)
    finally:
        for stream in streams.values():
            stream.close()
    if message is not None:
        raise CorpusSourceError(message)
    return {
        "dataset": name,
        "split": corpus.hf_split,
        "text_column": corpus.hf_text_column,
        "n_rows_read": counts.rows,
        "n_documents": counts.documents,
        "n_train_documents": streams[False].documents,
        "n_heldout_documents": streams[True].documents,
        "n_skipped_documents": counts.skipped,
        "n_chars": counts.chars,
        "n_train_tokens": n_train_tokens,
        "n_heldout_tokens": n_heldout_tokens,
        "corpus_sha256": counts.digest.hexdigest(),
    }
