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

import hashlib
import logging
import sys
import sysconfig
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from saetrack import paths, store
from saetrack.config import CorpusConfig, RunConfig

__all__ = [
    "EOT_TOKEN",
    "CorpusSourceError",
    "Document",
    "build_tokenizer",
    "collect_documents",
    "context_wraps",
    "contexts",
    "corpus_config_hash",
    "corpus_sha256",
    "is_heldout",
    "load_corpus",
    "load_tokenizer",
    "n_windows",
    "prepare_corpus",
    "separator_id",
    "spaced_contexts",
    "split_documents",
    "token_dtype",
    "tokenize_stream",
    "unigram_entropy",
]

log = logging.getLogger(__name__)

#: Special token separating documents in the token streams (Pythia's end-of-text token).
EOT_TOKEN = "<|endoftext|>"
TRAIN_TOKENS = "train_tokens.npy"
HELDOUT_TOKENS = "heldout_tokens.npy"

#: Folder names (anywhere in a relative path) excluded from the standard-library corpus.
_STDLIB_EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})
#: ``pydoc_data``'s sources are its topics dict, which is taken as documentation text instead.
_STDLIB_EXCLUDED_TOP = frozenset({"pydoc_data"})
#: Marker of machine-generated codec tables (``encodings/cp*.py`` etc., made by ``gencodec.py``): about 10% of
#: the standard library's characters, all 256-entry hex tables, excluded so they do not dominate the corpus.
_GENERATED_MARKER = "with gencodec.py"
#: File suffixes read from a local folder source.
_LOCAL_SUFFIXES = (".txt", ".md", ".py", ".rst")
#: A single local file without separators is cut into documents of whole lines of about this many characters.
_FILE_CHUNK_CHARS = 8192


class CorpusSourceError(ValueError):
    """The corpus source cannot be read (missing path, no text files, unreachable dataset)."""


@dataclass(frozen=True)
class Document:
    """One document of the corpus: a stable name (used for the held-out hash) and its text."""

    name: str
    text: str


# ----------------------------------------------------------------------------------------------
# Collecting documents
# ----------------------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


def _stdlib_documents() -> list[Document]:
    """The interpreter's standard-library sources and its documentation topics.

    Excluded: third-party packages (``site-packages``, ``dist-packages``), test suites (any ``test``,
    ``tests`` or ``idle_test`` folder), ``pydoc_data`` (its topics are taken as text instead) and the
    machine-generated codec tables.
    """
    import pydoc_data.topics

    root = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if _STDLIB_EXCLUDED_DIRS.intersection(parts[:-1]) or parts[0] in _STDLIB_EXCLUDED_TOP:
            continue
        text = _read_text(path)
        if _GENERATED_MARKER not in text:
            docs.append(Document(f"stdlib/{'/'.join(parts)}", text))
    topics: dict[str, str] = pydoc_data.topics.topics
    docs.extend(Document(f"pydoc/{key}", text) for key, text in topics.items())
    return docs


def _split_file(path: Path, label: str) -> list[Document]:
    """A single text file as documents: split on ``<|endoftext|>`` if present, else chunks of whole lines."""
    text = _read_text(path)
    if EOT_TOKEN in text:
        pieces = [piece for piece in text.split(EOT_TOKEN) if piece.strip()]
    else:
        pieces, current, size = [], [], 0
        for line in text.splitlines(keepends=True):
            current.append(line)
            size += len(line)
            if size >= _FILE_CHUNK_CHARS:
                pieces.append("".join(current))
                current, size = [], 0
        if current:
            pieces.append("".join(current))
    return [Document(f"{label}#{index:06d}", piece) for index, piece in enumerate(pieces)]


def _local_documents(source: str) -> list[Document]:
    """Documents of a local file (split into pieces) or folder (one document per text file, sorted)."""
    path = Path(source).expanduser()
    if not path.is_absolute():
        path = paths.REPO_ROOT / path
    if path.is_file():
        return _split_file(path, path.name)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _LOCAL_SUFFIXES)
        if not files:
            raise CorpusSourceError(f"corpus.source = {source!r}: the folder {path} holds no {_LOCAL_SUFFIXES} files.")
        return [Document(p.relative_to(path).as_posix(), _read_text(p)) for p in files]
    raise CorpusSourceError(
        f"corpus.source = {source!r} is invalid: {path} is neither a file nor a folder "
        "(allowed: 'stdlib', a local text file or folder, or 'hf:<dataset>')."
    )


def _hf_documents(name: str, split: str, column: str) -> list[Document]:
    """Rows of a Hugging Face dataset (network needed unless it is already in the local datasets cache)."""
    try:
        import datasets

        data = datasets.load_dataset(name, split=split)
    except Exception as error:  # the library raises many types (connection, not found, offline mode)
        raise CorpusSourceError(
            f"corpus.source = 'hf:{name}': could not load split {split!r} of the Hugging Face dataset {name!r} "
            f"({type(error).__name__}: {error}). The 'hf:' source needs network access to the Hub (or the dataset "
            "in the local datasets cache); offline, use source='stdlib' or a local text file or folder."
        ) from error
    if column not in data.column_names:
        raise CorpusSourceError(
            f"corpus.hf_text_column = {column!r} is invalid: dataset {name!r} has columns {data.column_names}."
        )
    width = len(str(len(data)))
    return [Document(f"hf:{name}/{i:0{width}d}", text) for i, text in enumerate(data[column]) if text]


def _cap_documents(docs: Sequence[Document], max_chars: int | None) -> list[Document]:
    """At most ``max_chars`` characters of documents, taken in the order of a hash of their names.

    Hash order spreads a small cap over the whole corpus instead of its alphabetical start (the hash is
    salted so that it is independent of the held-out hash of :func:`is_heldout`); the last
    document taken is truncated so the cap is met exactly. The result is returned sorted by name.
    """
    if max_chars is None:
        return sorted(docs, key=lambda d: d.name)
    taken, total = [], 0
    for doc in sorted(docs, key=lambda d: _name_hash(d.name, salt="cap")):
        if total >= max_chars:
            break
        text = doc.text[: max_chars - total]
        taken.append(Document(doc.name, text))
        total += len(text)
    return sorted(taken, key=lambda d: d.name)


def collect_documents(corpus: CorpusConfig) -> list[Document]:
    """The corpus's documents, sorted by name and capped at ``corpus.max_chars`` characters.

    ``source`` is ``"stdlib"``, ``"hf:<dataset>"`` or a local file or folder (relative paths are taken
    from the repository root). Empty documents are dropped.
    """
    if corpus.source == "stdlib":
        docs = _stdlib_documents()
    elif corpus.source.startswith("hf:"):
        docs = _hf_documents(corpus.source[3:], corpus.hf_split, corpus.hf_text_column)
    else:
        docs = _local_documents(corpus.source)
    docs = [doc for doc in docs if doc.text]
    names = [doc.name for doc in docs]
    if len(set(names)) != len(names):
        raise CorpusSourceError(f"corpus.source = {corpus.source!r} yields duplicate document names.")
    if not docs:
        raise CorpusSourceError(f"corpus.source = {corpus.source!r} yields no non-empty documents.")
    return _cap_documents(docs, corpus.max_chars)


def corpus_sha256(docs: Iterable[Document]) -> str:
    """SHA-256 of the concatenated corpus (each document's name and text, NUL-separated, in the given order)."""
    digest = hashlib.sha256()
    for doc in docs:
        digest.update(doc.name.encode() + b"\0" + doc.text.encode("utf-8", errors="replace") + b"\0")
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------
# Held-out split
# ----------------------------------------------------------------------------------------------


def _name_hash(name: str, salt: str = "") -> float:
    """A number in [0, 1) from the SHA-256 of a document name (prefixed by ``salt``)."""
    return int.from_bytes(hashlib.sha256((salt + name).encode()).digest()[:8], "big") / 2**64


def is_heldout(name: str, heldout_fraction: float) -> bool:
    """Whether the document ``name`` is held out: the hash of its name falls under ``heldout_fraction``."""
    return _name_hash(name) < heldout_fraction


def split_documents(docs: Sequence[Document], heldout_fraction: float) -> tuple[list[Document], list[Document]]:
    """Split documents into (train, held-out) by :func:`is_heldout`, keeping their order.

    Both splits are guaranteed non-empty when there are at least two documents: if the hash rule holds out
    none (or all), the document with the smallest (largest) name hash is moved, which is still deterministic.
    """
    if len(docs) < 2:
        raise CorpusSourceError(f"the corpus has {len(docs)} document(s); at least 2 are needed for a held-out split.")
    held = {doc.name for doc in docs if is_heldout(doc.name, heldout_fraction)}
    if not held:
        held = {min(docs, key=lambda d: _name_hash(d.name)).name}
    elif len(held) == len(docs):
        held.discard(max(docs, key=lambda d: _name_hash(d.name)).name)
    train = [doc for doc in docs if doc.name not in held]
    heldout = [doc for doc in docs if doc.name in held]
    return train, heldout


# ----------------------------------------------------------------------------------------------
# Tokenizer and token streams
# ----------------------------------------------------------------------------------------------


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


def corpus_config_hash(run: RunConfig) -> str:
    """Hash the corpus stage's manifest carries: the corpus section, plus the model when its tokenizer is used."""
    return run.section_hash("corpus") if run.model.source == "suite" else run.section_hash("corpus", "model")


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
    loss (also in nats) should fall far below it.
    """
    flat = np.asarray(tokens).reshape(-1)
    if flat.size == 0:
        raise ValueError("unigram_entropy needs at least one token; got an empty array.")
    counts = np.bincount(flat.astype(np.int64))
    p = counts[counts > 0] / flat.size
    return float(-(p * np.log(p)).sum())


# ----------------------------------------------------------------------------------------------
# Cutting contexts from a stream
# ----------------------------------------------------------------------------------------------


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


def contexts(stream: np.ndarray, start_context: int, n_contexts: int, length: int) -> np.ndarray:
    """Consecutive non-overlapping contexts ``[n_contexts, length]`` (int64) starting at context ``start_context``.

    Context ``k`` is window ``k mod W`` of the stream, i.e. tokens ``[(k mod W) * length, (k mod W + 1) *
    length)``, where ``W = len(stream) // length`` is the number of whole windows (a tail shorter than one
    window is never used). Any number of contexts can be drawn: past the last window the indexing wraps to
    the start; :func:`context_wraps` says whether (and how often) that happened. Giving each consumer its own
    ``start_context`` range gives it its own tokens.
    """
    if start_context < 0 or n_contexts < 0:
        raise ValueError(f"start_context = {start_context}, n_contexts = {n_contexts}: both must be >= 0.")
    flat = np.asarray(stream).reshape(-1)
    windows = n_windows(len(flat), length)
    if windows == 0:
        raise ValueError(f"a stream of {len(flat)} tokens holds no context of length {length}.")
    rows = (start_context + np.arange(n_contexts, dtype=np.int64)) % windows
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


# ----------------------------------------------------------------------------------------------
# The stage
# ----------------------------------------------------------------------------------------------


def _corpus_dir(run_dir: Path) -> Path:
    return Path(run_dir) / paths.CORPUS_DIR


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
    corpus = run.corpus
    folder = _corpus_dir(run_dir)
    digest = corpus_config_hash(run)
    if store.manifest_is_current(folder, digest):
        manifest = store.read_manifest(folder)
        assert manifest is not None
        log.info("corpus in %s is current; skipping", folder)
        return manifest

    timings: dict[str, float] = {}
    start = time.perf_counter()
    docs = collect_documents(corpus)
    train_docs, heldout_docs = split_documents(docs, corpus.heldout_fraction)
    timings["collect"] = time.perf_counter() - start

    t0 = time.perf_counter()
    if run.model.source == "suite":
        tokenizer = build_tokenizer([doc.text for doc in train_docs], corpus.vocab_size)
    else:
        from saetrack.checkpoints import open_source

        tokenizer = open_source(run.model, Path(run_dir)).tokenizer()
    timings["tokenizer"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    train_tokens = tokenize_stream(tokenizer, [doc.text for doc in train_docs])
    heldout_tokens = tokenize_stream(tokenizer, [doc.text for doc in heldout_docs])
    timings["tokenize"] = time.perf_counter() - t0

    with store.atomic_dir(folder) as tmp:
        tokenizer.save_pretrained(str(tmp / paths.TOKENIZER_DIR))
        files = {
            TRAIN_TOKENS: store.save_npy(tmp / TRAIN_TOKENS, train_tokens),
            HELDOUT_TOKENS: store.save_npy(tmp / HELDOUT_TOKENS, heldout_tokens),
        }
        for path in sorted((tmp / paths.TOKENIZER_DIR).iterdir()):
            files[f"{paths.TOKENIZER_DIR}/{path.name}"] = store.file_sha256(path)
        timings["total"] = time.perf_counter() - start
        manifest = store.write_manifest(
            tmp,
            stage="corpus",
            config=run.to_dict()["corpus"],
            config_hash=digest,
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
        timings["total"],
    )
    return manifest


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
