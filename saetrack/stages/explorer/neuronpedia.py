"""A run's links exported for Neuronpedia: each link's features as SAEDashboard's batch JSON (:mod:`.export`).

Every feature of the link at each chosen step, with its firing frequency on the link's training tokens, its largest
activation over the analysis set and its top contexts (all ``formation.top_k`` the formation stage stored), each
token's activation recomputed exactly (Eq. 2, :func:`~saetrack.stages.explorer.contexts.context_windows`). One folder
per link (``<out>/step<k>/batch-<n>.json``); feature ``i`` keeps its index at every link, so Neuronpedia's sources
``<layer>-saetrack-res__step<k>`` show one feature across checkpoints under one index.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from saetrack.api import Run, open_run
from saetrack.sae.io import SAE_CFG_FILE
from saetrack.stages.explorer.arrays import run_windows
from saetrack.stages.explorer.contexts import ContextWindows
from saetrack.stages.explorer.export import ExportContext, ExportFeature, export_link
from saetrack.stages.explorer.pages import token_texts, window_ids

__all__ = ["SAE_SET", "export_neuronpedia", "export_run_dir", "link_features", "model_id"]

#: Neuronpedia's source set of a chain's links (a residual-stream SAE of the chain).
SAE_SET = "saetrack-res"


def model_id(run: Run) -> str:
    """The model's Neuronpedia id: the Hub repo's name (``pythia-410m-deduped``) or ``saetrack-<preset>`` for the
    local nano suite."""
    repo = run.config.model.repo_id
    return repo.split("/")[-1] if repo else f"saetrack-{run.config.preset}"


def _context(tokens: list[str], values: np.ndarray, ids: list[int], centre: int) -> ExportContext:
    """A window without the positions past its context's edge (``ids`` -1), the activating token's index moved."""
    inside = [k for k, token in enumerate(ids) if token >= 0]
    return ExportContext(
        tokens=[tokens[k] for k in inside], values=[float(values[k]) for k in inside], target=inside.index(centre)
    )


def link_features(run: Run, step: int, windows: ContextWindows, position: int) -> list[ExportFeature]:
    """Every feature of the link at ``step`` as :class:`ExportFeature`, from ``windows`` (kept with their activations)
    at its ``position``: the window tokens' texts, their activations, the top activation and the firing frequency."""
    assert windows.activations is not None, "the windows must be computed with keep_activations=True"
    text, ids = token_texts(run.tokenizer()), window_ids(run.analysis_tokens(), windows.offsets)
    frequency = run.firing_frequency(step)
    centre = int(np.flatnonzero(windows.offsets == 0)[0])
    features = []
    for f in range(run.n_features):
        contexts = []
        for c, row in enumerate(windows.rows[position, f]):
            if row >= 0:
                window = ids(int(row))
                values = windows.activations[position, f, c]
                contexts.append(_context([text(i) for i in window], values, window, centre))
        freq = None if frequency is None else float(np.clip(frequency[f], 0.0, 1.0))
        top = float(windows.values[position, f, 0])
        features.append(ExportFeature(index=f, frac_nonzero=freq, max_activation=top, contexts=contexts))
    return features


def export_neuronpedia(
    run: Run, out_dir: Path, steps: Sequence[int] | None = None, *, device: str = "cpu", progress: bool = False
) -> dict[int, list[Path]]:
    """Write the links at ``steps`` (default: every link) to ``out_dir/step<k>/batch-<n>.json`` and return the files
    per step. Raises ``KeyError`` (:class:`~saetrack.api.StepNotInChainError`) naming the chain's steps for a step
    that is not a link."""
    chosen = list(run.steps) if not steps else [int(s) for s in steps]
    tokens, k = run.analysis_tokens(), run.config.formation.top_k
    windows = run_windows(run, chosen, k, device=device, progress=progress, keep_activations=True)
    layer = run.config.cache.layer
    cfg_json = json.loads((run.link_dir(chosen[0]) / SAE_CFG_FILE).read_text())
    dataset = str(cfg_json.get("metadata", {}).get("dataset_path") or run.config.preset)
    written = {}
    for position, step in enumerate(chosen):
        written[step] = export_link(
            link_features(run, step, windows, position), Path(out_dir) / f"step{step}", model_id=model_id(run),
            layer=layer, sae_set=SAE_SET, link_id=f"step{step}", dataset=dataset,
            n_prompts_total=int(tokens.shape[0]), n_tokens_in_prompt=int(tokens.shape[1]),
        )  # fmt: skip
    return written


def export_run_dir(
    run_dir: str | Path, out_dir: str | Path, steps: Sequence[int] | None = None, *, device: str = "cpu"
) -> dict[int, list[Path]]:
    """:func:`export_neuronpedia` of the finished run in ``run_dir`` (opened with :func:`saetrack.api.open_run`)."""
    return export_neuronpedia(open_run(run_dir), Path(out_dir), steps, device=device, progress=True)
