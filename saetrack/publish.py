"""What a reader can check without running anything: the run's results and its executed notebooks, beside the figures.

After a run, ``run_all.py`` copies ``runs/<preset>/results.json`` to ``figures/<preset>/results.json`` and renders
every executed notebook of ``runs/<preset>/notebooks/`` to ``figures/<preset>/notebooks/<name>.html`` (inputs,
printed output and figures; the figures are re-encoded at a reading size so the renders stay small).
"""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter
from PIL import Image

from saetrack import paths, store

__all__ = [
    "MAX_IMAGE_WIDTH",
    "publish_run",
    "render_notebook",
]


#: Width (pixels) inline figures are scaled down to in the HTML renders.
MAX_IMAGE_WIDTH = 900


def _smaller_png(data: str) -> str:
    """A base64 PNG scaled to at most :data:`MAX_IMAGE_WIDTH` pixels wide and stored with 256 colours."""
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    if image.width > MAX_IMAGE_WIDTH:
        image = image.resize((MAX_IMAGE_WIDTH, round(image.height * MAX_IMAGE_WIDTH / image.width)), Image.LANCZOS)
    buffer = io.BytesIO()
    image.convert("RGB").quantize(colors=256).save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode()


def render_notebook(notebook: Path, target: Path) -> Path:
    """Write an executed notebook as standalone HTML (figures scaled by :func:`_smaller_png`), atomically."""
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" in data:
                data["image/png"] = _smaller_png(data["image/png"])
    html, _ = HTMLExporter().from_notebook_node(nb)
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
        written.append(render_notebook(notebook, target))
    return written
