"""Tokenizer and token streams: BPE round trip, unigram entropy, stream joining, fixed-length contexts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from saetrack.data.documents import EOT_TOKEN, CorpusSourceError
from saetrack.data.tokens import (
    build_tokenizer,
    context_wraps,
    contexts,
    load_tokenizer,
    n_windows,
    separator_id,
    spaced_contexts,
    token_dtype,
    tokenize_stream,
    unigram_entropy,
    window_order,
)


def test_tokenizer_round_trips_text(built: tuple[Path, dict]) -> None:
    run_dir, manifest = built
    tokenizer = load_tokenizer(run_dir / "corpus" / "tokenizer")
    assert len(tokenizer) == manifest["vocab_size"] == 512
    text = "def f(x):\n\treturn {'ü': x ** 2}  # naïve 世界 😀\r\n\n    pass"
    ids = tokenizer(text)["input_ids"]
    assert len(ids) < len(text.encode())  # BPE merges compress the bytes
    assert tokenizer.decode(ids) == text
    assert tokenizer.eos_token == EOT_TOKEN


def test_unigram_entropy_of_known_distributions() -> None:
    assert unigram_entropy(np.array([0, 1, 2, 3] * 5, dtype=np.uint16)) == pytest.approx(math.log(4))
    assert unigram_entropy(np.array([7, 7, 7])) == pytest.approx(0.0)
    expected = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert unigram_entropy(np.array([[5, 5], [5, 9]])) == pytest.approx(expected)
    with pytest.raises(ValueError, match="empty"):
        unigram_entropy(np.array([], dtype=np.int64))


def test_contexts_are_consecutive_windows_and_wrap() -> None:
    stream = np.arange(10, dtype=np.uint16)  # 3 whole windows of 3; token 9 is never used
    out = contexts(stream, 1, 2, 3)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [[3, 4, 5], [6, 7, 8]])
    assert context_wraps(len(stream), 1, 2, 3) == 0
    wrapped = contexts(stream, 2, 5, 3)
    np.testing.assert_array_equal(wrapped, [[6, 7, 8], [0, 1, 2], [3, 4, 5], [6, 7, 8], [0, 1, 2]])
    assert context_wraps(len(stream), 2, 5, 3) == 2
    assert contexts(stream, 0, 0, 3).shape == (0, 3)
    with pytest.raises(ValueError, match="no context"):
        contexts(stream, 0, 1, 11)


def test_ordered_contexts_spread_every_span_over_the_whole_stream() -> None:
    # a stream in "chronological" order: window w holds era w // 100 of 10 eras
    length, windows = 4, 1000
    stream = np.repeat(np.arange(windows), length)
    order = window_order(windows, 7)
    assert sorted(order.tolist()) == list(range(windows)) and not order.flags.writeable
    np.testing.assert_array_equal(order, window_order(windows, 7))
    assert not np.array_equal(order, window_order(windows, 8))
    spans = [contexts(stream, start, 100, length, order_seed=7)[:, 0] for start in range(0, windows, 100)]
    for span in spans:  # each consecutive span of 100 contexts reads every era, about 10 windows of each
        counts = np.bincount(span // 100, minlength=10)
        assert counts.min() >= 3 and counts.max() <= 20
    assert len(np.unique(np.concatenate(spans))) == windows  # disjoint spans share no window
    in_order = contexts(stream, 0, 100, length)[:, 0]
    assert set((in_order // 100).tolist()) == {0}  # without an order a span is one era
    # past the last window the ordered indexing wraps like the plain one
    np.testing.assert_array_equal(contexts(stream, windows - 1, 2, length, order_seed=7)[:, 0], order[[windows - 1, 0]])
    with pytest.raises(ValueError, match="n_windows"):
        window_order(0, 1)


def test_spaced_contexts_cover_the_stream() -> None:
    stream = np.arange(100)  # 10 windows of 10
    np.testing.assert_array_equal(spaced_contexts(stream, 5, 10)[:, 0], [0, 20, 40, 60, 80])
    np.testing.assert_array_equal(spaced_contexts(stream, 3, 10)[:, 0], [0, 30, 60])
    assert spaced_contexts(stream, 20, 10).shape == (20, 10)  # more than the windows: some repeat


@pytest.fixture(scope="module")
def tiny_bpe():
    """A byte-level BPE of 300 tokens trained on a few lines (milliseconds)."""
    texts = ["def f(x):\n    return x + 1\n", "the quick brown fox", "for i in range(10):\n    print(i)\n"] * 5
    return build_tokenizer(texts, vocab_size=300)


def test_built_tokenizer_is_deterministic_and_inverts_exactly(tiny_bpe) -> None:
    again = build_tokenizer(["def f(x):\n    return x + 1\n", "the quick brown fox",
                             "for i in range(10):\n    print(i)\n"] * 5, vocab_size=300)  # fmt: skip
    assert again.get_vocab() == tiny_bpe.get_vocab()
    assert tiny_bpe.convert_tokens_to_ids(EOT_TOKEN) == 0 == separator_id(tiny_bpe)
    assert tiny_bpe.eos_token == tiny_bpe.bos_token == tiny_bpe.pad_token == EOT_TOKEN
    text = "unseen words ü 世界\ttabs"
    assert tiny_bpe.decode(tiny_bpe(text)["input_ids"]) == text  # byte level: nothing is unknown


def test_stream_joins_documents_with_the_separator(tiny_bpe) -> None:
    texts = ["def f", "the fox", "print(i)"]
    stream = tokenize_stream(tiny_bpe, texts)
    assert stream.dtype == np.uint16 and stream.ndim == 1
    pieces = [tiny_bpe(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert stream.tolist() == [*pieces[0], 0, *pieces[1], 0, *pieces[2]]
    assert tiny_bpe.decode(stream.tolist()) == EOT_TOKEN.join(texts)
    assert tokenize_stream(tiny_bpe, []).shape == (0,)


def test_separator_falls_back_to_eos_and_needs_one() -> None:
    class Tok:
        def __init__(self, eos: int | None) -> None:
            self.eos_token_id = eos

        def get_vocab(self) -> dict[str, int]:
            return {"a": 0, "b": 1}

    assert separator_id(Tok(1)) == 1
    with pytest.raises(CorpusSourceError, match="neither"):
        separator_id(Tok(None))


def test_token_dtype_and_window_counts() -> None:
    assert token_dtype(512) == np.uint16 and token_dtype(65535) == np.uint16
    assert token_dtype(65536) == np.int32 and token_dtype(50304) == np.uint16  # Pythia's vocabulary fits uint16
    assert n_windows(10, 3) == 3 and n_windows(2, 3) == 0
    with pytest.raises(ValueError, match="length = 0"):
        n_windows(10, 0)
    assert context_wraps(10, 0, 3, 3) == 0 and context_wraps(10, 0, 7, 3) == 2 and context_wraps(10, 5, 0, 3) == 0
    with pytest.raises(ValueError, match=">= 0"):
        contexts(np.arange(10), -1, 2, 3)
    with pytest.raises(ValueError, match="no context"):
        spaced_contexts(np.arange(5), 2, 6)
