"""The explorer stage (notebook 07): a static site to follow any feature of the chain through training.

Built from the run API (:mod:`saetrack.api`) after the formation, drift and crosscoder stages, into
``runs/<preset>/explorer/`` (with its manifest, skipped when current like every stage) and copied to
``figures/<preset>/explorer/``. It opens from the file system (``index.html``, no server, no network) or is served
on localhost by ``python -m saetrack.explorer runs/<preset>``.

* :mod:`~saetrack.stages.explorer.arrays` — every stage's per-feature arrays, gathered once;
* :mod:`~saetrack.stages.explorer.contexts` — each feature's top contexts at every checkpoint, tokens shaded by the
  activation of Eq. 2 (recomputed per (feature, token) pair, checked against the formation stage's values);
* :mod:`~saetrack.stages.explorer.nearest` — nearest features by decoder cosine at the final link;
* :mod:`~saetrack.stages.explorer.pages` — the index, feature and checkpoint payloads;
* :mod:`~saetrack.stages.explorer.site` — the data scripts, the page and the plotting library (Plotly.js, vendored);
* :mod:`~saetrack.stages.explorer.export` — a link's features as SAEDashboard's Neuronpedia batches;
* :mod:`~saetrack.stages.explorer.neuronpedia` — a run's links exported in that format (``python -m saetrack.explorer
  runs/<preset> --export-neuronpedia DIR``), every token's activation exact.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Any

from tqdm import tqdm

from saetrack import paths, store
from saetrack.api import Run
from saetrack.config.base import config_hash
from saetrack.config.run import RunConfig
from saetrack.data.cache_plan import cache_config_hash
from saetrack.pipeline.skeleton import StageRun, finished_manifest, run_stage
from saetrack.stages.crosscoder import crosscoder_config_hash
from saetrack.stages.crosscoder.method_comparison import comparison_config_hash
from saetrack.stages.drift import drift_config_hash
from saetrack.stages.explorer import pages, site
from saetrack.stages.explorer.arrays import gather_arrays, run_windows

__all__ = [
    "build_explorer",
    "explorer_config_hash",
    "load_explorer_manifest",
    "output_hashes",
    "publish_explorer",
    "summary_numbers",
]


def _assets_digest() -> str:
    """A digest of the page, script and style and the plotting library (a new view rebuilds the site)."""
    digest = hashlib.sha256(site.PLOTLY_SHA256.encode())
    assets = resources.files("saetrack.stages.explorer") / "assets"
    for name in site.ASSETS:
        digest.update((assets / name).read_bytes())
    return digest.hexdigest()[:16]


def explorer_config_hash(run: RunConfig) -> str:
    """Hash of the explorer's inputs: the cache (analysis tokens), the drift stage (which covers the chain and the
    formation stage), the crosscoder and its comparison when on, the explorer section and the site's assets."""
    payload: dict[str, Any] = {
        "cache": cache_config_hash(run),
        "drift": drift_config_hash(run),
        "explorer": run.to_dict()["explorer"],
        "assets": _assets_digest(),
        "v": 1,
    }
    if run.crosscoder.enabled:
        payload["crosscoder"] = [crosscoder_config_hash(run), comparison_config_hash(run)]
    return config_hash(payload)


def _write_site(run: Run, folder: Path, device: str, progress: bool) -> dict[str, Any]:
    """Gather the arrays, recompute the shaded contexts and write every data file and asset into ``folder``."""
    cfg, timings = run.config.explorer, {}
    started = time.perf_counter()
    arrays = gather_arrays(run, cfg.nearest, device=device)
    windows = run_windows(run, run.steps, cfg.contexts_per_checkpoint, device=device, progress=progress)
    timings["contexts"] = time.perf_counter() - started
    text, ids = pages.token_texts(run.tokenizer()), pages.window_ids(run.analysis_tokens(), windows.offsets)
    n, used = run.n_features, set(arrays.dominant.reshape(-1).tolist())
    search = []
    for f in tqdm(range(n), desc="explorer pages", unit="feature", disable=not progress):
        page = pages.feature_page(arrays, windows, f, ids)
        for window in page["windows"].values():
            used.update(window)
        site.write_payload(folder, site.feature_file(f), f"feature/{f}", page)
        search.append(pages.search_text(windows, f, lambda r: "".join(text(t) for t in ids(r))))
    for t, step in enumerate(arrays.steps):
        site.write_payload(
            folder, site.checkpoint_file(int(step)), f"checkpoint/{int(step)}", pages.checkpoint_page(arrays, t)
        )
    site.write_payload(folder, "data/index.js", "index", pages.index_table(arrays, text))
    site.write_payload(folder, "data/search.js", "search", search)
    site.write_payload(folder, "data/vocab.js", "vocab", {str(t): text(int(t)) for t in sorted(used) if t >= 0})
    site.write_payload(folder, "data/run.js", "run", pages.run_description(run, arrays, windows.offsets))
    site.copy_assets(folder)
    timings["total_write"] = time.perf_counter() - started
    return timings


def _build(run: Run, stage: StageRun, device: str, progress: bool) -> dict[str, Any]:
    """Write the site under a temporary name and finish its manifest (sizes by part, timings)."""
    with stage.atomic() as tmp:
        timings = _write_site(run, tmp, device, progress)
        sizes = site.site_bytes(tmp)
        return stage.finish(
            config={"explorer": run.config.to_dict()["explorer"]}, timings=timings, into=tmp, sizes=sizes,
            n_features=run.n_features, steps=list(run.steps),
        )  # fmt: skip


def build_explorer(
    run: RunConfig, run_dir: Path, *, force: bool = False, progress: bool = True, device: str = "cpu"
) -> dict[str, Any]:
    """Build the explorer of the finished run in ``run_dir`` into ``run_dir/explorer`` (skipped when current with
    this config) and return its manifest; ``device`` recomputes the shaded contexts and the nearest features."""
    opened = Run(run_dir, run)
    return run_stage(
        Path(run_dir) / paths.EXPLORER_DIR,
        "explorer",
        explorer_config_hash(run),
        lambda stage: _build(opened, stage, device, progress),
        force=force,
    )


def load_explorer_manifest(run_dir: Path, run: RunConfig | None = None) -> dict[str, Any]:
    """The manifest of a finished explorer (checked against ``run`` when given)."""
    digest = explorer_config_hash(run) if run else None
    return finished_manifest(Path(run_dir) / paths.EXPLORER_DIR, digest, "explorer", "07")


def publish_explorer(run: RunConfig, run_dir: Path) -> Path:
    """Copy the finished explorer to ``figures/<preset>/explorer/`` (replacing what is there, atomically) and return
    the path of its ``index.html``."""
    load_explorer_manifest(run_dir, run)
    target = paths.figures_dir(run.preset) / paths.EXPLORER_DIR
    target.parent.mkdir(parents=True, exist_ok=True)
    with store.atomic_dir(target) as tmp:
        shutil.copytree(Path(run_dir) / paths.EXPLORER_DIR, tmp, dirs_exist_ok=True)
        (tmp / paths.MANIFEST).unlink(missing_ok=True)
    return target / "index.html"


def summary_numbers(manifest: dict[str, Any]) -> dict[str, Any]:
    """The explorer's entry in ``results.json``: its size by part (bytes), file count, features and build time."""
    return {
        "bytes": dict(manifest["sizes"]),
        "features": int(manifest["n_features"]),
        "checkpoints": len(manifest["steps"]),
        "seconds": round(float(manifest["timings_s"]["total"]), 1),
    }


def output_hashes(run: RunConfig) -> dict[str, str]:
    """Output folder -> config hash of the explorer stage."""
    return {paths.EXPLORER_DIR: explorer_config_hash(run)}
