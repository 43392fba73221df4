"""The README's verdict summary, the results page and the figure index, generated from a run's ledger section."""

from __future__ import annotations

from pathlib import Path

import pytest

from saetrack import store
from saetrack.ledger import LEDGER_SECTION, build
from saetrack.ledger import render as rd
from saetrack.ledger.claim import FAILS, HOLDS, INCONCLUSIVE, VERDICTS
from saetrack.plots.common import FIGURES

TRAJECTORIES = {"trajectories": 4, "share_straightness_beyond_null_q95": 0.25, "median_straightness": 0.5,
                "median_pc1": 0.7, "null_median_straightness": 0.3, "null_median_pc1": 0.6}  # fmt: skip
RESULTS = {
    "chain": {"mean_index_stability": 0.95},  # R5 holds
    "crosscoder": {"min_adjacent_median_cosine": 0.9},  # X7 does not hold
    "drift": {"trajectories": TRAJECTORIES},  # P5c inconclusive
}


def _ledger() -> dict:
    claims = build(RESULTS)
    return {
        "claims": [c.record() for c in claims],
        "counts": {v: sum(c.verdict == v for c in claims) for v in VERDICTS},
    }


def test_replace_block_keeps_what_is_around_the_markers() -> None:
    text = f"head\n{rd.BEGIN}\nold\nlines\n{rd.END}\ntail\n"
    assert rd.replace_block(text, "new") == f"head\n{rd.BEGIN}\nnew\n{rd.END}\ntail\n"
    for bad in ("no markers", f"{rd.BEGIN} {rd.BEGIN} {rd.END}", f"{rd.END} x {rd.BEGIN}", f"{rd.BEGIN} only"):
        with pytest.raises(ValueError, match="needs one"):
            rd.replace_block(bad, "new")


def test_headline_has_the_counts_a_row_per_claim_and_names_what_fails() -> None:
    ledger = _ledger()
    text = rd.headline(ledger, "nano")
    lines = text.splitlines()
    assert lines[0].endswith("1 holds, 1 does not hold, 1 inconclusive, 23 not measured")
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| |")]
    assert len(rows) == len(ledger["claims"])
    r5 = next(row for row in rows if row.startswith("| R5 |"))
    stem = FIGURES["S05"][0]
    assert f"| {rd.MARKS[HOLDS]} | [S05](figures/nano/{stem}.png) |" in r5
    assert "| — |" in next(row for row in rows if row.startswith("| P1 |"))  # not measured
    assert "Where `nano` does not show what the paper (or the crosscoder paper) reports:" in text
    assert any(line.startswith("- **X7** Features turn sharply") for line in lines)
    assert lines[-1] == "Inconclusive by their rules: **P5c** (25% beyond the null)."
    assert rd.MARKS[FAILS] == "**does not hold**" and rd.MARKS[INCONCLUSIVE] == "inconclusive"


def test_headline_links_figures_from_the_page_that_holds_it() -> None:
    stem = FIGURES["S05"][0]
    assert f"[S05](../figures/nano/{stem}.png)" in rd.headline(_ledger(), "nano", root="../")


def test_summary_names_every_verdict_and_spells_out_what_does_not_hold() -> None:
    text = rd.summary(_ledger(), "nano")
    lines = text.splitlines()
    assert lines[0] == ("Verdicts on `nano`: 1 holds, 1 does not hold, 1 inconclusive, 23 not measured ([every claim, "
                        "its number, control and figures](docs/results.md)).")  # fmt: skip
    assert "- **Holds:** R5." in lines and "- **Inconclusive:** P5c." in lines
    assert lines[-2] == "- **Does not hold:**" and lines[-1].startswith("  - **X7** Features turn sharply")
    assert "|" not in text  # no table: the README stays short


def test_headline_escapes_table_cells() -> None:
    ledger = _ledger()
    ledger["claims"][0] = {**ledger["claims"][0], "number_text": "a | b\nc"}
    assert "| a \\| b c |" in rd.headline(ledger, "nano")


def test_figure_index_lists_the_figures_drawn_with_the_claims_reading_them(tmp_path: Path) -> None:
    for key in ("S05", "07n"):
        (tmp_path / f"{FIGURES[key][0]}.png").write_bytes(b"png")
    text = rd.figure_index(_ledger(), "nano", tmp_path)
    lines = text.splitlines()
    assert len(lines) == 2 + 2  # header, rule, one row per PNG present
    s05 = next(line for line in lines if line.startswith("| S05 |"))
    assert f"[`nano/{FIGURES['S05'][0]}.png`](nano/{FIGURES['S05'][0]}.png)" in s05
    assert s05.endswith("| R2 —; R5 holds |")
    assert next(line for line in lines if line.startswith("| 07n |")).endswith("| P5c inconclusive |")


def test_sync_rewrites_every_block_and_check_only_compares(tmp_path: Path) -> None:
    figures = tmp_path / "figures" / "smoke"
    figures.mkdir(parents=True)
    (tmp_path / "docs").mkdir()
    store.write_json(figures / "results.json", {**RESULTS, LEDGER_SECTION: _ledger()})
    readme, index = tmp_path / "README.md", tmp_path / "figures" / "README.md"
    results = tmp_path / "docs" / "results.md"
    for path in (readme, results, index):
        path.write_text(f"# title\n{rd.BEGIN}\nstale\n{rd.END}\nend\n")
    assert rd.sync("smoke", tmp_path, check=True) == [readme, results, index]
    assert "stale" in readme.read_text()  # checking writes nothing
    assert rd.sync("smoke", tmp_path) == [readme, results, index]
    assert rd.summary(_ledger(), "smoke") in readme.read_text() and readme.read_text().endswith(f"{rd.END}\nend\n")
    assert rd.headline(_ledger(), "smoke", root="../") in results.read_text()
    assert rd.sync("smoke", tmp_path, check=True) == []  # current now


def test_main_exit_code_says_whether_the_blocks_are_current(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[str, bool]] = []

    def fake_sync(preset: str, check: bool = False) -> list[Path]:
        calls.append((preset, check))
        return [Path("README.md")]

    monkeypatch.setattr(rd, "sync", fake_sync)
    assert rd.main(["--check"]) == 1 and "out of date: README.md" in capsys.readouterr().out
    assert rd.main(["--preset", "smoke"]) == 0 and "rewrote: README.md" in capsys.readouterr().out
    assert calls == [("nano", True), ("smoke", False)]


def test_the_committed_readme_and_figure_index_are_generated_from_the_committed_ledger() -> None:
    # the README's summary, the results page and the figure index are the ledger's: regenerate them after every nano run
    # (python run_all.py does; by hand: python -m saetrack.ledger.render)
    assert rd.sync("nano", check=True) == [], "run `python -m saetrack.ledger.render` to regenerate them"
