"""Streamed ``hf:`` corpora: local datasets in the Hub's layout, read in streaming mode, offline, in seconds."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from saetrack import paths, store
from saetrack.config import CorpusConfig, RunConfig, get_preset
from saetrack.data import hf_stream
from saetrack.data.cache_plan import plan_tokens
from saetrack.data.corpus import (
    corpus_config_hash,
    load_corpus,
    prepare_corpus,
    streamed_token_budget,
    streams_from_dataset,
)
from saetrack.data.documents import CorpusSourceError, Document, corpus_sha256, is_heldout
from saetrack.data.hf_stream import stream_token_corpus
from saetrack.data.tokens import context_wraps, tokenize_stream
from tests.data.neox import VOCAB, build_suite, save_tokenizer, tiny_model

N_ROWS = 300
HELDOUT = 0.3


@pytest.fixture(autouse=True)
def _datasets_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No Hub access, and the datasets cache (lock files) in the test's own folder."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> object:
    """The tiny GPT-NeoX suites' WordLevel tokenizer: word ``w{i}`` is token ``i``, ``<|endoftext|>`` is 0."""
    folder = tmp_path_factory.mktemp("tokenizer")
    save_tokenizer(folder)
    return AutoTokenizer.from_pretrained(str(folder))


def _texts(n_rows: int = N_ROWS, seed: int = 0) -> list[str]:
    """Seeded documents of 5..40 random words ``w2..w63``, every 17th row empty (so it is skipped)."""
    rng = np.random.default_rng(seed)
    texts = []
    for row in range(n_rows):
        words = rng.integers(2, VOCAB, size=int(rng.integers(5, 41)))
        texts.append("" if row % 17 == 5 else " ".join(f"w{w}" for w in words))
    return texts


def _parquet_dataset(folder: Path, texts: list[str]) -> Path:
    """``folder/data/train-0000{k}-of-00002.parquet``: the Hub's layout, two shards, an extra ``meta`` column."""
    (folder / "data").mkdir(parents=True)
    half = len(texts) // 2
    for shard, part in enumerate((texts[:half], texts[half:])):
        table = pa.table({"text": part, "meta": list(range(len(part)))})
        pq.write_table(table, folder / "data" / f"train-{shard:05d}-of-00002.parquet")
    return folder


def _jsonl_dataset(folder: Path, texts: list[str]) -> Path:
    """``folder/train.jsonl`` with ``text`` and ``id`` fields."""
    folder.mkdir(parents=True)
    lines = [json.dumps({"id": i, "text": text}) for i, text in enumerate(texts)]
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def _expected(folder: Path, texts: list[str], tokenizer: object) -> tuple[list[Document], np.ndarray, np.ndarray]:
    """The documents and both full streams as ``tokenize_stream`` gives them, split by ``is_heldout``."""
    docs = [Document(f"hf:{folder}/{i}", text) for i, text in enumerate(texts) if text]
    held = [doc for doc in docs if is_heldout(doc.name, HELDOUT)]
    train = [doc for doc in docs if not is_heldout(doc.name, HELDOUT)]
    return docs, tokenize_stream(tokenizer, [d.text for d in train]), tokenize_stream(tokenizer, [d.text for d in held])


def _corpus(folder: Path, **fields: object) -> CorpusConfig:
    return CorpusConfig(source=f"hf:{folder}", heldout_fraction=HELDOUT, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("layout", ["parquet", "jsonl"])
def test_streams_are_tokenize_stream_cut_at_the_budgets(layout: str, tokenizer: object, tmp_path: Path) -> None:
    texts = _texts()
    make = _parquet_dataset if layout == "parquet" else _jsonl_dataset
    folder = make(tmp_path / layout, texts)
    docs, train, held = _expected(folder, texts, tokenizer)
    n_train, n_held = len(train) - 101, len(held) - 37  # both cut inside the data
    facts = stream_token_corpus(_corpus(folder), tokenizer, n_train, n_held, tmp_path / "out", progress=False)
    got_train = np.load(tmp_path / "out" / "train_tokens.npy")
    got_held = np.load(tmp_path / "out" / "heldout_tokens.npy")
    assert got_train.dtype == np.uint16 and got_held.dtype == np.uint16
    assert (got_train.size, got_held.size) == (n_train, n_held)
    np.testing.assert_array_equal(got_train, train[:n_train])
    np.testing.assert_array_equal(got_held, held[:n_held])
    assert (facts["n_train_tokens"], facts["n_heldout_tokens"]) == (n_train, n_held)
    assert facts["dataset"] == str(folder) and facts["split"] == "train" and facts["text_column"] == "text"
    read = docs[: facts["n_documents"]]
    assert facts["corpus_sha256"] == corpus_sha256(read)
    assert facts["n_chars"] == sum(len(d.text) for d in read)
    assert facts["n_train_documents"] + facts["n_heldout_documents"] + facts["n_skipped_documents"] == len(read)
    assert facts["n_heldout_documents"] <= sum(is_heldout(d.name, HELDOUT) for d in read)


def test_exact_budgets_take_every_document(tokenizer: object, tmp_path: Path) -> None:
    texts = _texts(seed=1)
    folder = _parquet_dataset(tmp_path / "ds", texts)
    docs, train, held = _expected(folder, texts, tokenizer)
    facts = stream_token_corpus(_corpus(folder), tokenizer, len(train), len(held), tmp_path / "out", progress=False)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "train_tokens.npy"), train)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "heldout_tokens.npy"), held)
    assert facts["n_documents"] == len(docs) and facts["n_skipped_documents"] == 0
    assert facts["corpus_sha256"] == corpus_sha256(docs)
    eot = int((np.load(tmp_path / "out" / "heldout_tokens.npy") == 0).sum())
    assert eot == facts["n_heldout_documents"] - 1  # separators between documents only


def test_small_budget_reads_only_the_start(tokenizer: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = _texts(n_rows=2000, seed=2)
    folder = _parquet_dataset(tmp_path / "ds", texts)
    docs, train, held = _expected(folder, texts, tokenizer)
    pulled = []
    original = hf_stream.open_hf_texts

    def counting(name: str, split: str, column: str) -> Iterator[str | None]:
        for text in original(name, split, column):
            pulled.append(text)
            yield text

    monkeypatch.setattr(hf_stream, "open_hf_texts", counting)
    monkeypatch.setattr(hf_stream, "BATCH_DOCUMENTS", 50)
    facts = stream_token_corpus(_corpus(folder), tokenizer, 800, 100, tmp_path / "out", progress=False)
    assert facts["n_rows_read"] < 200 and len(pulled) <= facts["n_rows_read"] + 50  # one batch beyond at most
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "train_tokens.npy"), train[:800])
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "heldout_tokens.npy"), held[:100])
    read = docs[: facts["n_documents"]]
    # reading stopped at the document that filled the later split: without it that split would not be full
    before = read[:-1]
    train_before = tokenize_stream(tokenizer, [d.text for d in before if not is_heldout(d.name, HELDOUT)])
    held_before = tokenize_stream(tokenizer, [d.text for d in before if is_heldout(d.name, HELDOUT)])
    assert len(train_before) < 800 or len(held_before) < 100
    assert facts["n_skipped_documents"] > 0  # the held-out budget was full long before the training one


def test_dataset_that_runs_out_names_the_tokens(tokenizer: object, tmp_path: Path) -> None:
    texts = _texts(seed=3)
    folder = _parquet_dataset(tmp_path / "ds", texts)
    _, train, held = _expected(folder, texts, tokenizer)
    need = len(train) + 1000
    message = f"train {len(train):,} of {need:,} tokens, held-out {len(held):,} of {len(held):,} tokens"
    with pytest.raises(CorpusSourceError, match=re.escape(message)) as info:
        stream_token_corpus(_corpus(folder), tokenizer, need, len(held), tmp_path / "out", progress=False)
    text = str(info.value)
    assert str(folder) in text and "'train'" in text
    assert "chain.first_tokens" in text and "cache.analysis_contexts" in text and "bigger dataset" in text


def test_missing_column_names_the_available_ones(tokenizer: object, tmp_path: Path) -> None:
    folder = _parquet_dataset(tmp_path / "ds", _texts(n_rows=10))
    with pytest.raises(CorpusSourceError, match=r"'body'.*\['text', 'meta'\]"):
        stream_token_corpus(_corpus(folder, hf_text_column="body"), tokenizer, 10, 10, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before any file is made
    jsonl = _jsonl_dataset(tmp_path / "js", _texts(n_rows=10))
    with pytest.raises(CorpusSourceError, match=r"'content'.*\['id', 'text'\]"):
        stream_token_corpus(_corpus(jsonl, hf_text_column="content"), tokenizer, 10, 10, tmp_path / "out")


def test_unreadable_dataset_is_one_clear_error(tokenizer: object, tmp_path: Path) -> None:
    with pytest.raises(CorpusSourceError, match=r"could not load split 'train'.*needs network access"):
        stream_token_corpus(_corpus(tmp_path / "nowhere"), tokenizer, 10, 10, tmp_path / "out")
    with pytest.raises(ValueError, match="> 0 held-out tokens"):
        stream_token_corpus(_corpus(tmp_path / "nowhere"), tokenizer, 10, 0, tmp_path / "out")


# ----------------------------------------------------------------------------------------------
# The corpus stage with a local GPT-NeoX suite
# ----------------------------------------------------------------------------------------------


def _local_run(suite: Path, data: Path, **overrides: object) -> RunConfig:
    """The smoke preset on a local suite, reading ``hf:<data>``, with small token budgets."""
    values: dict[str, object] = {
        "model.source": "local",
        "model.local_path": str(suite),
        "corpus.source": f"hf:{data}",
        "corpus.heldout_fraction": HELDOUT,
        "chain.first_tokens": 1024,
        "chain.link_tokens": 256,
        "cache.analysis_contexts": 4,
        "cache.heldout_tokens": 128,
    }
    values.update(overrides)
    return get_preset("smoke").with_overrides(values)


@pytest.mark.usefixtures("hub_offline", "one_thread")
def test_prepare_corpus_streams_with_the_models_tokenizer(tokenizer: object, tmp_path: Path) -> None:
    texts = _texts(n_rows=800, seed=4)
    data = _parquet_dataset(tmp_path / "ds", texts)
    suite = tmp_path / "suite"
    build_suite(suite, {step: step + 1 for step in get_preset("smoke").model.checkpoint_steps})
    run = _local_run(suite, data)
    assert streams_from_dataset(run)
    n_train, n_held = streamed_token_budget(run)
    plan = plan_tokens(run)
    assert n_train == sum(n for _, n in plan.train.values()) * 32 and n_held == (4 + 4) * 32
    run_dir = tmp_path / "run"
    manifest = prepare_corpus(run, run_dir, progress=False)
    loaded_tokenizer, train, held = load_corpus(run_dir)
    _, all_train, all_held = _expected(data, texts, tokenizer)
    np.testing.assert_array_equal(train, all_train[:n_train])
    np.testing.assert_array_equal(held, all_held[:n_held])
    assert loaded_tokenizer.convert_tokens_to_ids("w7") == 7
    assert manifest["streamed"] and manifest["config_hash"] == corpus_config_hash(run)
    assert (manifest["n_train_tokens"], manifest["n_heldout_tokens"]) == (n_train, n_held)
    assert manifest["tokenizer_source"] == "local" and manifest["vocab_size"] == VOCAB
    assert manifest["token_dtype"] == "uint16" and manifest["separator_token_id"] == 0
    assert 0 < manifest["heldout_unigram_entropy"] <= np.log(VOCAB)
    assert store.manifest_is_current(run_dir / paths.CORPUS_DIR, corpus_config_hash(run), verify_files=True)
    for start, n_contexts in plan.train.values():  # the cache stage never wraps around a streamed corpus
        assert context_wraps(len(train), start, n_contexts, 32) == 0
    assert prepare_corpus(run, run_dir, progress=False)["finished_at"] == manifest["finished_at"]  # current
    bigger = _local_run(suite, data, **{"chain.link_tokens": 512})
    assert corpus_config_hash(bigger) == corpus_config_hash(run)  # the training budget is checked, not hashed
    rebuilt = prepare_corpus(bigger, run_dir, progress=False)
    assert rebuilt["n_train_tokens"] == streamed_token_budget(bigger)[0] > n_train
    assert len(load_corpus(run_dir)[1]) == rebuilt["n_train_tokens"]
    assert prepare_corpus(run, run_dir, progress=False)["finished_at"] == rebuilt["finished_at"]  # enough tokens


def test_a_corpus_for_a_hub_chain_streams_only_the_heldout_text(tokenizer: object, tmp_path: Path) -> None:
    data = _parquet_dataset(tmp_path / "ds", _texts(n_rows=800, seed=4))
    suite = tmp_path / "suite"
    build_suite(suite, {step: step + 1 for step in get_preset("smoke").model.checkpoint_steps})
    run = _local_run(suite, data)
    manifest = prepare_corpus(run, tmp_path / "run", progress=False, training_tokens=False)
    _, train, held = load_corpus(tmp_path / "run")
    assert manifest["n_train_tokens"] == len(train) == 0
    assert len(held) == streamed_token_budget(run)[1]
    trained = prepare_corpus(run, tmp_path / "run", progress=False)  # training needs the tokens: rebuilt
    assert trained["n_train_tokens"] == streamed_token_budget(run)[0] > 0


@pytest.mark.usefixtures("hub_offline", "one_thread")
def test_tokenizer_bigger_than_the_model_vocab_is_refused(tmp_path: Path) -> None:
    data = _parquet_dataset(tmp_path / "ds", _texts(n_rows=20))
    suite = tmp_path / "suite"
    for step in get_preset("smoke").model.checkpoint_steps:
        tiny_model(step, vocab_size=32).save_pretrained(suite / f"step{step}")
    save_tokenizer(suite / "tokenizer")  # 64 tokens
    with pytest.raises(CorpusSourceError, match=rf"{VOCAB} tokens but the model has vocab_size = 32"):
        prepare_corpus(_local_run(suite, data), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / paths.CORPUS_DIR / "manifest.json").exists()
