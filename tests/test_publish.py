"""Publishing a run for readers: results.json and the executed notebooks as small HTML beside the figures."""

from __future__ import annotations

import base64
import io
import json
import re
import sys
from collections import Counter
from html import unescape
from pathlib import Path

import nbformat
import pytest
from PIL import Image

from saetrack import paths
from saetrack.pipeline.shape import STAGES
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
    assert written == [
        out / "results.json",
        out / "notebooks" / "03_feature_formation.html",
        out / "notebooks" / "index.html",
    ]
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
    elsewhere = "/opt/ci/.venv/lib/python3.12/site-packages/torch/x.py:3: UserWarning\ndata in /home/someone/corpus\n"
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text=warning),
                    nbformat.v4.new_output("stream", name="stdout", text=saved),
                    nbformat.v4.new_output("stream", name="stderr", text=elsewhere)]  # fmt: skip
    nb.cells = [cell]
    nbformat.write(nb, run_dir / paths.NOTEBOOKS_DIR / "01_cache_activations.ipynb")
    publish_run("nano", run_dir)
    html = (tmp_path / "figures" / "nano" / "notebooks" / "01_cache_activations.html").read_text()
    assert str(tmp_path) not in html and sys.prefix not in html and "ipykernel" not in html
    assert "&lt;this cell&gt;:6: W" in html
    assert "runs/nano" in html  # the parameters cell's RUN_DIR
    assert "&lt;python environment&gt;/lib/python3.11" in html and "./figures/nano/x.png" in html
    assert "&lt;python environment&gt;/lib/python3.12/site-packages/torch/x.py:3" in html  # another machine's
    assert "data in &lt;local path&gt;" in html and "/home/" not in html and "/opt/" not in html


def test_a_run_published_from_another_checkout_shows_none_of_its_paths(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(paths.FIGURES_ENV, str(tmp_path / "figures"))
    run_dir = tmp_path / "fresh" / "runs" / "nano"  # a clone that ran, not this checkout
    (run_dir / paths.NOTEBOOKS_DIR).mkdir(parents=True)
    cell = nbformat.v4.new_code_cell("1")
    text = f"{tmp_path}/fresh/saetrack/sae/weights.py:92: W\n{run_dir}-s/log\n"
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
    nb = nbformat.v4.new_notebook(cells=[cell])
    nbformat.write(nb, run_dir / paths.NOTEBOOKS_DIR / "01_cache_activations.ipynb")
    publish_run("nano", run_dir)
    html = (tmp_path / "figures" / "nano" / "notebooks" / "01_cache_activations.html").read_text()
    assert "./saetrack/sae/weights.py:92: W" in html and "runs/nano-s/log" in html and str(tmp_path) not in html


def _notebook_with(path: Path, title: str, *cells) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {title}\n\nText."), *cells])
    nbformat.write(nb, path)


def test_renders_link_their_neighbours_the_index_and_fig2s_interactive_page(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(paths.FIGURES_ENV, str(tmp_path / "figures"))
    run_dir = tmp_path / "run"
    notebooks = run_dir / paths.NOTEBOOKS_DIR
    notebooks.mkdir(parents=True)
    (run_dir / paths.RESULTS_JSON).write_text("{}")
    out = tmp_path / "figures" / "nano"
    out.mkdir(parents=True)
    for name in ("fig02_feature_patterns.png", "fig02_feature_patterns.html", "fig05_progress_measure.png"):
        (out / name).write_bytes(b"x")
    saving = nbformat.v4.new_code_cell(
        'plots.save_figure(fig, run.preset, "02")\nplots.save_figure(fig, run.preset, "05")'
    )
    _notebook_with(notebooks / "01_cache_activations.ipynb", "01 · Cache")
    _notebook_with(notebooks / "02_train_chain.ipynb", "02 · Chain")
    _notebook_with(notebooks / "03_feature_formation.ipynb", "03 · Formation", saving)

    written = publish_run("nano", run_dir)

    renders = out / "notebooks"
    assert written[-1] == renders / "index.html" and len(written) == 5
    pages = {page.stem: page.read_text() for page in renders.glob("*.html")}
    for stem, html in pages.items():
        links = re.findall(r'href="([^"#:]+)"', html)
        assert links and all((renders / link).resolve().is_file() for link in links), (stem, links)  # no dead link
    navigation = {stem: re.findall(r'<nav class="notebooks">(.*?)</nav>', html) for stem, html in pages.items()}
    assert all(len(bars) == 2 and bars[0] == bars[1] for stem, bars in navigation.items() if stem != "index")
    hrefs = {stem: re.findall(r'href="([^"]+)"', bars[0]) for stem, bars in navigation.items() if bars}
    assert hrefs == {"01_cache_activations": ["index.html", "02_train_chain.html"],
                     "02_train_chain": ["01_cache_activations.html", "index.html", "03_feature_formation.html"],
                     "03_feature_formation": ["02_train_chain.html", "index.html"]}  # fmt: skip
    assert "<title>02 · Chain</title>" in pages["02_train_chain"]
    assert "&larr; 01 · Cache" in pages["02_train_chain"] and "03 · Formation &rarr;" in pages["02_train_chain"]
    formation = pages["03_feature_formation"]
    assert re.findall(r'<img[^>]*src="(\.\./[^"]+)"', formation) == ["../fig02_feature_patterns.png",
                                                                    "../fig05_progress_measure.png"]  # fmt: skip
    assert '<a href="../fig02_feature_patterns.html">Fig. 2, interactive' in formation
    assert "fig05_progress_measure.html" not in formation  # no interactive page, no link
    index = pages["index"]
    assert all(
        f'href="{stem}.html"' in index for stem in ("01_cache_activations", "02_train_chain", "03_feature_formation")
    )
    assert (
        ">03 · Formation</a>" in index
        and 'href="../results.json"' in index
        and 'href="../fig05_progress_measure.png"' in index
    )


#: A progress bar's line: ``description: NN%|bar| done/total [...]``.
_BAR = re.compile(r"^(?P<desc>.*?):\s*\d{1,3}%\|[^|]*\|\s*[\d.]+\s*[a-zA-Z]?/[\d.]+\s*[a-zA-Z]?\s*(\[|$)")


def test_committed_nano_renders_are_clean() -> None:
    folder = paths.REPO_ROOT / "figures" / "nano" / "notebooks"
    renders = sorted(folder.glob("[0-9][0-9]_*.html"))
    assert len(renders) == len(STAGES) and (folder / "index.html").is_file()  # one render per notebook
    for render in [*renders, folder / "index.html"]:
        html = render.read_text(encoding="utf-8")
        leaked = re.findall(r"(?<![\w.:/+=-])/(?:tmp|work|root|home)/[^\s\"'<>]*", html)
        assert not leaked, (render.name, leaked[:5])  # no absolute path of the machine that ran
        assert "IProgress not found" not in html, render.name
        for cell in html.split('<div class="output_wrapper">')[1:]:  # each code cell's outputs
            streams = re.findall(r'class="[^"]*output_stream[^"]*">\s*<pre>(.*?)</pre>', cell, flags=re.S)
            lines = unescape(re.sub(r"<[^>]+>", "", "\n".join(streams))).split("\n")
            bars = Counter(match.group("desc") for line in lines if (match := _BAR.match(line)))
            assert not bars or max(bars.values()) == 1, (render.name, bars.most_common(3))  # one line per bar
            assert "\r" not in "".join(lines) and "\x1b" not in "".join(lines), render.name
    assert sum(render.read_text(encoding="utf-8").count("%|") for render in renders) < 150  # not thousands of states
