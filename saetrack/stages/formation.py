"""The formation stage (notebook 03): everything Sec. 4-5 of the paper measures, computed once from the chain.

For every link SAE[t] on checkpoint t's activations of the fixed analysis set: feature statistics, the top-k
datapoints of every feature, its token-/concept-level label (Def. 4.1-4.2) and dominant token. Then the
filter of App. A.1, the evolution pattern of every live feature (Sec. 4.2), the progress measures of every live
feature at every checkpoint (Def. 5.4, Eq. 14-19, 27-29; D_i = the top-k datapoints of feature i under the
final SAE at the final checkpoint, Eq. 12), UMAP embeddings of a few features' activation sets at six
checkpoints spread like the paper's 0, 5, 10, 15, 60, 153 (Fig. 4), and example contexts per pattern (Fig. 2).

Written to ``run_dir/formation/`` (``arrays.npz``, ``examples.json``, ``manifest.json``); skipped when the
manifest matches the config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from saetrack import paths, store
from saetrack.analysis import features as fx
from saetrack.analysis import formation as fm
from saetrack.config.base import config_hash
from saetrack.config.run import RunConfig
from saetrack.data.activations import ActivationSource, open_activations
from saetrack.data.corpus import load_corpus
from saetrack.sae.weights import SAEWeights
from saetrack.stages.base import StageRun, finished_manifest, run_stage
from saetrack.stages.chain import chain_config_hash, load_chain

__all__ = [
    "ARRAYS_FILE",
    "EXAMPLES_FILE",
    "MIDDLE_FRACTION",
    "FormationResult",
    "analyse_formation",
    "formation_config_hash",
    "load_formation",
    "median_progress",
    "output_hashes",
    "summary_numbers",
    "top_contexts",
]


ARRAYS_FILE = "arrays.npz"
EXAMPLES_FILE = "examples.json"
#: The paper's Fig. 2 middle column (checkpoints 15-21 of 153) as a fraction of the schedule.
MIDDLE_FRACTION = 18 / 153


def formation_config_hash(run: RunConfig) -> str:
    """Hash of the formation stage's inputs: the chain's hash and the formation section."""
    return config_hash({"chain": chain_config_hash(run), "formation": run.to_dict()["formation"], "v": 2})


@dataclass(frozen=True)
class FormationResult:
    """The arrays of a finished formation stage (T checkpoints, F features)."""

    steps: np.ndarray  # [T]
    labels: np.ndarray  # [T, F] "token" / "concept" / "inactive"
    dominant: np.ndarray  # [T, F] dominant token id
    top_values: np.ndarray  # [T, F, k] activations of each feature's top-k analysis datapoints under SAE[t]
    top_indices: np.ndarray  # [T, F, k] their rows in the analysis set (context * context_length + position)
    live: np.ndarray  # [F] bool (App. A.1)
    patterns: np.ndarray  # [F] maintaining / shifting / grouping / other / excluded
    live_features: np.ndarray  # [L] indices of live features, the columns of ``progress``
    final_types: np.ndarray  # [L] label of each live feature at the final checkpoint
    progress: dict[str, np.ndarray]  # key -> [T, L]; "baseline_<key>" -> [T]
    umap_steps: np.ndarray  # [6]
    umap_embeddings: np.ndarray  # [6, n, 2]
    umap_point_feature: np.ndarray  # [n]
    umap_types: dict[int, str]
    examples: list[dict[str, Any]]
    manifest: dict[str, Any]


def _select_umap_features(
    final_types: np.ndarray, final_progress: np.ndarray, live: np.ndarray, run: RunConfig
) -> list[int]:
    """The most formed token- and concept-level live features (highest final activation-space progress measure)."""
    chosen: list[int] = []
    for kind, n in (("token", run.formation.umap_token_features), ("concept", run.formation.umap_concept_features)):
        score = np.where(final_types == kind, final_progress, -np.inf)
        order = np.argsort(-score, kind="stable")
        chosen += [int(live[j]) for j in order[:n] if np.isfinite(score[j])]
    return chosen


@dataclass(frozen=True)
class _CheckpointFeatures:
    """Per-checkpoint feature tables of the chain on the analysis set (T checkpoints, F features, k datapoints)."""

    stats: list[fx.FeatureStats]
    labels: np.ndarray  # [T, F]
    dominant: np.ndarray  # [T, F]
    top_values: np.ndarray  # [T, F, k] float32
    top_indices: np.ndarray  # [T, F, k] int64


def _feature_tables(
    run: RunConfig, source: ActivationSource, folders: dict[int, Path], steps: list[int], device: str, progress: bool
) -> _CheckpointFeatures:
    """Statistics, top-k datapoints and token/concept labels (Def. 4.1-4.2) of every feature of every link.

    One checkpoint's analysis set is read (streamed: computed) at a time and dropped before the next; the SAE
    encodes on ``device``.
    """
    cfg = run.formation
    tokens_flat = np.asarray(source.analysis_tokens).reshape(-1)
    stats, labels, dominant, all_values, all_indices = [], [], [], [], []
    for step in tqdm(steps, desc="features per checkpoint", disable=not progress):
        weights = SAEWeights.load(folders[step], device=device)
        x = source.analysis(step)
        stats.append(fx.feature_statistics(weights, x))
        values, indices = fx.top_k_datapoints(weights, x, k=cfg.top_k)
        label, dom, _ = fx.classify_token_concept(values, indices, tokens_flat, cfg.token_share, cfg.min_active)
        labels.append(label)
        dominant.append(dom)
        all_values.append(values.astype(np.float32))
        all_indices.append(indices.astype(np.int64))
        del x
    return _CheckpointFeatures(stats, np.array(labels), np.array(dominant), np.stack(all_values), np.stack(all_indices))


@dataclass(frozen=True)
class _ProgressPass:
    """What the second pass over the checkpoints gives: progress measures and the activations UMAP embeds."""

    measures: dict[str, np.ndarray]  # key -> [T, L]; "baseline_<key>" -> [T]
    chosen: list[int]  # the features Fig. 4 draws
    point_feature: np.ndarray  # [n] the feature of each UMAP point
    umap_points: dict[int, np.ndarray]  # checkpoint position -> [n, d] activations of the chosen features' D_i


def _progress_pass(
    run: RunConfig,
    source: ActivationSource,
    folders: dict[int, Path],
    steps: list[int],
    live: np.ndarray,
    final_types: np.ndarray,
    final_indices: np.ndarray,
    device: str,
    progress: bool,
) -> _ProgressPass:
    """Progress measures (Def. 5.4, Eq. 14-19) of the live features at every checkpoint, the final one first.

    The final checkpoint's measures choose Fig. 4's features; the activations of their D_i (Eq. 12-13) are kept at
    the checkpoints UMAP draws. One checkpoint's analysis set is held at a time.
    """
    cfg = run.formation
    positions = set(fm.checkpoint_positions(steps))
    per: dict[int, dict[str, np.ndarray]] = {}
    chosen: list[int] = []
    rows = np.zeros(0, dtype=np.int64)
    umap_points: dict[int, np.ndarray] = {}
    order = [len(steps) - 1, *range(len(steps) - 1)]
    for position in tqdm(order, desc="progress measures per checkpoint", disable=not progress):
        x = source.analysis(steps[position])
        per[position] = fm.progress_measures(
            [x],
            [SAEWeights.load(folders[steps[position]], device=device)],
            final_indices,
            n_random_activation=cfg.n_random_activation,
            n_random_feature=cfg.n_random_feature,
            seed=run.seed,
            progress=False,
        )
        if position == len(steps) - 1:
            chosen = _select_umap_features(final_types, per[position]["activation_cosine"][-1], live, run)
            live_pos = {int(f): j for j, f in enumerate(live)}
            rows = np.concatenate([final_indices[live_pos[f]] for f in chosen]) if chosen else rows
        if position in positions and len(rows) > 2:
            umap_points[position] = np.asarray(x[rows])
        del x
    measures = {key: np.concatenate([per[p][key] for p in range(len(steps))]) for key in per[0]}
    point_feature = np.repeat(chosen, cfg.top_k) if chosen else np.zeros(0, dtype=np.int64)
    return _ProgressPass(measures, chosen, point_feature, umap_points)


def _pattern_examples(
    run: RunConfig,
    run_dir: Path,
    source: ActivationSource,
    tables: _CheckpointFeatures,
    patterns: np.ndarray,
    live: np.ndarray,
    final_progress: np.ndarray,
    example_positions: list[int],
    steps: list[int],
) -> list[dict[str, Any]]:
    """Fig. 2: example features of each evolution pattern with their top contexts at a few checkpoints."""
    cfg = run.formation
    tokenizer = load_corpus(run_dir)[0]
    analysis_tokens = np.asarray(source.analysis_tokens)
    examples = []
    picks = fx.pick_examples(patterns[live], final_progress, cfg.examples_per_pattern, run.seed)
    for pattern in ("maintaining", "shifting", "grouping"):
        for j in picks.get(pattern, []):
            feature = int(live[j])
            columns = []
            for position in example_positions:
                values, indices = tables.top_values[position], tables.top_indices[position]
                active = indices[feature][values[feature] > 0][: cfg.contexts_per_cell]
                columns.append(
                    [int(steps[position]), [fx.render_context(tokenizer, analysis_tokens, int(i))[0] for i in active]]
                )
            examples.append({"pattern": pattern, "feature": feature, "columns": columns})
    return examples


def _build_formation(run: RunConfig, run_dir: Path, stage: StageRun, device: str, progress: bool) -> dict[str, Any]:
    """Compute every formation analysis over the chain and write the stage folder atomically."""
    cfg = run.formation
    source = open_activations(run, run_dir, device=device)
    folders = load_chain(run_dir, run)
    steps = sorted(folders)
    n_steps = len(steps)
    middle = min(n_steps - 1, max(1, round(MIDDLE_FRACTION * (n_steps - 1))))
    example_positions = sorted({0, middle, n_steps - 1})

    tables = _feature_tables(run, source, folders, steps, device, progress)
    labels_arr, dominant_arr = tables.labels, tables.dominant
    flt = fx.filter_features(tables.stats, min_density=cfg.min_density)
    live = np.nonzero(flt.live)[0]
    patterns = np.full(labels_arr.shape[1], "excluded", dtype=object)
    patterns[live] = fx.classify_patterns(labels_arr[:, live], dominant_arr[:, live])

    final_indices = tables.top_indices[n_steps - 1][live]  # D_i (Eq. 12)
    final_types = labels_arr[-1, live]
    second = _progress_pass(run, source, folders, steps, live, final_types, final_indices, device, progress)
    measures, chosen, point_feature = second.measures, second.chosen, second.point_feature
    positions = fm.checkpoint_positions(steps)
    embeddings = [
        fm.umap_embedding(second.umap_points[p], seed=cfg.umap_seed)
        for p in tqdm(positions, desc="UMAP per checkpoint", disable=not progress or not second.umap_points)
    ] if second.umap_points else []  # fmt: skip
    examples = _pattern_examples(
        run, run_dir, source, tables, patterns, live, measures["activation_cosine"][-1], example_positions, steps
    )

    with stage.atomic() as tmp:
        np.savez(
            tmp / ARRAYS_FILE,
            steps=np.asarray(steps),
            labels=labels_arr.astype(str),
            dominant=dominant_arr,
            top_values=tables.top_values,
            top_indices=tables.top_indices,
            live=flt.live,
            patterns=patterns.astype(str),
            live_features=live,
            final_types=final_types.astype(str),
            umap_steps=np.asarray([steps[p] for p in positions]),
            umap_embeddings=np.asarray(embeddings) if embeddings else np.zeros((0, 0, 2)),
            umap_point_feature=point_feature,
            umap_features=np.asarray(chosen, dtype=np.int64),
            **{f"progress__{k}": np.asarray(v) for k, v in measures.items() if k != "steps"},
        )
        (tmp / EXAMPLES_FILE).write_text(json.dumps(examples, indent=1, ensure_ascii=False))
        files = {name: store.file_sha256(tmp / name) for name in (ARRAYS_FILE, EXAMPLES_FILE)}
        manifest = stage.finish(
            into=tmp,
            config=run.to_dict()["formation"],
            files=files,
            filter_counts=flt.counts(),
            pattern_counts=fx.pattern_counts(patterns[live]),
            label_counts={
                str(steps[p]): {k: int((labels_arr[p, live] == k).sum()) for k in fx.LABELS} for p in example_positions
            },
            umap_features={str(f): str(labels_arr[-1, f]) for f in chosen},
        )
    return manifest


def analyse_formation(
    run: RunConfig, run_dir: Path, *, device: str = "cpu", force: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Run the formation analyses (Sec. 4-5; Fig. 2, 4, 5, 8) over the chain of ``run``; return the stage manifest.

    One checkpoint's analysis set is read (or, streamed, computed on ``device``) at a time and the SAEs encode on
    ``device``: nothing of size tokens x d_model x checkpoints is held. Skipped when ``run_dir/formation`` is
    current with this config (see :func:`saetrack.stages.base.run_stage`).
    """
    return run_stage(
        Path(run_dir) / paths.FORMATION_DIR,
        "formation",
        formation_config_hash(run),
        lambda stage: _build_formation(run, run_dir, stage, device, progress),
        force=force,
    )


def load_formation(run_dir: Path, run: RunConfig | None = None) -> FormationResult:
    """The arrays and examples of a finished formation stage (checked against ``run`` when given)."""
    out = Path(run_dir) / paths.FORMATION_DIR
    manifest = finished_manifest(out, formation_config_hash(run) if run else None, "formation stage", "03")
    data = np.load(out / ARRAYS_FILE, allow_pickle=False)
    progress = {k.removeprefix("progress__"): data[k] for k in data.files if k.startswith("progress__")}
    umap_features = data["umap_features"].tolist()
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


def median_progress(result: FormationResult, kind: str | None, key: str = "activation_cosine") -> np.ndarray:
    """Median progress measure M_i(t) (Def. 5.4) per checkpoint over live features whose final label is ``kind``
    (``None``: all live features); NaN at every checkpoint when there is no such feature."""
    values = np.asarray(result.progress[key], dtype=np.float64)
    rows = np.ones(values.shape[1], dtype=bool) if kind is None else result.final_types == kind
    return np.nanmedian(values[:, rows], axis=1) if rows.any() else np.full(values.shape[0], np.nan)


def summary_numbers(result: FormationResult) -> dict[str, Any]:
    """The numbers behind the paper's formation claims (issue 4): medians by feature type, first vs final checkpoint.

    For every progress-measure key: the median M_i(t) of token-level and of concept-level features (typed by
    their label at the final checkpoint) at the first and final checkpoints, and the concept-level rise.
    """
    out: dict[str, Any] = {
        "filter_counts": result.manifest["filter_counts"],
        "pattern_counts": result.manifest["pattern_counts"],
        "label_counts": result.manifest["label_counts"],
    }
    token, concept = result.final_types == "token", result.final_types == "concept"
    for key in fm.PROGRESS_KEYS:
        m = result.progress[key]

        def median(rows: np.ndarray, t: int, m: np.ndarray = m) -> float | None:
            return float(np.nanmedian(m[t, rows])) if rows.any() else None

        first_token, first_concept = median(token, 0), median(concept, 0)
        final_concept = median(concept, -1)
        out[key] = {
            "median_token_first": first_token,
            "median_concept_first": first_concept,
            "median_token_final": median(token, -1),
            "median_concept_final": final_concept,
            "concept_rise": None if first_concept is None or final_concept is None else final_concept - first_concept,
        }
    return out


def output_hashes(run: RunConfig) -> dict[str, str]:
    """Output folder -> config hash of the formation stage."""
    return {paths.FORMATION_DIR: formation_config_hash(run)}
