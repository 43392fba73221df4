"""The figure registry: file names from figure keys, and figures and HTML saved atomically under figures/<preset>/."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from saetrack import paths
from saetrack.plots.common import FIGURES, figure_path, save_figure, save_html


def test_every_figure_of_the_paper_has_a_key() -> None:
    paper = ["02", "03", "04", "05", "06a", "06b", "07", "08", *(f"{n:02d}" for n in range(9, 17))]
    assert set(paper) <= set(FIGURES)
    stems = [stem for stem, _ in FIGURES.values()]
    assert len(set(stems)) == len(stems)  # no two figures share a file
    for key, (stem, description) in FIGURES.items():
        assert stem.startswith(f"fig{key}_") and description, key


def test_figure_path_is_under_the_presets_figure_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(paths.FIGURES_ENV, str(tmp_path))
    assert figure_path("smoke", "05") == tmp_path / "smoke" / "fig05_progress_measure.png"
    assert (
        figure_path("nano", "11", ".pdf", prefix="nano-s_")
        == tmp_path / "nano" / "nano-s_fig11_scale_decoder_cosine_a.pdf"
    )
    with pytest.raises(KeyError, match="unknown figure '99'"):
        figure_path("smoke", "99")


def test_save_figure_writes_png_and_pdf_and_html(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(paths.FIGURES_ENV, str(tmp_path))
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    written = save_figure(fig, "smoke", "S01", dpi=20)
    plt.close(fig)
    assert written == [tmp_path / "smoke" / "figS01_lm_loss.png", tmp_path / "smoke" / "figS01_lm_loss.pdf"]
    assert written[0].read_bytes().startswith(b"\x89PNG") and written[1].read_bytes().startswith(b"%PDF")
    page = save_html("<p>ü</p>", "smoke", "02")
    assert page == tmp_path / "smoke" / "fig02_feature_patterns.html" and page.read_text(encoding="utf-8") == "<p>ü</p>"
    assert sorted(p.name for p in (tmp_path / "smoke").iterdir()) == [
        "fig02_feature_patterns.html",
        "figS01_lm_loss.pdf",
        "figS01_lm_loss.png",
    ]  # fmt: skip  (no temporary files left)
