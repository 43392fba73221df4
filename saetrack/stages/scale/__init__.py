"""The scale study (notebook 05; paper App. C.3, Fig. 9-16): the whole pipeline over several model sizes.

Every size of ``run.scale.presets`` is a preset with its own run directory (``runs/<size>/``); its stages (notebooks
01-04) run through :func:`saetrack.pipeline.run_stages`, so finished sizes are skipped and an interrupted size
resumes. :func:`load_size` collects what the per-size figures and the cross-scale summary need, and
:func:`summary_numbers` the numbers for the results JSON. The seed study (:mod:`saetrack.stages.scale.seeds`: one size
over model and chain seeds, and a longer warm-up) runs in the same pool of processes as the other sizes. The stage's
manifest (``run_dir/scale/``) records the drift hash of every size and every seed variant, so the stage is current
exactly when all of them are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from saetrack import paths, store
from saetrack.config.base import config_hash
from saetrack.config.presets import get_preset
from saetrack.config.run import RunConfig
from saetrack.pipeline import headless
from saetrack.pipeline.parallel import SIZE_STAGES, run_jobs, size_job
from saetrack.pipeline.skeleton import StageRun, current_manifest
from saetrack.sae.weights import SAEWeights
from saetrack.stages.chain import load_chain, read_link_manifests
from saetrack.stages.drift import drift_config_hash, load_drift
from saetrack.stages.drift import summary_numbers as drift_numbers
from saetrack.stages.formation import load_formation, median_progress
from saetrack.stages.formation import summary_numbers as formation_numbers
from saetrack.stages.scale.seeds import SeedVariant, seed_variants, variant_hashes, variant_jobs

__all__ = [
    "PAPER_FIGURE_KEYS",
    "SizeResult",
    "ensure_sizes",
    "figure_keys",
    "load_size",
    "non_embedding_parameters",
    "output_hashes",
    "scale_config_hash",
    "size_dir",
    "size_runs",
    "study_variants",
    "summary_numbers",
    "write_summary",
]


#: The paper's per-size appendix figures: (UMAP, progress measure, decoder cosine, trajectories) for its two other
#: sizes — Pythia-160m (Fig. 9-12) and Pythia-1.4b (Fig. 13-16); here the first two sizes other than this run's.
PAPER_FIGURE_KEYS: tuple[tuple[str, str, str, str], ...] = (("09", "10", "11", "12"), ("13", "14", "15", "16"))


def size_runs(run: RunConfig) -> list[RunConfig]:
    """The validated config of every size of the study, small to large; this run's own size is ``run`` itself."""
    return [run if preset == run.preset else get_preset(preset) for preset in run.scale.presets or (run.preset,)]


def size_dir(size: RunConfig, run: RunConfig, run_dir: Path) -> Path:
    """The run directory of one size of ``run``'s scale study: ``run_dir`` for its own size, ``runs/<preset>/`` else."""
    return Path(run_dir) if size.preset == run.preset else paths.run_dir(size.preset)


def scale_config_hash(run: RunConfig) -> str:
    """Hash of the scale stage's inputs: the drift-stage hash of every size and every seed variant (which cover all
    earlier stages)."""
    sizes = size_runs(run)
    variants = seed_variants(run, Path("."), {s.preset: Path(s.preset) for s in sizes})
    return config_hash({"sizes": {s.preset: drift_config_hash(s) for s in sizes}, "seeds": variant_hashes(variants),
                        "v": 2})  # fmt: skip


def study_variants(run: RunConfig, run_dir: Path) -> list[SeedVariant]:
    """The seed study's variants of ``run`` with their folders (:func:`~saetrack.stages.scale.seeds.seed_variants`;
    the variant with the seed size's own seeds is the scale study's run of that size)."""
    folders = {s.preset: size_dir(s, run, run_dir) for s in size_runs(run)}
    return seed_variants(run, run_dir, folders)


def _variant_current(variant: SeedVariant) -> bool:
    """Whether a seed variant's drift stage (its last) is finished with its config."""
    return current_manifest(variant.folder / paths.DRIFT_DIR, drift_config_hash(variant.run)) is not None


def _run_variants_here(
    variants: list[SeedVariant], pending: list[SeedVariant], device: str, log: Callable[[str], None]
) -> None:
    """The ``pending`` seed variants one after the other in this process (no parallel pool); every variant's folder
    (the shared one, finished ones) may lend its corpus and model."""
    lenders = [v.folder for v in variants]
    for v in pending:
        headless.adopt(v.run, v.folder, lenders)
        seconds = headless.run_headless(v.run, v.folder, device=device)
        log(f"[scale] seed variant {v.name}: current after {seconds:.1f} s")


def ensure_sizes(
    run: RunConfig,
    run_dir: Path,
    *,
    run_pipeline: Callable[..., float],
    force: bool = False,
    device: str = "cpu",
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Run notebooks 01-04 for every size whose outputs are not current; return size preset -> run directory.

    Sizes other than ``run``'s own use their preset's defaults in ``runs/<size>/`` (their figures go to
    ``figures/<size>/``); ``run``'s own size only needs current outputs (``run_all.py`` runs its stages first, and
    ``force`` rebuilt them there). With ``run.scale.parallel_sizes > 1`` the other sizes run at once, each as its
    own ``run_all.py`` process on one torch thread (:func:`~saetrack.pipeline.parallel.run_parallel`); otherwise
    ``run_pipeline`` (:func:`saetrack.pipeline.stages.run_stages`, passed in because the pipeline itself lists
    this stage) runs them here. A failing size raises
    :class:`saetrack.notebooks.NotebookFailed` naming the size and its log.
    """

    folders: dict[str, Path] = {}
    others = []
    for size in size_runs(run):
        folder = size_dir(size, run, run_dir)
        folder.mkdir(parents=True, exist_ok=True)
        folders[size.preset] = folder
        if size.preset == run.preset:
            seconds = run_pipeline(size, folder, only=SIZE_STAGES, device=device, log=log, outputs_only=True)
            log(f"[scale] size {size.preset}: pipeline current after {seconds:.1f} s")
        else:
            others.append(size)
    # seed variants not yet current (``force`` rebuilds the sizes, not the variants: delete runs/<preset>/seeds/)
    variants = study_variants(run, run_dir)
    pending = [v for v in variants if not v.shared and not _variant_current(v)]
    if run.scale.parallel_sizes > 1 and len(others) + len(pending) > 1:
        jobs = [size_job(size, folders[size.preset], force=force, device=device) for size in others]
        jobs += variant_jobs(variants, {job.name for job in jobs}, device, pending={v.name for v in pending})
        run_jobs(jobs, run.scale.parallel_sizes, log=log)
    else:
        for size in others:
            seconds = run_pipeline(size, folders[size.preset], only=SIZE_STAGES, force=force, device=device, log=log)
            log(f"[scale] size {size.preset}: pipeline current after {seconds:.1f} s")
        _run_variants_here(variants, pending, device, log)
    return folders


@dataclass(frozen=True)
class SizeResult:
    """What the scale study shows of one model size."""

    preset: str
    run: RunConfig
    run_dir: Path
    formation: Any  # saetrack.formation_run.FormationResult
    drift: Any  # saetrack.drift_run.DriftResult
    numbers: dict[str, Any]

    @property
    def label(self) -> str:
        """``"nano-s (d64, 2 layers, 100k non-embedding)"``: preset, width, depth and non-embedding parameters."""
        n = self.numbers
        params = n["non_embedding_parameters"]
        size = f"{params / 1e6:.1f}M" if params >= 1e6 else f"{params / 1e3:.0f}k"
        return f"{self.preset} (d{n['d_model']}, {n['n_layers']} layers, {size} non-embedding)"

    def median_progress(self, kind: str, key: str = "activation_cosine") -> np.ndarray:
        """Median progress measure per checkpoint of live features whose final label is ``kind``."""

        return median_progress(self.formation, kind, key)

    def formed_share(self) -> np.ndarray:
        """Share of live features formed (Sec. 6 rule) at each checkpoint."""
        formed = np.asarray(self.drift.formed, dtype=bool)
        return formed.mean(axis=1) if formed.size else np.zeros(len(self.drift.steps))


def non_embedding_parameters(d_model: int, n_layers: int, d_mlp: int | None = None) -> int:
    """Attention (4 d^2 + 4 d) and MLP (2 d d_mlp + d_mlp + d) weights and biases of a GPT-NeoX stack, plus the
    layer norms (4 d per block): the parameter count scaling laws use (embeddings and unembedding excluded)."""
    d_mlp = 4 * d_model if d_mlp is None else d_mlp
    per_block = 4 * d_model * d_model + 4 * d_model + 2 * d_model * d_mlp + d_mlp + d_model + 4 * d_model
    return n_layers * per_block


def load_size(size: RunConfig, folder: Path) -> SizeResult:
    """Formation and drift results of one size and its headline numbers (checked against its config)."""

    formation = load_formation(folder, size)
    drift = load_drift(folder, size)
    d_model = size.model.d_model or int(SAEWeights.load(next(iter(load_chain(folder, size).values()))).W_dec.shape[1])
    n_layers = int(size.model.n_layers or 0)
    d_mlp = size.suite.d_mlp if size.suite is not None else None
    links = read_link_manifests(folder)
    metrics = [m["link"]["metrics"] for m in links.values() if "link" in m]
    model = store.read_manifest(Path(folder) / paths.MODEL_DIR) or {}
    numbers = {
        "preset": size.preset,
        "d_model": d_model,
        "n_layers": n_layers,
        "hook": size.cache.hook_name,
        "non_embedding_parameters": non_embedding_parameters(d_model, n_layers, d_mlp),
        "final_heldout_loss": model.get("final_heldout_loss"),
        "heldout_unigram_entropy": model.get("heldout_unigram_entropy"),
        "d_sae": size.chain.expansion_factor * d_model,
        "mean_explained_variance": float(np.mean([m["explained_variance"] for m in metrics])) if metrics else None,
        "mean_l0": float(np.mean([m["l0"] for m in metrics])) if metrics else None,
        "formation": dict(formation.manifest["pattern_counts"]),
        "drift": drift_numbers(drift),
    }
    return SizeResult(size.preset, size, Path(folder), formation, drift, numbers)


def figure_keys(sizes: Sequence[str], this_preset: str) -> dict[str, tuple[str, str, str, str]]:
    """Size -> figure keys of its (UMAP, progress, decoder cosine, trajectories) figures: the paper's Fig. 9-12 and
    13-16 go to the first two sizes other than this run's, smaller first (this run's own are Fig. 4, 5, 6a, 7)."""
    others = [s for s in sizes if s != this_preset]
    return dict(zip(others, PAPER_FIGURE_KEYS, strict=False))


def summary_numbers(results: Sequence[SizeResult]) -> dict[str, Any]:
    """Per-size numbers of the study (results JSON): model size and LM loss, chain quality, drift and phases,
    formation counts, the median token- and concept-level progress at the first and final checkpoints, and the
    baseline-normalised measure (``normalised_progress``, which the ledger's "every size" claim reads)."""
    sizes = []
    for r in results:
        formation = formation_numbers(r.formation)
        sizes.append({**r.numbers, "progress_activation_cosine": formation["activation_cosine"],
                      "normalised_progress": formation["normalised_progress"]})  # fmt: skip
    return {"sizes": sizes}


def write_summary(run: RunConfig, run_dir: Path, numbers: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Write the scale stage's folder (``summary.json`` and the manifest, whose config hash covers every size's
    drift stage) atomically and return the manifest; ``seconds`` is the notebook's time for the whole study."""
    stage = StageRun(Path(run_dir) / paths.SCALE_DIR, "scale", scale_config_hash(run))
    with stage.atomic() as tmp:
        store.write_json(tmp / "summary.json", numbers)
        return stage.finish(
            into=tmp,
            config={"presets": list(run.scale.presets)},
            files={"summary.json": store.file_sha256(tmp / "summary.json")},
            timings={"total": seconds},
        )


def output_hashes(run: RunConfig) -> dict[str, str]:
    """Output folder -> config hash of the scale stage."""
    return {paths.SCALE_DIR: scale_config_hash(run)}
