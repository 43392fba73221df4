"""What a reader can check without running anything: the run's results and its executed notebooks, beside the figures.

After a run, ``run_all.py`` copies ``runs/<preset>/results.json`` to ``figures/<preset>/results.json`` and renders
every executed notebook of ``runs/<preset>/notebooks/`` to ``figures/<preset>/notebooks/<name>.html`` (inputs,
printed output and figures; the figures are re-encoded at a reading size so the renders stay small; progress bars
show once, at their final state, see :mod:`saetrack.progress_text`), each with links to its neighbours and to
``figures/<preset>/notebooks/index.html``, which lists the renders, the figures and the results
(:mod:`saetrack.render_index`). The machine's own paths are written as a reader can use them (:func:`machine_paths`):
the run directory as ``runs/<preset>``, the checkout as ``.``, the Python environment as ``<python environment>``.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import sys
from collections.abc import Mapping
from html import escape
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter
from PIL import Image

from saetrack import paths, progress_text, render_index, store
from saetrack.plots.common import FIGURES

__all__ = [
    "MAX_IMAGE_WIDTH",
    "machine_paths",
    "publish_run",
    "render_notebook",
]


#: A notebook cell's call that saves figure KEY (``plots.save_figure(fig, run.preset, "05")``).
_SAVED_FIGURE = re.compile(r"save_figure\(\s*\w+\s*,\s*[\w.]+\s*,\s*[\"'](\w+)[\"']")

#: Where a warning raised in a cell says it came from: the kernel's temporary file of the cell.
_CELL_FILE = re.compile(r"[^\s\"'<>]*/ipykernel_\d+/\d+\.py")

#: A Python environment's library folder, wherever it is (``.../lib/python3.11/site-packages``): the environment of
#: the machine that ran, which need not be this one's.
_ENVIRONMENT = re.compile(r"(?<![\w.:/+=-])/[^\s\"'<>]*?(?=/lib/python3\.\d+/site-packages)")

#: Any other absolute path under a machine's home, work or temporary folders (not inside a URL or base64 data).
_MACHINE_PATH = re.compile(r"(?<![\w.:/+=-])/(?:tmp|work|root|home)/[^\s\"'<>]*")

#: Width (pixels) inline figures are scaled down to in the HTML renders.
MAX_IMAGE_WIDTH = 900


#: The page around nbconvert's "basic" body (no 300 kB of JupyterLab CSS per render).
_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title><style>
body {{ max-width: 960px; margin: 2em auto; font-family: sans-serif; line-height: 1.45; }}
pre {{ background: #f6f6f6; padding: 0.5em; overflow-x: auto; font-size: 85%; }}
.jp-InputArea pre {{ border-left: 3px solid #8ab; }}
img {{ max-width: 100%; }} table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 2px 6px; }}
nav.notebooks {{ margin: 1em 0; padding: 0.4em 0; border-top: 1px solid #ccc; border-bottom: 1px solid #ccc; }}
</style></head><body>
{navigation}
{body}
{navigation}
</body></html>
"""


def _smaller_png(data: str) -> str:
    """A base64 PNG scaled to at most :data:`MAX_IMAGE_WIDTH` pixels wide and stored with 256 colours."""
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    if image.width > MAX_IMAGE_WIDTH:
        image = image.resize((MAX_IMAGE_WIDTH, round(image.height * MAX_IMAGE_WIDTH / image.width)), Image.LANCZOS)
    buffer = io.BytesIO()
    image.convert("RGB").quantize(colors=256).save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode()


def _figure_links(source: str, figures: Path) -> list[str]:
    """``<img>`` tags for the figures a cell saves with ``plots.save_figure(fig, preset, "KEY")`` (literal keys)
    that exist in ``figures``, relative to a render in ``figures/notebooks/``; a figure with an interactive HTML
    version beside its PNG (Fig. 2's ``fig02_feature_patterns.html``) gets a link to it too."""
    tags = []
    for key in _SAVED_FIGURE.findall(source):
        name = FIGURES[key][0] if key in FIGURES else ""
        if name and (figures / f"{name}.png").exists():
            tags.append(f'<p><img src="../{name}.png" alt="{escape(FIGURES[key][1])}" loading="lazy"></p>')
            if (figures / f"{name}.html").exists():
                label = render_index.figure_label(key)
                tags.append(f'<p><a href="../{name}.html">{label}, interactive: {name}.html</a></p>')
    return tags


def _final_streams(outputs: list) -> list:
    """``outputs`` with every run of consecutive stream outputs replayed as a terminal shows it at the end
    (:func:`saetrack.progress_text.replay`) and every progress bar of the cell on one line, its last
    (:func:`saetrack.progress_text.last_bar_states`); other outputs stay where they are."""
    runs: list = []  # per output kept as is, the output; per run of stream outputs, its lines
    for output in outputs:
        if output.get("output_type") != "stream":
            runs.append(output)
        elif runs and isinstance(runs[-1], list):
            runs[-1].append((output.get("name", "stdout"), output.get("text", "")))
        else:
            runs.append([(output.get("name", "stdout"), output.get("text", ""))])
    lines = [
        (index, line) for index, run in enumerate(runs) if isinstance(run, list) for line in progress_text.replay(run)
    ]
    keep = progress_text.last_bar_states([line for _, line in lines])
    merged: list = []
    for index, run in enumerate(runs):
        if not isinstance(run, list):
            merged.append(run)
            continue
        kept = [line for (at, line), wanted in zip(lines, keep, strict=True) if at == index and wanted]
        for name, text in progress_text.as_blocks(kept):
            merged.append(nbformat.v4.new_output("stream", name=name, text=text))
    return merged


def machine_paths(preset: str, run_dir: Path, repo_root: Path) -> dict[str, str]:
    """The absolute paths of the machine that ran, mapped to what a render shows instead (longest first, so a run
    directory or environment inside the checkout is named as such): the run directory, the Python environment, the
    checkout (this one, and the one that ran: the run directory's grandparent when it is ``.../runs/<preset>``)."""
    run_dir = Path(run_dir).resolve()
    hidden = {str(run_dir): f"runs/{preset}", str(Path(sys.prefix).resolve()): "<python environment>",
              str(Path(repo_root).resolve()): "."}  # fmt: skip
    if run_dir.parent.name == "runs":  # the checkout that ran, when it is not this one (a run published elsewhere)
        hidden.setdefault(str(run_dir.parent.parent), ".")
    return dict(sorted(hidden.items(), key=lambda item: -len(item[0])))


def _hide_paths(html: str, hidden: Mapping[str, str]) -> str:
    """``html`` with the machine's paths written as a reader can use them: a cell's temporary file as ``<this
    cell>``, any Python environment's library folder as ``<python environment>/lib/...``, the paths of ``hidden``
    (:func:`machine_paths`) as what they stand for, and any other absolute path under ``/tmp``, ``/work``, ``/root``
    or ``/home`` as ``<local path>`` (the page is HTML: the names in angle brackets are escaped to stay text)."""
    html = _CELL_FILE.sub(escape("<this cell>"), html)
    html = _ENVIRONMENT.sub(escape("<python environment>"), html)
    for path, shown in hidden.items():
        html = html.replace(path, escape(shown))
    return _MACHINE_PATH.sub(escape("<local path>"), html)


def render_notebook(
    notebook: Path, target: Path, hidden: Mapping[str, str] | None = None, navigation: str = "", title: str = ""
) -> Path:
    """Write an executed notebook as standalone HTML, atomically: progress bars at their final state
    (:func:`_final_streams`), inline figures scaled by :func:`_smaller_png`, after each cell that saves figures to
    the render's figure folder (``target``'s grandparent) those figures, linked, every path of the machine
    (``hidden``, :func:`machine_paths`, and the others of :func:`_hide_paths`) replaced by what it stands for, and
    the ``navigation`` bar (:func:`saetrack.render_index.navigation`) above and below; ``title`` names the page."""
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = _final_streams(cell.outputs)
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" in data:
                data["image/png"] = _smaller_png(data["image/png"])
        if cell.cell_type == "code":
            tags = _figure_links(cell.source, target.parent.parent)
            if tags:
                cell.outputs.append(nbformat.v4.new_output("display_data", data={"text/html": "\n".join(tags)}))
    body, _ = HTMLExporter(template_name="basic").from_notebook_node(nb)
    html = _PAGE.format(title=escape(title or notebook.stem), body=body, navigation=navigation)
    html = _hide_paths(html, hidden or {})
    with store.atomic_path(target) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return target


def publish_run(preset: str, run_dir: Path) -> list[Path]:
    """Copy the run's ``results.json`` and render its executed notebooks into ``figures/<preset>/``, each linked to
    its neighbours and to ``notebooks/index.html``, written too (:func:`saetrack.render_index.index_page`); return
    the files written (nothing for a run that has not executed a notebook yet)."""
    out = paths.figures_dir(preset)
    written = []
    results = Path(run_dir) / paths.RESULTS_JSON
    if results.exists():
        out.mkdir(parents=True, exist_ok=True)
        with store.atomic_path(out / paths.RESULTS_JSON) as tmp:
            shutil.copyfile(results, tmp)
        written.append(out / paths.RESULTS_JSON)
    notebooks = sorted((Path(run_dir) / paths.NOTEBOOKS_DIR).glob("*.ipynb"))
    if not notebooks:
        return written
    renders = [
        (nb.stem, render_index.notebook_title(nbformat.read(nb, as_version=4).cells, nb.stem)) for nb in notebooks
    ]
    hidden = machine_paths(preset, run_dir, paths.REPO_ROOT)
    explorer = (out / paths.EXPLORER_DIR / render_index.INDEX_HTML).is_file()
    for position, notebook in enumerate(notebooks):
        target = out / paths.NOTEBOOKS_DIR / f"{notebook.stem}.html"
        navigation = render_index.navigation(renders, position, explorer)
        written.append(render_notebook(notebook, target, hidden, navigation, title=renders[position][1]))
    index = out / paths.NOTEBOOKS_DIR / render_index.INDEX_HTML
    page = _PAGE.format(title=escape(f"{preset}: notebooks, figures and results"), navigation="",
                        body=render_index.index_page(preset, renders, out))  # fmt: skip
    with store.atomic_path(index) as tmp:
        tmp.write_text(page, encoding="utf-8")
    written.append(index)
    return written
