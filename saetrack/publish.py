"""What a reader can check without running anything: the run's results and its executed notebooks, beside the figures.

After a run, ``run_all.py`` copies ``runs/<preset>/results.json`` to ``figures/<preset>/results.json`` and renders
every executed notebook of ``runs/<preset>/notebooks/`` to ``figures/<preset>/notebooks/<name>.html`` (inputs,
printed output and figures; the figures are re-encoded at a reading size so the renders stay small). The machine's
own paths are written as a reader can use them (:func:`machine_paths`): the run directory as ``runs/<preset>``, the
checkout as ``.``, the Python environment as ``<python environment>``.
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

from saetrack import paths, store
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

#: Width (pixels) inline figures are scaled down to in the HTML renders.
MAX_IMAGE_WIDTH = 900


#: The page around nbconvert's "basic" body (no 300 kB of JupyterLab CSS per render).
_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title><style>
body {{ max-width: 960px; margin: 2em auto; font-family: sans-serif; line-height: 1.45; }}
pre {{ background: #f6f6f6; padding: 0.5em; overflow-x: auto; font-size: 85%; }}
.jp-InputArea pre {{ border-left: 3px solid #8ab; }}
img {{ max-width: 100%; }} table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 2px 6px; }}
</style></head><body>
{body}
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
    that exist in ``figures``, relative to a render in ``figures/notebooks/``."""
    tags = []
    for key in _SAVED_FIGURE.findall(source):
        name = f"{FIGURES[key][0]}.png" if key in FIGURES else ""
        if name and (figures / name).exists():
            tags.append(f'<p><img src="../{name}" alt="{FIGURES[key][1]}" loading="lazy"></p>')
    return tags


def _final_streams(outputs: list) -> list:
    """``outputs`` with consecutive stream outputs of one name merged and every line reduced to what a terminal
    would show last (the text after its last carriage return): a progress bar's thousand updates become its final
    state."""
    merged: list = []
    for output in outputs:
        if output.get("output_type") == "stream" and merged and merged[-1].get("output_type") == "stream" \
                and merged[-1].get("name") == output.get("name"):  # fmt: skip
            merged[-1]["text"] += output["text"]
        else:
            merged.append(output)
    for output in merged:
        if output.get("output_type") == "stream":
            output["text"] = "\n".join(line.rsplit("\r", 1)[-1] for line in output["text"].split("\n"))
    return merged


def machine_paths(preset: str, run_dir: Path, repo_root: Path) -> dict[str, str]:
    """The absolute paths of the machine that ran, mapped to what a render shows instead (longest first, so a run
    directory or environment inside the checkout is named as such): the run directory, the Python environment, the
    checkout."""
    hidden = {str(Path(run_dir).resolve()): f"runs/{preset}", str(Path(sys.prefix).resolve()): "<python environment>",
              str(Path(repo_root).resolve()): "."}  # fmt: skip
    return dict(sorted(hidden.items(), key=lambda item: -len(item[0])))


def render_notebook(notebook: Path, target: Path, hidden: Mapping[str, str] | None = None) -> Path:
    """Write an executed notebook as standalone HTML, atomically: progress bars at their final state
    (:func:`_final_streams`), inline figures scaled by :func:`_smaller_png`, after each cell that saves figures to
    the render's figure folder (``target``'s grandparent) those figures, linked, and every path of ``hidden``
    (:func:`machine_paths`) replaced by what it stands for."""
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
    html = _PAGE.format(title=notebook.stem, body=body)
    for path, shown in (hidden or {}).items():
        html = html.replace(path, escape(shown))  # the page is HTML: <python environment> must stay text
    html = _CELL_FILE.sub(escape("<this cell>"), html)
    with store.atomic_path(target) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return target


def publish_run(preset: str, run_dir: Path) -> list[Path]:
    """Copy the run's ``results.json`` and render its executed notebooks into ``figures/<preset>/``; return the
    files written (nothing for a run that has not executed a notebook yet)."""
    out = paths.figures_dir(preset)
    written = []
    results = Path(run_dir) / paths.RESULTS_JSON
    if results.exists():
        out.mkdir(parents=True, exist_ok=True)
        with store.atomic_path(out / paths.RESULTS_JSON) as tmp:
            shutil.copyfile(results, tmp)
        written.append(out / paths.RESULTS_JSON)
    for notebook in sorted((Path(run_dir) / paths.NOTEBOOKS_DIR).glob("*.ipynb")):
        target = out / paths.NOTEBOOKS_DIR / f"{notebook.stem}.html"
        target.parent.mkdir(parents=True, exist_ok=True)
        written.append(render_notebook(notebook, target, machine_paths(preset, run_dir, paths.REPO_ROOT)))
    return written
