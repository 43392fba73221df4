"""The formation stage (notebook 03): everything Sec. 4-5 of the paper measures, computed once from the chain.

For every link SAE[t] on checkpoint t's activations of the fixed analysis set: feature statistics, the top-k
datapoints of every feature, its token-/concept-level label (Def. 4.1-4.2), dominant token and its share, and the
cosine of its decoder direction with the final one (Sec. 6.1). Then the filter of App. A.1, the evolution pattern
and sub-pattern of every live feature (Sec. 4.2) and the pattern counts at other token-share thresholds, the phases
of the median decoder cosine to final (Sec. 4.1) that choose the checkpoints Fig. 2 and Fig. 4 show, the progress
measures of every live feature at every checkpoint (Def. 5.4, Eq. 14-19, 27-29; D_i = the top-k datapoints of
feature i under the final SAE at the final checkpoint, Eq. 12), UMAP embeddings of a few features' activation sets
(Fig. 4, the panels turned to one orientation: :mod:`saetrack.analysis.umap_panels`), Fig. 2's examples picked by rule
(:mod:`saetrack.stages.formation.examples`; interrupted identities never among them), control (c), formation on the
from-scratch SAEs (:mod:`saetrack.stages.formation.baseline_formation`), and the anchor-swap control
(:mod:`saetrack.analysis.anchors`). The numbers for results.json: :mod:`saetrack.stages.formation.summary`.

Written to ``run_dir/formation/`` (``arrays.npz``, ``examples.json``, ``manifest.json``); skipped when the
manifest matches the config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from saetrack import paths, store
from saetrack.analysis import anchors as an
from saetrack.analysis import features as fx
from saetrack.analysis import formation as fm
from saetrack.analysis import patterns as pt
from saetrack.analysis.umap_panels import align_panels
from saetrack.config.base import config_hash
from saetrack.config.run import RunConfig
from saetrack.data.activations import open_activations
from saetrack.data.corpus import load_corpus
from saetrack.pipeline.skeleton import StageRun, finished_manifest, run_stage
from saetrack.stages.chain import chain_config_hash, load_chain
from saetrack.stages.chain.continuity import require_continuous
from saetrack.stages.formation.baseline_formation import CONTROL_PREFIX, BaselineControl, control_summary
from saetrack.stages.formation.examples import pattern_examples
from saetrack.stages.formation.passes import CheckpointFeatures, feature_tables, progress_pass
from saetrack.stages.formation.summary import (
    ANCHOR_PREFIX,
    TERMS_KEYS,
    anchor_numbers,
    median_progress,
    normalised_curves,
    normalised_numbers,
    progress_terms,
    summary_numbers,
)

__all__ = [
    "ARRAYS_FILE",
    "EXAMPLES_FILE",
    "MIDDLE_FRACTION",
    "TERMS_KEYS",
    "FormationResult",
    "analyse_formation",
    "anchor_numbers",
    "formation_config_hash",
    "load_formation",
    "median_progress",
    "normalised_curves",
    "normalised_numbers",
    "output_hashes",
    "progress_terms",
    "summary_numbers",
    "top_contexts",
]


ARRAYS_FILE = "arrays.npz"
EXAMPLES_FILE = "examples.json"
#: The paper's Fig. 2 middle column as a fraction of the schedule (now only the fallback when no phases fit).
MIDDLE_FRACTION = fm.PAPER_FIG2_MIDDLE_FRACTION


def formation_config_hash(run: RunConfig) -> str:
    """Hash of the formation stage's inputs: the chain's hash (which covers the baselines), the formation section
    and the phase rule's minimum phase length (it chooses Fig. 2's and Fig. 4's checkpoints)."""
    payload = {
        "chain": chain_config_hash(run),
        "formation": run.to_dict()["formation"],
        "min_phase_checkpoints": run.drift.min_phase_checkpoints,
        "v": 4,
    }
    return config_hash(payload)


@dataclass(frozen=True)
class FormationResult:
    """The arrays of a finished formation stage (T checkpoints, F features)."""

    steps: np.ndarray  # [T]
    labels: np.ndarray  # [T, F] "token" / "concept" / "inactive"
    dominant: np.ndarray  # [T, F] dominant token id
    top_values: np.ndarray  # [T, F, k] activations of each feature's top-k analysis datapoints under SAE[t]
    top_indices: np.ndarray  # [T, F, k] their rows in the analysis set (context * context_length + position)
    live: np.ndarray  # [F] bool (App. A.1)
    patterns: np.ndarray  # [F] maintaining / shifting / grouping / other / interrupted / excluded
    live_features: np.ndarray  # [L] indices of live features, the columns of ``progress``
    final_types: np.ndarray  # [L] label of each live feature at the final checkpoint
    progress: dict[str, np.ndarray]  # key -> [T, L]; "baseline_<key>" -> [T]
    umap_steps: np.ndarray  # [n panels]
    umap_embeddings: np.ndarray  # [n panels, n, 2]
    umap_point_feature: np.ndarray  # [n]
    umap_types: dict[int, str]
    examples: list[dict[str, Any]]
    manifest: dict[str, Any]
    shares: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # [T, F] dominant token's share
    sub_patterns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))  # [F] ("excluded" if not live)
    phase_curve: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [T] median decoder cosine to final
    control: dict[str, np.ndarray] = field(default_factory=dict)  # control (c), "control__" arrays
    anchors: dict[str, np.ndarray] = field(default_factory=dict)  # anchor control, "anchor__" arrays
    link_dead_fraction: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [T] dead share of each link
    link_ultra_low_fraction: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [T] ultra-low share

    @property
    def checkpoint_choice(self) -> dict[str, Any]:
        """Fig. 2's columns and Fig. 4's panels with the phase and reason of each (empty for old stage folders)."""
        return dict(self.manifest.get("checkpoint_choice", {}))


def _choose_checkpoints(run: RunConfig, steps: list[int], cosine: np.ndarray, live: np.ndarray) -> fm.CheckpointChoice:
    """Fig. 2's and Fig. 4's checkpoints from the phases of the median (over live features) decoder cosine to final."""
    with np.errstate(all="ignore"):
        curve = np.nanmedian(cosine[:, live], axis=1) if live.size else np.full(len(steps), np.nan)
    choice = fm.choose_checkpoints(steps, curve, run.drift.min_phase_checkpoints)
    if choice.fallback:
        print(f"formation: no phases for Fig. 2 / Fig. 4 ({choice.fallback}); using the paper's index fractions")
    else:
        print(
            f"formation: phases of the median decoder cosine: Emergent from step {steps[choice.emergent or 0]}, "
            f"Convergent from step {steps[choice.convergent or 0]}; Fig. 2 shows steps "
            f"{[e['step'] for e in choice.fig2]}, Fig. 4 steps {[e['step'] for e in choice.fig4]}"
        )
    return choice


def _patterns(tables: CheckpointFeatures, live: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Pattern and sub-pattern of every feature (Sec. 4.2; "excluded" if not live) and the interrupted identities'
    record: the rule, their count and share of the live features, the pattern each would have had otherwise, and how
    many were inactive at a single checkpoint only."""
    n_features = tables.labels.shape[1]
    labels, dominant = tables.labels[:, live], tables.dominant[:, live]
    patterns = np.full(n_features, "excluded", dtype=object)
    patterns[live] = fx.classify_patterns(labels, dominant)
    subs = np.full(n_features, "excluded", dtype=object)
    subs[live] = pt.sub_patterns(labels, dominant)
    interrupted = patterns[live] == "interrupted"
    otherwise = fx.classify_patterns(labels, dominant, interrupted=False)[interrupted]
    gaps = fx.interruption_lengths(labels)[interrupted]
    record = {
        "rule": fx.INTERRUPTED_RULE,
        "count": int(interrupted.sum()),
        "share_of_live": float(interrupted.mean()) if live.size else None,
        "pattern_without_the_rule": {p: int((otherwise == p).sum()) for p in fx.PATTERNS if p != "interrupted"},
        "one_inactive_checkpoint": int((gaps == 1).sum()),
    }
    return patterns, subs, record


def _link_fractions(tables: CheckpointFeatures, min_density: float) -> dict[str, np.ndarray]:
    """Each chain link's dead and ultra-low fraction on its own checkpoint's analysis set (App. A.1, t alone)."""
    filters = [fx.filter_features([stats], min_density=min_density) for stats in tables.stats]
    return {
        "link_dead_fraction": np.asarray([f.dead.mean() for f in filters]),
        "link_ultra_low_fraction": np.asarray([f.ultra_low.mean() for f in filters]),
    }


def _anchor_arrays(sets: list[an.AnchorSet], within: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The anchor control's arrays: per anchor its features, their labels at the anchor and S_i^a(t) ``[T, n]``."""
    out: dict[str, np.ndarray] = {}
    for anchor in sets:
        out[f"{ANCHOR_PREFIX}{anchor.name}__features"] = anchor.features
        out[f"{ANCHOR_PREFIX}{anchor.name}__types"] = anchor.types.astype(str)
        out[f"{ANCHOR_PREFIX}{anchor.name}__within"] = within[anchor.name]
    return out


def _build_formation(run: RunConfig, run_dir: Path, stage: StageRun, device: str, progress: bool) -> dict[str, Any]:
    """Compute every formation analysis over the chain and write the stage folder atomically."""
    cfg = run.formation
    folders = load_chain(run_dir, run)
    require_continuous(folders, "formation (notebook 03)")
    source = open_activations(run, run_dir, device=device, full_model=False)  # no evaluation: blocks to the hook
    steps = sorted(folders)
    control = BaselineControl(run, run_dir, device)
    if control.skipped:
        print(f"formation: control (c) skipped: {control.skipped}")

    tables = feature_tables(run, source, folders, steps, device, progress, control)
    flt = fx.filter_features(tables.stats, min_density=cfg.min_density)
    live = np.nonzero(flt.live)[0]
    patterns, subs, interrupted = _patterns(tables, live)
    choice = _choose_checkpoints(run, steps, tables.cosine, live)
    umap_positions = [int(e["position"]) for e in choice.fig4]
    anchor_sets = an.anchor_sets(tables.labels, tables.top_values, tables.top_indices, live)

    final_indices = tables.top_indices[-1][live]  # D_i (Eq. 12)
    final_types = tables.labels[-1, live]
    second = progress_pass(
        run, source, folders, steps, live, final_types, final_indices, umap_positions, device, progress, anchor_sets
    )
    embeddings = align_panels([
        fm.umap_embedding(second.umap_points[p], seed=cfg.umap_seed)
        for p in tqdm(umap_positions, desc="UMAP per checkpoint", disable=not progress or not second.umap_points)
    ] if second.umap_points else [])  # fmt: skip
    tokens = np.asarray(source.analysis_tokens)
    examples = pattern_examples(
        load_corpus(run_dir)[0], tokens, tables, subs, patterns, live, second.measures["activation_cosine"],
        choice.fig2, cfg.examples_per_pattern, cfg.contexts_per_cell, run.chain_seed,
    )  # fmt: skip
    sensitivity = pt.pattern_sensitivity(
        tables.top_values, tables.top_indices, tokens.reshape(-1), live, min_active=cfg.min_active
    )
    arrays = {
        "steps": np.asarray(steps),
        "labels": tables.labels.astype(str),
        "dominant": tables.dominant,
        "shares": tables.shares,
        "top_values": tables.top_values,
        "top_indices": tables.top_indices,
        "live": flt.live,
        "patterns": patterns.astype(str),
        "sub_patterns": subs.astype(str),
        "live_features": live,
        "final_types": final_types.astype(str),
        "phase_curve": np.nanmedian(tables.cosine[:, live], axis=1) if live.size else np.full(len(steps), np.nan),
        "umap_steps": np.asarray([steps[p] for p in umap_positions]),
        "umap_embeddings": np.asarray(embeddings) if embeddings else np.zeros((0, 0, 2)),
        "umap_point_feature": second.point_feature,
        "umap_features": np.asarray(second.chosen, dtype=np.int64),
        **{f"progress__{k}": np.asarray(v) for k, v in second.measures.items() if k != "steps"},
        **_link_fractions(tables, cfg.min_density),
        **_anchor_arrays(anchor_sets, second.anchor_within),
        **control.arrays(),
    }
    extra = {
        "filter_counts": flt.counts(),
        "pattern_counts": fx.pattern_counts(patterns[live]),
        "sub_pattern_counts": pt.sub_pattern_counts(subs[live]),
        "pattern_sensitivity": sensitivity,
        "interrupted": interrupted,
        "fig2_rules": {category: rule for category, (_, rule) in pt.FIG2_RULES.items()},
        "checkpoint_choice": choice.record(),
        "label_counts": {
            str(steps[p]): {k: int((tables.labels[p, live] == k).sum()) for k in fx.LABELS}
            for p in sorted({int(e["position"]) for e in choice.fig2})
        },
        "umap_features": {str(f): str(tables.labels[-1, f]) for f in second.chosen},
        "baseline_control": {"skipped": control.skipped} if control.skipped else control_summary(control.arrays()),
    }
    return _write(run, stage, arrays, examples, extra)


def _write(
    run: RunConfig, stage: StageRun, arrays: dict[str, Any], examples: list[dict[str, Any]], extra: dict[str, Any]
) -> dict[str, Any]:
    """Write the stage folder atomically: arrays, examples, and the manifest with ``extra``."""
    with stage.atomic() as tmp:
        np.savez(tmp / ARRAYS_FILE, **arrays)
        (tmp / EXAMPLES_FILE).write_text(json.dumps(examples, indent=1, ensure_ascii=False))
        files = {name: store.file_sha256(tmp / name) for name in (ARRAYS_FILE, EXAMPLES_FILE)}
        return stage.finish(into=tmp, config=run.to_dict()["formation"], files=files, **extra)


def analyse_formation(
    run: RunConfig, run_dir: Path, *, device: str = "cpu", force: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Run the formation analyses (Sec. 4-5; Fig. 2, 4, 5, 8) over the chain of ``run``; return the stage manifest.

    One checkpoint's analysis set is read (or, streamed, computed on ``device``) at a time and the SAEs encode on
    ``device``: nothing of size tokens x d_model x checkpoints is held. Skipped when ``run_dir/formation`` is
    current with this config (see :func:`saetrack.pipeline.skeleton.run_stage`).
    """
    return run_stage(
        Path(run_dir) / paths.FORMATION_DIR,
        "formation",
        formation_config_hash(run),
        lambda stage: _build_formation(run, run_dir, stage, device, progress),
        force=force,
    )


def load_formation(run_dir: Path, run: RunConfig | None = None) -> FormationResult:
    """The arrays and examples of a finished formation stage (checked against ``run`` when given).

    Stage folders written before the sub-patterns, shares, phases, control (c), the anchor control and the links'
    dead fractions existed load with those fields empty.
    """
    out = Path(run_dir) / paths.FORMATION_DIR
    manifest = finished_manifest(out, formation_config_hash(run) if run else None, "formation stage", "03")
    data = np.load(out / ARRAYS_FILE, allow_pickle=False)
    progress = {k.removeprefix("progress__"): data[k] for k in data.files if k.startswith("progress__")}
    umap_features = data["umap_features"].tolist()
    names = ("shares", "sub_patterns", "phase_curve", "link_dead_fraction", "link_ultra_low_fraction")
    optional = {name: data[name] for name in names if name in data.files}
    return FormationResult(
        steps=data["steps"],
        labels=data["labels"],
        dominant=data["dominant"],
        top_values=data["top_values"],
        top_indices=data["top_indices"],
        live=data["live"],
        patterns=data["patterns"],
        live_features=data["live_features"],
        final_types=data["final_types"],
        progress=progress,
        umap_steps=data["umap_steps"],
        umap_embeddings=data["umap_embeddings"],
        umap_point_feature=data["umap_point_feature"],
        umap_types={int(f): manifest["umap_features"][str(f)] for f in umap_features},
        examples=json.loads((out / EXAMPLES_FILE).read_text()),
        manifest=manifest,
        control={k: data[k] for k in data.files if k.startswith(CONTROL_PREFIX)},
        anchors={k: data[k] for k in data.files if k.startswith(ANCHOR_PREFIX)},
        **optional,
    )


def top_contexts(
    result: FormationResult, feature: int, position: int, tokenizer: Any, analysis_tokens: np.ndarray, n: int = 25
) -> list[tuple[float, str, str]]:
    """The top datapoints of ``feature`` at checkpoint ``position`` of the chain: (activation, text, HTML).

    The activating token is marked «tok» in the text and with ``<mark>`` in the HTML; datapoints where the feature
    is inactive are left out.
    """
    values = result.top_values[position, feature]
    indices = result.top_indices[position, feature]
    return [
        (float(v), *fx.render_context(tokenizer, analysis_tokens, int(i)))
        for v, i in zip(values[:n], indices[:n], strict=True)
        if v > 0
    ]


def output_hashes(run: RunConfig) -> dict[str, str]:
    """Output folder -> config hash of the formation stage."""
    return {paths.FORMATION_DIR: formation_config_hash(run)}
