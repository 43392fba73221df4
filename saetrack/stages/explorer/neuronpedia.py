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
from saetrack.data.activations import open_activations
from saetrack.sae.io import SAE_CFG_FILE
from saetrack.stages.explorer.contexts import context_windows
from saetrack.stages.explorer.export import ExportContext, ExportFeature, export_link

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


def link_features(run: Run, step: int, windows_at: object, position: int) -> list[ExportFeature]:
    """Every feature of the link at ``step`` as :class:`ExportFeature`, from the windows of ``windows_at`` (a
    :class:`~saetrack.stages.explorer.contexts.ContextWindows` kept with its activations) at its ``position``."""
    tokens = run.analysis_tokens()
    flat, width = np.asarray(tokens).reshape(-1), int(np.asarray(tokens).shape[1])
    tokenizer, decoded = run.tokenizer(), {}
    frequency = run.firing_frequency(step)
    offsets, centre = windows_at.offsets, int(np.flatnonzero(windows_at.offsets == 0)[0])  # type: ignore[attr-defined]
    features = []
    for f in range(run.n_features):
        contexts = []
        for c, row in enumerate(windows_at.rows[position, f]):  # type: ignore[attr-defined]
            if row < 0:
                continue
            where = row % width + offsets
            ids = [int(flat[row + o]) if 0 <= q < width else -1 for o, q in zip(offsets, where, strict=True)]
            texts = [decoded.setdefault(i, tokenizer.decode([i])) if i >= 0 else "" for i in ids]
            values = windows_at.activations[position, f, c]  # type: ignore[attr-defined]
            contexts.append(_context(texts, values, ids, centre))
        top = float(windows_at.values[position, f, 0])  # type: ignore[attr-defined]
        freq = None if frequency is None else float(np.clip(frequency[f], 0.0, 1.0))
        features.append(ExportFeature(index=f, frac_nonzero=freq, max_activation=top, contexts=contexts))
    return features


def export_neuronpedia(
    run: Run, out_dir: Path, steps: Sequence[int] | None = None, *, device: str = "cpu", progress: bool = False
) -> dict[int, list[Path]]:
    """Write the links at ``steps`` (default: every link) to ``out_dir/step<k>/batch-<n>.json`` and return the files
    per step. Raises ``KeyError`` (:class:`~saetrack.api.StepNotInChainError`) naming the chain's steps for a step
    that is not a link."""
    chosen = list(run.steps) if not steps else [int(s) for s in steps]
    positions = [run.position(step) for step in chosen]
    formation, tokens = run.formation(), run.analysis_tokens()
    source = open_activations(run.config, run.run_dir, device=device, full_model=False)
    cfg = run.config.explorer
    windows = context_windows(
        source.analysis, lambda step: run.link(step, device=device), chosen, formation.top_values[positions],
        formation.top_indices[positions], context_length=tokens.shape[1], n_contexts=formation.top_values.shape[-1],
        before=cfg.context_before, after=cfg.context_after, progress=progress, keep_activations=True,
    )  # fmt: skip
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
