"""Control (c): feature formation without the chain, on the independent from-scratch SAEs (Sec. 5, Def. 5.4).

The chain gives feature i the same identity at every checkpoint; independent SAEs do not, so formation cannot be
followed feature by feature. What can be compared is each SAE's own features at its own checkpoint t: for every
from-scratch SAE at a baseline checkpoint (``chain.baseline``) and for the chain link at the same checkpoint,

* its live features (App. A.1, filtered on that checkpoint alone, the same rule for both SAEs),
* each feature's token-/concept-level label (Def. 4.1-4.2) on the fixed analysis set at t, and
* each feature's coherence at t: the progress measure (Def. 5.4, Eq. 14 / 17, the same code path as Fig. 5) of its
  OWN top-k datapoints at t (not the final link's D_i).

Per checkpoint: the number of token- and concept-level features and the median measure of each type, and each
SAE's dead and ultra-low fractions on that analysis set (App. A.1), since a comparison of medians over live features
says little when one SAE has half its dictionary dead. The question
it answers: does token -> concept formation (token-level features coherent from the start, concept-level coherence
rising with training) hold without the chain? Computed in the formation stage's first pass (the analysis set of a
baseline checkpoint is read once) and saved with the stage's arrays under the ``control__`` prefix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from saetrack import paths, store
from saetrack.analysis import feature_scan as fs
from saetrack.analysis import features as fx
from saetrack.analysis import formation as fm
from saetrack.config.run import RunConfig
from saetrack.sae.weights import SAEWeights
from saetrack.stages.chain import baseline_config_hash

__all__ = [
    "CONTROL_FIELDS",
    "CONTROL_KEYS",
    "CONTROL_PREFIX",
    "CONTROL_RULE",
    "BaselineControl",
    "control_lines",
    "control_summary",
    "own_set_formation",
]


#: Progress-measure keys the control keeps (activation space, Eq. 14; feature space, Eq. 17).
CONTROL_KEYS: tuple[str, ...] = ("activation_cosine", "feature_cosine")
#: Prefix of the control's arrays in the formation stage's ``arrays.npz``.
CONTROL_PREFIX = "control__"
CONTROL_RULE = (
    "per SAE at checkpoint t (from-scratch baseline, and the chain link at t): live features filtered on t alone "
    "(App. A.1), labelled token/concept on the analysis set at t (Def. 4.1-4.2); coherence = progress measure "
    "(Def. 5.4) of each feature's own top-k datapoints at t; medians per label. dead_fraction = share of the SAE's "
    "features never active on the analysis set at t; ultra_low_fraction = share active but below the App. A.1 "
    "density / max-activation thresholds (both on t alone)"
)
#: Per-feature arrays the control keeps for each SAE and baseline checkpoint.
CONTROL_FIELDS: tuple[str, ...] = ("labels", "live", "dead", "ultra_low", *CONTROL_KEYS)


def own_set_formation(
    run: RunConfig,
    weights: SAEWeights,
    x: np.ndarray,
    tokens_flat: np.ndarray,
    stats: fx.FeatureStats | None = None,
    top: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Labels (Def. 4.1-4.2), live mask (App. A.1, this checkpoint alone) and the progress measure (Def. 5.4,
    Eq. 14 / 17) of each feature's own top-k datapoints, for one SAE on one checkpoint's analysis set ``x``.

    ``stats`` and ``top`` (values, indices) are computed when not given, from one encoding of ``x`` on the SAE's
    device (:func:`saetrack.analysis.feature_scan.scan_features`). Returns ``{"labels", "live", "dead",
    "ultra_low", *keys}``, each ``[F]``, the keys of :data:`CONTROL_KEYS`.
    """
    cfg = run.formation
    if stats is None or top is None:  # one encoding of x on the SAE's device gives both (feature_scan)
        scanned_stats, scanned_values, scanned_indices = fs.scan_features(weights, x, k=cfg.top_k)
        stats = scanned_stats if stats is None else stats
        top = (scanned_values, scanned_indices) if top is None else top
    values, indices = top
    labels, _, _ = fx.classify_token_concept(values, indices, tokens_flat, cfg.token_share, cfg.min_active)
    flt = fx.filter_features([stats], min_density=cfg.min_density)
    measures = fm.progress_measures(
        [x],
        [weights],
        np.asarray(indices, dtype=np.int64),
        n_random_activation=cfg.n_random_activation,
        n_random_feature=cfg.n_random_feature,
        seed=run.chain_seed,
        progress=False,
    )
    masks = {"live": flt.live, "dead": flt.dead, "ultra_low": flt.ultra_low}
    return {"labels": np.asarray(labels), **masks, **{key: measures[key][0] for key in CONTROL_KEYS}}


class BaselineControl:
    """Collects :func:`own_set_formation` of the baseline SAE and the chain link at every baseline checkpoint."""

    def __init__(self, run: RunConfig, run_dir: Path, device: str = "cpu") -> None:
        """Find the run's finished baselines; without them the control is skipped and :attr:`skipped` says why."""
        self.run, self.device = run, device
        self.folder = Path(run_dir) / paths.BASELINE_DIR
        self.steps: list[int] = list(run.baseline_steps)
        self.skipped: str | None = None
        if not self.steps:
            self.skipped = "this preset trains no from-scratch baselines (chain.baseline is empty)"
        elif not store.manifest_is_current(self.folder, baseline_config_hash(run)):
            self.skipped = f"no finished baselines for this config at {self.folder} (notebook 02 trains them)"
        if self.skipped:
            self.steps = []
        self.sides: dict[str, dict[int, dict[str, np.ndarray]]] = {"baseline": {}, "chain": {}}

    def visit(
        self,
        step: int,
        x: np.ndarray,
        chain: SAEWeights,
        stats: fx.FeatureStats,
        top: tuple[np.ndarray, np.ndarray],
        tokens_flat: np.ndarray,
    ) -> None:
        """Measure both SAEs at ``step`` on its analysis set ``x`` (nothing unless ``step`` is a baseline step)."""
        if step not in self.steps:
            return
        self.sides["chain"][step] = own_set_formation(self.run, chain, x, tokens_flat, stats, top)
        base = SAEWeights.load(self.folder / paths.step_dir_name(step), device=self.device)
        self.sides["baseline"][step] = own_set_formation(self.run, base, x, tokens_flat)

    def arrays(self) -> dict[str, np.ndarray]:
        """The control's arrays for ``arrays.npz``: ``control__steps [B]`` and ``control__<side>__<name> [B, F]``."""
        steps = [s for s in self.steps if s in self.sides["baseline"]]
        out: dict[str, np.ndarray] = {f"{CONTROL_PREFIX}steps": np.asarray(steps, dtype=np.int64)}
        for side, per_step in self.sides.items():
            for name in CONTROL_FIELDS:
                rows = [per_step[s][name] for s in steps]
                value = np.stack(rows) if rows else np.zeros((0, 0))
                out[f"{CONTROL_PREFIX}{side}__{name}"] = value.astype(str) if name == "labels" else value
        return out


def _side_numbers(arr: dict[str, np.ndarray]) -> dict[str, Any]:
    """Counts of live token- and concept-level features and the median measure of each type, and the SAE's dead and
    ultra-low fractions (``None`` for stage folders written before they were kept), at one checkpoint."""
    labels, live = arr["labels"], arr["live"].astype(bool)
    out: dict[str, Any] = {"n_live": int(live.sum())}
    for name in ("dead", "ultra_low"):
        out[f"{name}_fraction"] = float(np.mean(arr[name])) if name in arr and arr[name].size else None
    for kind in ("token", "concept"):
        rows = live & (labels == kind)
        out[f"n_{kind}"] = int(rows.sum())
        for key in CONTROL_KEYS:
            out[f"median_{kind}_{key}"] = float(np.nanmedian(arr[key][rows])) if rows.any() else None
    return out


def _rise(per_step: list[dict[str, Any]], side: str, name: str) -> float | None:
    """Last minus first baseline checkpoint of ``per_step[*][side][name]`` (``None`` when either is missing)."""
    if len(per_step) < 2:
        return None
    first, last = per_step[0][side][name], per_step[-1][side][name]
    return None if first is None or last is None else float(last - first)


def control_summary(control: dict[str, np.ndarray]) -> dict[str, Any]:
    """Control (c)'s numbers from the ``control__`` arrays: per baseline checkpoint, for the from-scratch SAE and
    the chain link, the counts of token-/concept-level features and their median own-set progress measure (Def. 5.4),
    each SAE's dead and ultra-low fractions (also as ``dead_fraction_chain`` / ``dead_fraction_scratch`` etc. on the
    row), and the concept-level rise from the first to the last baseline checkpoint for each SAE kind."""
    steps = np.asarray(control.get(f"{CONTROL_PREFIX}steps", np.zeros(0)), dtype=np.int64)
    per_step = []
    for b, step in enumerate(steps):
        row: dict[str, Any] = {"step": int(step)}
        for side in ("baseline", "chain"):
            names = [n for n in CONTROL_FIELDS if f"{CONTROL_PREFIX}{side}__{n}" in control]
            row[side] = _side_numbers({n: control[f"{CONTROL_PREFIX}{side}__{n}"][b] for n in names})
        for name in ("dead", "ultra_low"):
            row[f"{name}_fraction_chain"] = row["chain"][f"{name}_fraction"]
            row[f"{name}_fraction_scratch"] = row["baseline"][f"{name}_fraction"]
        per_step.append(row)
    rises = {
        f"{side}_concept_rise_{key}": _rise(per_step, side, f"median_concept_{key}")
        for side in ("baseline", "chain")
        for key in CONTROL_KEYS
    }
    return {"rule": CONTROL_RULE, "steps": steps.tolist(), "per_step": per_step, **rises}


def _fmt(value: float | None, sign: bool = False) -> str:
    """``value`` with 3 decimals (a sign when ``sign``), "n/a" for ``None``."""
    return "n/a" if value is None else f"{value:+.3f}" if sign else f"{value:.3f}"


def control_lines(summary: dict[str, Any], key: str = "activation_cosine") -> list[str]:
    """Control (c)'s numbers (:func:`control_summary`) as printable lines: per baseline checkpoint the counts of
    token-/concept-level features (Def. 4.1-4.2) and their median own-set progress measure (Def. 5.4), for the
    from-scratch SAE and the chain link with each one's dead fraction, then the concept-level rise of each; one line
    saying why when skipped."""
    if not summary.get("per_step"):
        return [f"control (c) not run: {summary.get('skipped', 'no baseline checkpoints')}"]
    lines = []
    for row in summary["per_step"]:
        b, c = row["baseline"], row["chain"]
        b_m = f"{_fmt(b[f'median_token_{key}'])} / {_fmt(b[f'median_concept_{key}'])}"
        c_m = f"{_fmt(c[f'median_token_{key}'])} / {_fmt(c[f'median_concept_{key}'])}"
        lines.append(
            f"step {row['step']}: from-scratch {b['n_token']} token / {b['n_concept']} concept-level features, "
            f"median M {b_m}, dead {_fmt(b.get('dead_fraction'))}; chain link {c['n_token']} / {c['n_concept']}, "
            f"{c_m}, dead {_fmt(c.get('dead_fraction'))}"
        )
    rise_baseline, rise_chain = summary[f"baseline_concept_rise_{key}"], summary[f"chain_concept_rise_{key}"]
    lines.append(
        f"concept-level median from the first to the last baseline checkpoint: from-scratch "
        f"{_fmt(rise_baseline, True)}, chain {_fmt(rise_chain, True)}"
    )
    return lines
