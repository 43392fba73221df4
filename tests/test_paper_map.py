"""The paper → code table (docs/paper-to-code.md) stays true: every entry imports and names its paper object."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

TABLE = Path(__file__).resolve().parents[1] / "docs" / "paper-to-code.md"
SECTION = "# Paper → code"
#: What the table must cover (the paper's definitions, the equations of Sec. 3-5 and App. C.2, every figure).
REQUIRED = (
    [f"Def. {d}" for d in ("4.1", "4.2", "5.1", "5.2", "5.3", "5.4", "6.1")]
    + [f"Eq. {n}" for n in [*range(1, 20), 27, 28, 29]]
    + [f"Fig. {n}" for n in ("2", "3", "4", "5", "6a", "6b", "7", "8", *map(str, range(9, 17)))]
)
_REF = re.compile(r"\b(Eq|Def|Fig|Sec|App)\.\s*([0-9A-Z][0-9a-z.]*(?:\s*(?:-|–|,|/|and)\s*[0-9][0-9a-z.]*)*)")


def _rows() -> list[tuple[str, str]]:
    """``(paper column, code path)`` of every row of the table."""
    text = TABLE.read_text(encoding="utf-8")
    assert SECTION in text, f"{TABLE.name} has no {SECTION!r} section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[2].startswith("`saetrack."):
            rows.append((cells[0], cells[2].strip("`")))
    return rows


def _labels(paper: str) -> list[str]:
    """``"Def. 5.1, Eq. 9"`` -> ``["Def. 5.1", "Eq. 9"]``; ``"Fig. 9, 13"`` -> ``["Fig. 9", "Fig. 13"]``."""
    labels, kind = [], ""
    for part in (p.strip() for p in paper.split(",")):
        match = re.match(r"(Eq|Def|Fig|Sec|App)\.\s*(\S+)", part)
        if match:
            kind = match.group(1)
            labels.append(f"{kind}. {match.group(2)}")
        elif kind:
            labels.append(f"{kind}. {part}")
    return labels


def _references(text: str) -> set[str]:
    """Every paper object a docstring names, ranges expanded: ``"Eq. 14-19"`` names Eq. 14 to Eq. 19."""
    found: set[str] = set()
    for kind, body in _REF.findall(text or ""):
        for piece in re.split(r"\s*(?:,|/|and)\s*", body):
            bounds = re.split(r"\s*[-–]\s*", piece)
            if len(bounds) == 2 and bounds[0].isdigit() and bounds[1].isdigit():
                found.update(f"{kind}. {n}" for n in range(int(bounds[0]), int(bounds[1]) + 1))
            elif len(bounds) == 2 and re.fullmatch(r"\d+[a-z]?", bounds[0]) and re.fullmatch(r"\d+[a-z]?", bounds[1]):
                found.update(f"{kind}. {b}" for b in bounds)
            else:
                found.update(f"{kind}. {b.rstrip('.')}" for b in bounds if b)
    return found


def _resolve(path: str) -> tuple[object, object]:
    """Import ``saetrack.a.b.name[.attr]`` (the longest importable module prefix, then attributes): (object, module)."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        obj: object = module
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj, module
    raise ImportError(path)


def test_table_covers_every_definition_equation_and_figure() -> None:
    covered = {label for paper, _ in _rows() for label in _labels(paper)}
    missing = [label for label in REQUIRED if label not in covered]
    assert not missing, f"the paper → code table has no row for {missing}"


@pytest.mark.parametrize(("paper", "path"), _rows(), ids=[f"{p} {c}" for p, c in _rows()])
def test_entry_imports_and_its_docstring_names_the_paper_object(paper: str, path: str) -> None:
    obj, module = _resolve(path)
    docs = " ".join(filter(None, [inspect.getdoc(obj) if callable(obj) else "", inspect.getdoc(module)]))
    named = _references(docs)
    unnamed = [label for label in _labels(paper) if label not in named]
    assert not unnamed, f"{path}: neither its docstring nor its module's names {unnamed} (found {sorted(named)})"


def test_reference_parser_expands_ranges_and_lists() -> None:
    refs = _references("Eq. 14-19 and Eq. 27 / 28; Fig. 6a, 6b; Def. 5.4 (Fig. 9-16)")
    assert {"Eq. 14", "Eq. 19", "Eq. 27", "Eq. 28", "Fig. 6a", "Fig. 6b", "Def. 5.4", "Fig. 12"} <= refs
    assert _labels("Def. 5.1, Eq. 9") == ["Def. 5.1", "Eq. 9"] and _labels("Fig. 9, 13") == ["Fig. 9", "Fig. 13"]
