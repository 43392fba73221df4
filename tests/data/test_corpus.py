"""The corpus stage: deterministic streams, skipped when current, decoded back to its documents, local sources."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from saetrack import paths, store
from saetrack.config import RunConfig, get_preset
from saetrack.data import tokens
from saetrack.data.corpus import corpus_config_hash, load_corpus, prepare_corpus, streams_from_dataset
from saetrack.data.documents import EOT_TOKEN, collect_documents, split_documents
from saetrack.data.tokens import unigram_entropy


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
    assert store.manifest_is_current(run_dir / "corpus", corpus_config_hash(smoke), verify_files=True)


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


def test_heldout_entropy_recorded(built: tuple[Path, dict]) -> None:
    run_dir, manifest = built
    _, _, heldout = load_corpus(run_dir)
    assert manifest["heldout_unigram_entropy"] == pytest.approx(unigram_entropy(heldout))
    assert 3.0 < manifest["heldout_unigram_entropy"] < math.log(512)


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


def test_load_corpus_before_prepare_raises(tmp_path: Path) -> None:
    with pytest.raises(store.StaleArtifactError, match="prepare_corpus"):
        load_corpus(tmp_path)


def test_local_checkpoints_are_tokenized_with_their_own_tokenizer(
    smoke: RunConfig, smoke_run_dir: Path, tmp_path: Path
) -> None:
    local = smoke.with_overrides({"model.source": "local", "model.local_path": str(smoke_run_dir / paths.MODEL_DIR)})
    manifest = prepare_corpus(local, tmp_path)
    assert manifest["tokenizer_source"] == "local"
    for name in ("train_tokens.npy", "heldout_tokens.npy"):  # the suite's own tokenizer gives the same streams
        np.testing.assert_array_equal(
            np.load(tmp_path / paths.CORPUS_DIR / name), np.load(smoke_run_dir / paths.CORPUS_DIR / name)
        )


def test_corpus_hash_covers_the_model_only_when_its_tokenizer_is_used(smoke: RunConfig) -> None:
    local = smoke.with_overrides({"model.source": "local", "model.local_path": "elsewhere"})
    assert corpus_config_hash(local) != corpus_config_hash(smoke)  # the suite trains its own tokenizer
    assert corpus_config_hash(smoke.with_overrides({"model.local_path": "other"})) == corpus_config_hash(smoke)
    assert corpus_config_hash(smoke.with_overrides({"chain.l1_coefficient": 1.0})) == corpus_config_hash(smoke)


def test_runs_with_other_seeds_share_a_corpus(smoke: RunConfig) -> None:
    # documents, held-out split and tokenizer do not depend on the seed: the seed study reuses one corpus
    assert corpus_config_hash(smoke.with_overrides({"seed": 5})) == corpus_config_hash(smoke)
    assert corpus_config_hash(smoke.with_overrides({"corpus.heldout_fraction": 0.2})) != corpus_config_hash(smoke)


def test_hashes_of_unstreamed_corpora_are_pinned() -> None:
    # pinned so that a change of hash (which rebuilds every run directory's corpus) is a decision, not an accident;
    # last changed when the seed left the corpus hash (the seed study shares one corpus across seeds)
    assert corpus_config_hash(get_preset("smoke")) == "c5b730c0d31d6a0d"
    # nano on the standard-library text keeps its hash; on the English default it has its own
    assert corpus_config_hash(get_preset("nano", {"corpus.source": "stdlib"})) == "a0d25455a0958f83"
    assert corpus_config_hash(get_preset("nano")) == "d09b7970b6071165"
    local = get_preset("smoke").with_overrides({"model.source": "local", "model.local_path": "elsewhere"})
    # last changed when the checkpoint list and the model's shape left it (a watched run gains checkpoints)
    assert corpus_config_hash(local) == "ff2bd1d52a64be79" and not streams_from_dataset(local)
    fewer = local.with_overrides({"model.checkpoint_steps": [0, 1], "chain.schedule": [0, 1], "chain.baseline": [],
                                  "crosscoder.snapshots": []})  # fmt: skip
    assert corpus_config_hash(fewer) == corpus_config_hash(local)
    suite_hf = get_preset("smoke").with_overrides({"corpus.source": "hf:x/y"})
    assert corpus_config_hash(suite_hf) == "6eb1b0ad22c7c1cf" and not streams_from_dataset(suite_hf)


def test_unigram_entropy_counts_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = np.random.default_rng(0).integers(0, 300, size=10_001).astype(np.uint16)
    stream[0], stream[-1] = 999, 1500  # chunks with more and fewer distinct ids than the counts so far
    whole = unigram_entropy(stream)
    monkeypatch.setattr(tokens, "_COUNT_CHUNK", 1000)
    assert unigram_entropy(stream) == pytest.approx(whole, rel=1e-12)
    counts = np.bincount(stream)
    p = counts[counts > 0] / stream.size
    assert whole == pytest.approx(float(-(p * np.log(p)).sum()), rel=1e-12)
