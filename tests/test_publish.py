"""Publishing a run for readers: results.json and the executed notebooks as small HTML beside the figures."""

from __future__ import annotations

import base64
import io
import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
from PIL import Image

from saetrack import paths
from saetrack.publish import MAX_IMAGE_WIDTH, publish_run


def _png(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_publish_copies_results_and_renders_notebooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(paths.FIGURES_ENV, str(tmp_path / "figures"))
    run_dir = tmp_path / "run"
    (run_dir / paths.NOTEBOOKS_DIR).mkdir(parents=True)
    (run_dir / paths.RESULTS_JSON).write_text(json.dumps({"formation": {"median": 0.5}}))
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print('hello')")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text="train:  10%|#  | 1/10\r"),
        nbformat.v4.new_output("stream", name="stderr", text="train:  90%|## | 9/10\rtrain: 100%|###| 10/10\n"),
        nbformat.v4.new_output("stream", name="stdout", text="median progress 0.51\n"),
        nbformat.v4.new_output("display_data", data={"image/png": _png(2400, 1200)}),
    ]
    saving = nbformat.v4.new_code_cell(
        'plots.save_figure(fig, run.preset, "05")\nplots.save_figure(fig, run.preset, "08")'
    )
    nb.cells = [nbformat.v4.new_markdown_cell("# Fig. 5"), cell, saving]
    (tmp_path / "figures" / "nano").mkdir(parents=True)
    (tmp_path / "figures" / "nano" / "fig05_progress_measure.png").write_bytes(b"png")  # Fig. 8 was not drawn
    nbformat.write(nb, run_dir / paths.NOTEBOOKS_DIR / "03_feature_formation.ipynb")

    written = publish_run("nano", run_dir)

    out = tmp_path / "figures" / "nano"
    assert written == [out / "results.json", out / "notebooks" / "03_feature_formation.html"]
    assert json.loads((out / "results.json").read_text()) == {"formation": {"median": 0.5}}
    html = (out / "notebooks" / "03_feature_formation.html").read_text()
    assert "median progress 0.51" in html and "Fig. 5" in html
    assert "10/10" in html and "1/10" not in html and "9/10" not in html  # progress bars at their final state
    encoded = re.search(r'<img[^>]*src="data:image/png;base64,([^"]+)"', html).group(1)  # the cell's figure
    image = Image.open(io.BytesIO(base64.b64decode(encoded)))
    assert image.size == (MAX_IMAGE_WIDTH, MAX_IMAGE_WIDTH // 2)
    links = re.findall(r'<img[^>]*src="(\.\./[^"]+)"', html)
    assert links == ["../fig05_progress_measure.png"]  # saved figures are linked, missing ones are not


def test_publish_of_an_empty_run_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(paths.FIGURES_ENV, str(tmp_path / "figures"))
    assert publish_run("nano", tmp_path / "run") == []
    assert not (tmp_path / "figures").exists()


def test_renders_show_no_path_of_the_machine_that_ran(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(paths.FIGURES_ENV, str(tmp_path / "figures"))
    run_dir = tmp_path / "checkout" / "runs" / "nano"
    (run_dir / paths.NOTEBOOKS_DIR).mkdir(parents=True)
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path / "checkout")
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(f'RUN_DIR = "{run_dir}"')
    warning = f"{sys.prefix}/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning\n/tmp/ipykernel_27/39.py:6: W\n"
    saved = f"{tmp_path}/checkout/figures/nano/x.png\n"
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text=warning),
                    nbformat.v4.new_output("stream", name="stdout", text=saved)]  # fmt: skip
    nb.cells = [cell]
    nbformat.write(nb, run_dir / paths.NOTEBOOKS_DIR / "01_cache_activations.ipynb")
    publish_run("nano", run_dir)
    html = (tmp_path / "figures" / "nano" / "notebooks" / "01_cache_activations.html").read_text()
    assert str(tmp_path) not in html and sys.prefix not in html and "ipykernel" not in html
    assert "&lt;this cell&gt;:6: W" in html
    assert "runs/nano" in html  # the parameters cell's RUN_DIR
    assert "&lt;python environment&gt;/lib/python3.11" in html and "./figures/nano/x.png" in html
