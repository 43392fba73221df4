"""Documents of a corpus: the offline standard library, local files and folders, the cap and the held-out split."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import datasets
import pytest

from saetrack.config import CorpusConfig, RunConfig, get_preset
from saetrack.data.documents import (
    EOT_TOKEN,
    CorpusSourceError,
    Document,
    collect_documents,
    corpus_sha256,
    is_heldout,
    open_hf_texts,
    split_documents,
    update_corpus_digest,
)


def test_stdlib_excludes_tests_and_site_packages() -> None:
    names = [doc.name for doc in collect_documents(CorpusConfig(source="stdlib"))]
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
    docs = [Document(f"doc{i}", "text") for i in range(3)]
    train, heldout = split_documents(docs, 1e-9)
    assert len(heldout) == 1 and len(train) == 2


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


def _local(source: Path, **overrides: object) -> RunConfig:
    return get_preset("smoke").with_overrides({"corpus.source": str(source), **overrides})


def test_file_with_separators_is_cut_at_them(tmp_path: Path) -> None:
    path = tmp_path / "docs.txt"
    path.write_text(f"first doc{EOT_TOKEN}second doc{EOT_TOKEN}  \n{EOT_TOKEN}third")
    docs = collect_documents(_local(path).corpus)
    assert [(d.name, d.text) for d in docs] == [
        ("docs.txt#000000", "first doc"),
        ("docs.txt#000001", "second doc"),
        ("docs.txt#000002", "third"),  # the blank piece between two separators is dropped
    ]


def test_cap_takes_whole_documents_then_cuts_the_last(tmp_path: Path) -> None:
    folder = tmp_path / "texts"
    folder.mkdir()
    for i in range(5):
        (folder / f"d{i}.txt").write_text(str(i) * 100)
    docs = collect_documents(_local(folder, **{"corpus.max_chars": 250}).corpus)
    assert sum(len(d.text) for d in docs) == 250
    assert [d.name for d in docs] == sorted(d.name for d in docs)
    assert sorted(len(d.text) for d in docs) == [50, 100, 100]  # two whole documents and the cut one
    assert all(set(d.text) == {d.name[1]} for d in docs)  # each text is its own document's
    again = collect_documents(_local(folder, **{"corpus.max_chars": 250}).corpus)
    assert again == docs  # which documents are taken follows a hash of their names: reproducible


def test_folder_without_text_or_with_empty_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data.bin").write_bytes(b"\x00")
    with pytest.raises(CorpusSourceError, match="holds no"):
        collect_documents(_local(tmp_path).corpus)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(CorpusSourceError, match="no non-empty documents"):
        collect_documents(_local(tmp_path).corpus)


def test_corpus_sha256_by_hand_and_held_out_hash() -> None:
    docs = [Document("a", "xy"), Document("b", "é")]
    expected = hashlib.sha256(b"a\0xy\0" + b"b\0" + "é".encode() + b"\0").hexdigest()
    assert corpus_sha256(docs) == expected
    assert corpus_sha256(reversed(docs)) != expected  # the order is part of the corpus
    running = hashlib.sha256()
    for doc in docs:  # document by document, as a streamed corpus hashes them
        update_corpus_digest(running, [doc])
    assert running.hexdigest() == expected
    value = int.from_bytes(hashlib.sha256(b"stdlib/json/__init__.py").digest()[:8], "big") / 2**64
    assert is_heldout("stdlib/json/__init__.py", value + 1e-9) and not is_heldout("stdlib/json/__init__.py", value)
    assert not is_heldout("anything", 0.0) and is_heldout("anything", 1.0)


def test_split_keeps_order_and_needs_two_documents() -> None:
    docs = [Document(f"doc{i}", "text") for i in range(40)]
    train, heldout = split_documents(docs, 0.3)
    assert train == [d for d in docs if not is_heldout(d.name, 0.3)]
    assert heldout == [d for d in docs if is_heldout(d.name, 0.3)]
    train_all, held_all = split_documents(docs[:3], 1.0)  # everything hashed out: one document stays in training
    assert len(train_all) == 1 and len(held_all) == 2
    with pytest.raises(CorpusSourceError, match="at least 2"):
        split_documents(docs[:1], 0.1)


def test_hf_dataset_documents_are_read_streaming(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    folder = tmp_path / "ds"
    folder.mkdir()
    rows = [{"text": "" if i == 3 else f"row {i} text", "n": i} for i in range(12)]
    (folder / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    calls = []
    load = datasets.load_dataset

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(kwargs)
        return load(*args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", spy)
    assert list(open_hf_texts(str(folder), "train", "text")) == [row["text"] for row in rows]
    docs = collect_documents(_local(folder, **{"corpus.source": f"hf:{folder}"}).corpus)
    assert all(call["streaming"] for call in calls)
    # the names of the in-memory reading: zero-padded row indices; the empty row is dropped
    assert [(d.name, d.text) for d in docs] == [(f"hf:{folder}/{i:02d}", f"row {i} text") for i in range(12) if i != 3]
    with pytest.raises(CorpusSourceError, match=r"'body'.*columns are \['text', 'n'\]"):
        open_hf_texts(str(folder), "train", "body")
