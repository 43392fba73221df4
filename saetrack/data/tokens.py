"""Tokenizer and token streams.

A byte-level BPE, tokenized document streams and the fixed-length contexts cut from them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from saetrack.data.documents import EOT_TOKEN, CorpusSourceError

__all__ = [
    "build_tokenizer",
    "context_wraps",
    "contexts",
    "load_tokenizer",
    "n_windows",
    "separator_id",
    "spaced_contexts",
    "token_dtype",
    "tokenize_stream",
    "unigram_entropy",
    "window_order",
]


log = logging.getLogger(__name__)

#: Tokens counted at once by :func:`unigram_entropy` (128 MiB of int64).
_COUNT_CHUNK = 1 << 24
#: Salt of the window permutation (:func:`window_order`), so it is independent of every other draw from the seed.
_ORDER_SALT = 0x5A7E


def build_tokenizer(texts: Sequence[str], vocab_size: int) -> Any:
    """Train a byte-level BPE tokenizer (GPT-2/Pythia style) on ``texts``; returns a ``PreTrainedTokenizerFast``.

    ByteLevel pre-tokenizer (no prefix space) and decoder, so decoding inverts encoding exactly; the one
    special token ``<|endoftext|>`` (id 0) serves as document separator, BOS, EOS, UNK and pad token. The
    ``tokenizers`` BPE trainer is deterministic for given texts (ties are broken by the pair itself).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer, length=len(texts))
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=EOT_TOKEN,
        eos_token=EOT_TOKEN,
        unk_token=EOT_TOKEN,
        pad_token=EOT_TOKEN,
        clean_up_tokenization_spaces=False,
        model_max_length=1_000_000_000,
    )


def load_tokenizer(folder: str | Path) -> Any:
    """The tokenizer saved in ``folder`` (Hugging Face format), via ``AutoTokenizer.from_pretrained``."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def token_dtype(vocab_size: int) -> np.dtype:
    """Storage dtype of token streams: ``uint16`` when every id fits (vocab <= 65535), else ``int32``."""
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.int32)


def separator_id(tokenizer: Any) -> int:
    """Id of the document separator: ``<|endoftext|>`` (ours and Pythia's), else the tokenizer's EOS token."""
    if EOT_TOKEN in tokenizer.get_vocab():
        return int(tokenizer.convert_tokens_to_ids(EOT_TOKEN))
    if tokenizer.eos_token_id is None:
        raise CorpusSourceError(f"tokenizer {type(tokenizer).__name__} has neither {EOT_TOKEN!r} nor an EOS token.")
    return int(tokenizer.eos_token_id)


def tokenize_stream(tokenizer: Any, texts: Sequence[str]) -> np.ndarray:
    """Token ids of ``texts`` joined into one 1-D stream with the separator (:func:`separator_id`) between documents."""
    eot = separator_id(tokenizer)
    encodings = tokenizer.backend_tokenizer.encode_batch(list(texts), add_special_tokens=False)
    dtype = token_dtype(len(tokenizer))
    separator = np.array([eot], dtype=dtype)
    pieces: list[np.ndarray] = []
    for index, encoding in enumerate(encodings):
        if index:
            pieces.append(separator)
        pieces.append(np.asarray(encoding.ids, dtype=dtype))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)


def unigram_entropy(tokens: np.ndarray) -> float:
    """Entropy in nats of the empirical unigram distribution of ``tokens``: ``-sum_v p_v ln p_v``.

    This is the cross-entropy of the best context-free model of the stream; a language model's held-out
    loss (also in nats) should fall far below it. Tokens are counted in chunks, so a memory-mapped stream of
    any length is never copied whole.
    """
    flat = np.asarray(tokens).reshape(-1)
    if flat.size == 0:
        raise ValueError("unigram_entropy needs at least one token; got an empty array.")
    counts = np.zeros(0, dtype=np.int64)
    for start in range(0, flat.size, _COUNT_CHUNK):  # in chunks: a memory-mapped stream may exceed memory
        chunk = np.bincount(np.asarray(flat[start : start + _COUNT_CHUNK], dtype=np.int64))
        if chunk.size > counts.size:
            chunk[: counts.size] += counts
            counts = chunk
        else:
            counts[: chunk.size] += chunk
    p = counts[counts > 0] / flat.size
    return float(-(p * np.log(p)).sum())


def n_windows(n_tokens: int, length: int) -> int:
    """Number of whole non-overlapping windows of ``length`` tokens in a stream of ``n_tokens`` tokens."""
    if length <= 0:
        raise ValueError(f"length = {length} is invalid: must be > 0.")
    return n_tokens // length


def context_wraps(n_tokens: int, start_context: int, n_contexts: int, length: int) -> int:
    """How many times :func:`contexts` passes the end of the stream for these arguments (0: no wrapping).

    Record this next to any slice you draw: a positive value means some contexts repeat tokens seen
    earlier in the stream.
    """
    windows = n_windows(n_tokens, length)
    if windows == 0:
        raise ValueError(f"a stream of {n_tokens} tokens holds no window of length {length}.")
    return max(0, (start_context + n_contexts - 1) // windows) if n_contexts > 0 else 0


@functools.lru_cache(maxsize=4)
def window_order(n_windows: int, seed: int) -> np.ndarray:
    """A seeded permutation of the ``n_windows`` whole windows of a stream (read-only int64 ``[n_windows]``).

    Context ``k`` of a consumer's span is window ``order[k mod W]`` (:func:`contexts`), so every span - a link's
    slice, the analysis and held-out sets, the crosscoder's sample - is a uniform draw over the whole stream rather
    than a consecutive stretch of it (a corpus in chronological or topical document order would otherwise give each
    consumer its own era or topic), and spans that do not overlap in context indices share no window.
    """
    if n_windows <= 0:
        raise ValueError(f"n_windows = {n_windows} is invalid: must be > 0.")
    order = np.random.default_rng([seed, _ORDER_SALT]).permutation(n_windows).astype(np.int64)
    order.setflags(write=False)
    return order


def contexts(
    stream: np.ndarray, start_context: int, n_contexts: int, length: int, order_seed: int | None = None
) -> np.ndarray:
    """Non-overlapping contexts ``[n_contexts, length]`` (int64): contexts ``start_context .. start_context + n - 1``.

    Context ``k`` is window ``w = k mod W`` of the stream, i.e. tokens ``[w * length, (w + 1) * length)``, where ``W =
    len(stream) // length`` is the number of whole windows (a tail shorter than one window is never used); with
    ``order_seed`` it is window ``window_order(W, order_seed)[k mod W]`` instead, so the contexts are spread over the
    whole stream (the pipeline always passes the run's seed; ``None`` keeps stream order). Any number of contexts
    can be drawn: past the last window the indexing wraps; :func:`context_wraps` says whether (and how often) that
    happened. Giving each consumer its own ``start_context`` range gives it its own tokens.
    """
    if start_context < 0 or n_contexts < 0:
        raise ValueError(f"start_context = {start_context}, n_contexts = {n_contexts}: both must be >= 0.")
    flat = np.asarray(stream).reshape(-1)
    windows = n_windows(len(flat), length)
    if windows == 0:
        raise ValueError(f"a stream of {len(flat)} tokens holds no context of length {length}.")
    rows = (start_context + np.arange(n_contexts, dtype=np.int64)) % windows
    if order_seed is not None:
        rows = window_order(windows, order_seed)[rows]
    if n_contexts and context_wraps(len(flat), start_context, n_contexts, length):
        log.info(
            "contexts %d..%d of length %d wrap around a stream of %d windows",
            start_context,
            start_context + n_contexts - 1,
            length,
            windows,
        )
    index = rows[:, None] * length + np.arange(length, dtype=np.int64)[None, :]
    return np.asarray(flat[index.reshape(-1)], dtype=np.int64).reshape(n_contexts, length)


def spaced_contexts(stream: np.ndarray, n_contexts: int, length: int) -> np.ndarray:
    """``n_contexts`` windows ``[n, length]`` (int64) spread evenly over the whole stream.

    Context ``k`` is window ``floor(k * W / n)`` of the ``W = len(stream) // length`` whole windows, so a fixed
    evaluation set samples every part of the stream instead of its first documents (with ``n > W`` some
    windows repeat).
    """
    windows = n_windows(len(stream), length)
    if windows == 0:
        raise ValueError(f"a stream of {len(stream)} tokens holds no context of length {length}.")
    rows = (np.arange(n_contexts, dtype=np.int64) * windows) // max(n_contexts, 1)
    index = rows[:, None] * length + np.arange(length, dtype=np.int64)[None, :]
    return np.asarray(np.asarray(stream).reshape(-1)[index.reshape(-1)], dtype=np.int64).reshape(n_contexts, length)
