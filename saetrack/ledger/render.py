"""The README's verdict summary, the results page and the figure index, generated from a published run's claims ledger.

``README.md``, ``docs/results.md`` and ``figures/README.md`` each hold one block between :data:`BEGIN` and
:data:`END`; :func:`sync` rewrites those blocks from ``figures/<preset>/results.json`` (the ledger section a run
wrote), so no number in them is typed: the README a short :func:`summary`, the results page the whole
:func:`headline` table, the figure folder its :func:`figure_index`.
``python -m saetrack.ledger.render`` rewrites them; ``--check`` only says whether they are current (a test runs it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from saetrack import paths, store
from saetrack.ledger.claim import FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED
from saetrack.plots.common import FIGURES

__all__ = [
    "BEGIN",
    "END",
    "figure_index",
    "headline",
    "main",
    "replace_block",
    "summary",
    "sync",
]


BEGIN = "<!-- ledger:begin - generated from results.json by `python -m saetrack.ledger.render`; do not edit -->"
END = "<!-- ledger:end -->"
#: How a verdict reads in a table.
MARKS: dict[str, str] = {HOLDS: "holds", FAILS: "**does not hold**", INCONCLUSIVE: "inconclusive", NOT_MEASURED: "—"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") if text else ""


def _counts(ledger: Mapping[str, Any]) -> str:
    counts = ledger["counts"]
    return ", ".join(f"{counts.get(v, 0)} {v}" for v in (HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURED) if counts.get(v))


def summary(ledger: Mapping[str, Any], preset: str, results_page: str = "docs/results.md") -> str:
    """The README's verdict summary: the counts, the claims that hold and those inconclusive by id, and one line for
    every claim this run does not support (what it claims, what was measured), with a link to the whole table."""
    claims = ledger["claims"]
    lines = [f"Verdicts on `{preset}`: {_counts(ledger)} ([every claim, its number, control and figures]"
             f"({results_page})).", ""]  # fmt: skip
    for verdict, title in ((HOLDS, "Holds"), (INCONCLUSIVE, "Inconclusive")):
        ids = [c["id"] for c in claims if c["verdict"] == verdict]
        if ids:
            lines.append(f"- **{title}:** {', '.join(ids)}.")
    failing = [c for c in claims if c["verdict"] == FAILS]
    if failing:
        lines.append("- **Does not hold:**")
        lines += [f"  - **{c['id']}** {c['statement']}: {c['number_text']}." for c in failing]
    return "\n".join(lines)


def headline(ledger: Mapping[str, Any], preset: str, root: str = "") -> str:
    """The results table: the verdict counts, one table row per claim (claim, measured, control, verdict, its
    figures, linked from ``root``, the page's way back to the repository) and, plainly, every claim this run does not
    support."""
    claims = ledger["claims"]
    lines = [
        f"Every claim below is computed from `figures/{preset}/results.json` by a rule fixed before the run "
        "(`saetrack/ledger/`; the rules and the numbers behind each verdict are in the notebooks' last cells and in "
        "`results.json` → `ledger`). " + _counts(ledger),
        "",
        "| | claim | measured | control | verdict | figures |",
        "|---|---|---|---|---|---|",
    ]
    for c in claims:
        keys = [key for key in c["figures"] if key in FIGURES]
        figures = ", ".join(f"[{key}]({root}figures/{preset}/{FIGURES[key][0]}.png)" for key in keys)
        lines.append(f"| {c['id']} | {_cell(c['statement'])} ({_cell(c['source'])}) | {_cell(c['number_text'])} | "
                     f"{_cell(c['control_text'])} | {MARKS[c['verdict']]} | {figures} |")  # fmt: skip
    failing = [c for c in claims if c["verdict"] == FAILS]
    if failing:
        lines += ["", f"Where `{preset}` does not show what the paper (or the crosscoder paper) reports:", ""]
        lines += [f"- **{c['id']}** {c['statement']}: {c['number_text']}; {c['control_text']} ({c['why']})."
                  for c in failing]  # fmt: skip
    unsure = [c for c in claims if c["verdict"] == INCONCLUSIVE]
    if unsure:
        lines += ["", "Inconclusive by their rules: " + "; ".join(f"**{c['id']}** ({c['why']})" for c in unsure) + "."]
    return "\n".join(lines)


def figure_index(ledger: Mapping[str, Any], preset: str, figure_dir: Path) -> str:
    """The figure index: every registered figure the run drew (a PNG in ``figure_dir``), what it shows, and the
    claims (with their verdicts) that read it."""
    by_figure: dict[str, list[str]] = {}
    for c in ledger["claims"]:
        for key in c["figures"]:
            by_figure.setdefault(key, []).append(f"{c['id']} {MARKS[c['verdict']]}")
    lines = ["| figure | file | what it shows | claims it bears on |", "|---|---|---|---|"]
    for key, (stem, what) in FIGURES.items():
        if (Path(figure_dir) / f"{stem}.png").exists():
            lines.append(f"| {key} | [`{preset}/{stem}.png`]({preset}/{stem}.png) | {_cell(what)} | "
                         f"{'; '.join(by_figure.get(key, [])) or ''} |")  # fmt: skip
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    """``text`` with everything between :data:`BEGIN` and :data:`END` replaced by ``block`` (both markers must be
    present, once each)."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"the text needs one {BEGIN!r} ... {END!r} block.")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{block}\n{END}{tail}"


def sync(preset: str = "nano", root: Path = paths.REPO_ROOT, check: bool = False) -> list[Path]:
    """Rewrite (``check``: only compare) the ledger blocks of ``README.md``, ``docs/results.md`` and
    ``figures/README.md`` from ``figures/<preset>/results.json``; return the files that were (or would be) changed."""
    figure_dir = Path(root) / "figures" / preset
    ledger = store.read_json(figure_dir / "results.json")["ledger"]
    targets = {
        Path(root) / "README.md": summary(ledger, preset),
        Path(root) / "docs" / "results.md": headline(ledger, preset, root="../"),
        Path(root) / "figures" / "README.md": figure_index(ledger, preset, figure_dir),
    }
    changed = []
    for path, block in targets.items():
        text = path.read_text()
        new = replace_block(text, block)
        if new != text:
            changed.append(path)
            if not check:
                path.write_text(new)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m saetrack.ledger.render [--preset nano] [--check]``: rewrite or check the generated blocks."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--check", action="store_true", help="only say whether the blocks are current")
    args = parser.parse_args(argv)
    changed = sync(args.preset, check=args.check)
    for path in changed:
        print(f"{'out of date' if args.check else 'rewrote'}: {path}")
    return 1 if changed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
