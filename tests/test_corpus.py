"""The offline corpus: determinism, held-out split, tokenizer round trip, unigram entropy, context windows."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from saetrack import store
from saetrack.config import RunConfig, get_preset
from saetrack.data.corpus import load_corpus, prepare_corpus
from saetrack.data.documents import EOT_TOKEN, CorpusSourceError, collect_documents, is_heldout, split_documents
from saetrack.data.tokens import context_wraps, contexts, load_tokenizer, spaced_contexts, unigram_entropy


@pytest.fixture(scope="module")
def built(smoke: RunConfig, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("corpus_run")
    return run_dir, prepare_corpus(smoke, run_dir)


def test_corpus_is_deterministic(smoke: RunConfig, built: tuple[Path, dict], tmp_path: Path) -> None:
    _, first = built
    second = prepare_corpus(smoke, tmp_path)
    assert second["corpus_sha256"] == first["corpus_sha256"]
    assert second["files"] == first["files"]  # token streams and tokenizer files, byte for byte
    assert first["n_chars"] == smoke.corpus.max_chars
    assert first["python_version"]


def test_current_corpus_is_skipped(smoke: RunConfig, built: tuple[Path, dict]) -> None:
    run_dir, manifest = built
    assert prepare_corpus(smoke, run_dir)["finished_at"] == manifest["finished_at"]
    assert store.manifest_is_current(run_dir / "corpus", smoke.section_hash("corpus"), verify_files=True)


def test_stdlib_excludes_tests_and_site_packages() -> None:
    names = [doc.name for doc in collect_documents(get_preset("nano").corpus)]
    assert names == sorted(names)
    assert any(name.startswith("pydoc/") for name in names)
    assert any(name == "stdlib/json/__init__.py" for name in names)
    for bad in ("/test/", "/tests/", "site-packages", "idle_test", "encodings/cp1252.py"):
        assert not any(bad in name for name in names), bad
    assert "stdlib/encodings/utf_8.py" in names  # hand-written codecs stay; generated tables go


def test_heldout_split_is_disjoint_and_follows_hash(smoke: RunConfig, built: tuple[Path, dict]) -> None:
    _, manifest = built
    docs = collect_documents(smoke.corpus)
    train, heldout = split_documents(docs, smoke.corpus.heldout_fraction)
    train_names, held_names = {d.name for d in train}, {d.name for d in heldout}
    assert train_names.isdisjoint(held_names)
    assert train_names | held_names == {d.name for d in docs}
    assert sorted(held_names) == sorted(manifest["heldout_documents"])
    assert all(is_heldout(name, smoke.corpus.heldout_fraction) for name in held_names)
    assert manifest["n_train_documents"] + manifest["n_heldout_documents"] == manifest["n_documents"]


def test_split_never_leaves_a_side_empty() -> None:
    from saetrack.data.documents import Document

    docs = [Document(f"doc{i}", "text") for i in range(3)]
    train, heldout = split_documents(docs, 1e-9)
    assert len(heldout) == 1 and len(train) == 2


def test_streams_decode_to_documents(smoke: RunConfig, built: tuple[Path, dict]) -> None:
    run_dir, manifest = built
    tokenizer, train_tokens, heldout_tokens = load_corpus(run_dir)
    assert train_tokens.dtype == np.uint16 and heldout_tokens.dtype == np.uint16
    assert isinstance(train_tokens, np.memmap)
    assert (len(train_tokens), len(heldout_tokens)) == (manifest["n_train_tokens"], manifest["n_heldout_tokens"])
    _, heldout = split_documents(collect_documents(smoke.corpus), smoke.corpus.heldout_fraction)
    assert tokenizer.decode(heldout_tokens.tolist()) == EOT_TOKEN.join(doc.text for doc in heldout)
    eot = tokenizer.convert_tokens_to_ids(EOT_TOKEN)
    assert int((np.asarray(train_tokens) == eot).sum()) == manifest["n_train_documents"] - 1


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


def test_heldout_entropy_recorded(built: tuple[Path, dict]) -> None:
    run_dir, manifest = built
    _, _, heldout = load_corpus(run_dir)
    assert manifest["heldout_unigram_entropy"] == pytest.approx(unigram_entropy(heldout))
    assert 3.0 < manifest["heldout_unigram_entropy"] < math.log(512)


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


def test_spaced_contexts_cover_the_stream() -> None:
    stream = np.arange(100)  # 10 windows of 10
    np.testing.assert_array_equal(spaced_contexts(stream, 5, 10)[:, 0], [0, 20, 40, 60, 80])
    np.testing.assert_array_equal(spaced_contexts(stream, 3, 10)[:, 0], [0, 30, 60])
    assert spaced_contexts(stream, 20, 10).shape == (20, 10)  # more than the windows: some repeat


def test_local_folder_source(tmp_path: Path) -> None:
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    for i in range(6):
        (folder / f"doc{i}.txt").write_text(f"Document {i}: the quick brown fox jumps over the lazy dog.\n" * 20)
    (folder / "sub" / "notes.md").write_text("# Notes\n\nSome *markdown* text.\n")
    (folder / "data.bin").write_bytes(b"\x00\x01")
    run = get_preset("smoke").with_overrides({"corpus.source": str(folder), "corpus.vocab_size": 300})
    docs = collect_documents(run.corpus)
    assert [d.name for d in docs] == [*(f"doc{i}.txt" for i in range(6)), "sub/notes.md"]
    manifest = prepare_corpus(run, tmp_path / "run")
    assert manifest["n_documents"] == 7 and manifest["n_heldout_documents"] >= 1
    tokenizer, train, _ = load_corpus(tmp_path / "run")
    assert "quick brown fox" in tokenizer.decode(train[:200].tolist())


def test_single_file_is_cut_into_documents(tmp_path: Path) -> None:
    path = tmp_path / "book.txt"
    path.write_text("".join(f"line {i} of a long text file\n" for i in range(2000)))
    run = get_preset("smoke").with_overrides({"corpus.source": str(path)})
    docs = collect_documents(run.corpus)
    assert len(docs) > 3
    assert "".join(d.text for d in docs) == path.read_text()


def test_missing_source_and_unreachable_dataset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    run = get_preset("smoke").with_overrides({"corpus.source": str(tmp_path / "nowhere")})
    with pytest.raises(CorpusSourceError, match="neither a file nor a folder"):
        collect_documents(run.corpus)

    import datasets

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)  # never touch the Hub in tests
    run = get_preset("smoke").with_overrides({"corpus.source": "hf:someone/some-corpus"})
    with pytest.raises(CorpusSourceError, match="needs network access"):
        collect_documents(run.corpus)


def test_load_corpus_before_prepare_raises(tmp_path: Path) -> None:
    with pytest.raises(store.StaleArtifactError, match="prepare_corpus"):
        load_corpus(tmp_path)
