"""The crosscoder's controls (notebook 06; issue 20, item 3): crosscoders trained where the answer is known, a second
normalisation, and the nulls of the emergence reading.

Each control crosscoder is trained exactly like the main one (the same config, seed and number of optimiser steps:
a control must be trained like the thing it controls) on the main crosscoder's aligned activations, without a new
forward pass:

* ``repeated``, null (i): the last snapshot's block repeated at every snapshot. Nothing changes from one "snapshot"
  to the next, so every feature that emerges after the first snapshot, or decays, is made by the method;
* ``dropped_early``, null (iii): only the snapshots after step ``crosscoder.dropped_early_max_step`` (nano: steps 0,
  1, 2, 4 and 8 dropped). If emergence piles onto the new first snapshot, "present at the first snapshot" says where
  the series starts, not when features form. Its features are matched to the main crosscoder's by decoder cosine at
  the last snapshot (Hungarian, :func:`saetrack.analysis.matching.match_features`; pairs with cosine >=
  :data:`~saetrack.analysis.method_comparison.MATCH_THRESHOLD`) to see where the main crosscoder put the same ones;
* ``centred``: every snapshot centred and scaled, ``(x - mean_θ) / rms_θ``
  (:func:`saetrack.crosscoder.activations.snapshot_moments`), instead of divided by its uncentred mean norm.

Null (ii), snapshot labels permuted, needs no training
(:func:`saetrack.analysis.emergence_controls.permuted_snapshot_null`).

Each control is a part ``crosscoder/controls/<name>/`` (``arrays.npz``: decoder norms, firing counts on the
held-out tokens, explained variance, the last snapshot's decoder; and a manifest with its settling curve and
timings), reused while its own training hash holds, so changing an analysis field does not retrain it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from saetrack import store
from saetrack.analysis import emergence_controls as ec
from saetrack.analysis.matching import match_features
from saetrack.analysis.method_comparison import MATCH_THRESHOLD
from saetrack.config.base import config_hash
from saetrack.config.run import RunConfig
from saetrack.crosscoder.activations import snapshot_moments, snapshot_scales
from saetrack.crosscoder.quality import crosscoder_metrics
from saetrack.crosscoder.training import TrainedCrosscoder, train_crosscoder
from saetrack.distributed.ranks import SINGLE, Ranks
from saetrack.distributed.stages import written_manifest

__all__ = [
    "ARRAYS_FILE",
    "CONTROLS_DIR",
    "ControlInput",
    "control_hash",
    "control_inputs",
    "emergence_numbers",
    "load_controls",
    "nulls_summary",
    "train_controls",
]


CONTROLS_DIR = "controls"
ARRAYS_FILE = "arrays.npz"


@dataclass(frozen=True)
class ControlInput:
    """What a control crosscoder reads of the aligned cache: a suffix of its snapshots (``first`` on), the last one
    at every snapshot (trained from that one block, ``[B, 1, d]`` batches: the same loss as the block repeated ``T``
    times, with ``T`` times less encoder work), or all of them centred."""

    name: str
    first: int = 0
    repeat_last: bool = False
    centred: bool = False

    def view(self, data: np.ndarray) -> np.ndarray:
        """The control's training input from the main ``[T, n, d]`` activations, a view: the snapshots from
        ``first`` on, or the last block alone ``[1, n, d]`` (read at every snapshot, see ``n_snapshots``)."""
        return data[-1:] if self.repeat_last else data[self.first :]

    def heldout(self, heldout: np.ndarray) -> np.ndarray:
        """The control's held-out tokens from the main ``[n, T, d]`` ones (a view; the last column at every
        snapshot for the repeated control)."""
        return np.broadcast_to(heldout[:, -1:], heldout.shape) if self.repeat_last else heldout[:, self.first :]

    def n_snapshots(self, t: int) -> int:
        """The control crosscoder's number of snapshots when the main one has ``t``."""
        return t if self.repeat_last else t - self.first

    def normalisation(self, view: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Per-snapshot scales ``[T']`` and offsets ``[T', d]`` (None: uncentred) of the control's training input."""
        if self.centred:
            means, rms = snapshot_moments(view)
            return rms, means
        return snapshot_scales(view), None


def control_inputs(run: RunConfig) -> dict[str, ControlInput]:
    """The controls of ``run`` (none when ``crosscoder.controls`` is off; no ``dropped_early`` when fewer than two
    snapshots would be left)."""
    if not run.crosscoder.controls:
        return {}
    steps = run.crosscoder_steps
    first = next((i for i, s in enumerate(steps) if s > run.crosscoder.dropped_early_max_step), len(steps))
    out = {"repeated": ControlInput("repeated", repeat_last=True)}
    if len(steps) - first >= 2:
        out["dropped_early"] = ControlInput("dropped_early", first=first)
    out["centred"] = ControlInput("centred", centred=True)
    return out


def control_hash(training_hash: str, spec: ControlInput) -> str:
    """Hash of a control crosscoder: the main one's training hash and what the control reads."""
    return config_hash({"training": training_hash, "control": vars(spec), "v": 1})


def _train_one(
    run: RunConfig,
    spec: ControlInput,
    data: np.ndarray,
    heldout: Callable[[], np.ndarray],
    folder: Path,
    key: str,
    d_sae: int,
    device: str,
    progress: bool,
    ranks: Ranks,
) -> dict[str, Any]:
    """Train one control like the main crosscoder (data-parallel over ``ranks``), measure it on the held-out tokens
    and write its part (the writer); its manifest on every rank."""
    view = spec.view(data)
    scales, offsets = spec.normalisation(view)
    t = spec.n_snapshots(len(data))
    state_dir = folder.parent / f".{spec.name}-training"
    trained = train_crosscoder(
        view, scales, run.crosscoder, d_sae, seed=run.chain_seed, state_dir=state_dir, key=key, offsets=offsets,
        n_snapshots=t, device=device, progress=progress, ranks=ranks,
    )  # fmt: skip
    if ranks.writer:
        _write_control(run, spec, trained, heldout(), folder, key, scales, offsets, device)
        shutil.rmtree(state_dir, ignore_errors=True)
    return written_manifest(folder, ranks)


def _write_control(
    run: RunConfig,
    spec: ControlInput,
    trained: TrainedCrosscoder,
    heldout: np.ndarray,
    folder: Path,
    key: str,
    scales: np.ndarray,
    offsets: np.ndarray | None,
    device: str,
) -> dict[str, Any]:
    """Measure a trained control on the held-out tokens and write its part ``folder``; its manifest."""
    t = trained.model.shape.n_snapshots
    t0 = time.perf_counter()
    metrics = crosscoder_metrics(
        trained.model, spec.heldout(heldout), np.resize(scales, t), offsets=offsets,  # resize: one scale, T times
        present_fraction=run.crosscoder.emergence_fraction, batch_size=run.crosscoder.batch_size, device=device,
    )  # fmt: skip
    w_dec = trained.model.W_dec.detach().cpu().numpy()
    settled = ec.settling(trained.norm_steps, trained.norm_records, trained.steps)
    with store.atomic_dir(folder) as tmp:
        np.savez(
            tmp / ARRAYS_FILE,
            norms=trained.model.decoder_norms().detach().cpu().numpy(),
            fire_counts=metrics.pop("fire_counts"),
            explained_variance=np.asarray(metrics["explained_variance"]),
            w_dec_last=w_dec[:, -1],
        )
        manifest = store.write_manifest(
            tmp,
            stage="crosscoder-control",
            config={"control": vars(spec), "training": run.to_dict()["crosscoder"]},
            config_hash=key,
            files={ARRAYS_FILE: store.file_sha256(tmp / ARRAYS_FILE)},
            timings={"training": trained.seconds, "evaluation": time.perf_counter() - t0},
            settling=settled.to_dict(),
            metrics=metrics,
        )
    return manifest


def train_controls(
    run: RunConfig,
    stage_folder: Path,
    activations: Callable[[], np.ndarray],
    heldout: Callable[[], np.ndarray],
    *,
    training_hash: str,
    d_sae: int,
    device: str = "cpu",
    progress: bool = True,
    force: bool = False,
    ranks: Ranks = SINGLE,
) -> dict[str, dict[str, Any]]:
    """Train (or reuse) every control of ``run`` into ``stage_folder/controls/``; their manifests by name.

    ``activations()`` returns the main crosscoder's ``[T, N, d]`` input and ``heldout()`` the ``[n, T, d]`` held-out
    tokens at its snapshots (each called only when a control must train; ``heldout`` by the writer alone). With
    several ``ranks`` every rank calls this alike: each control trains data-parallel and the writer writes it.
    """
    manifests: dict[str, dict[str, Any]] = {}
    for name, spec in control_inputs(run).items():
        folder = stage_folder / CONTROLS_DIR / name
        key = control_hash(training_hash, spec)
        existing = store.read_manifest(folder)
        if existing is not None and existing.get("config_hash") == key and not force:
            manifests[name] = existing
            continue
        manifests[name] = _train_one(run, spec, activations(), heldout, folder, key, d_sae, device, progress, ranks)
    return manifests


def load_controls(stage_folder: Path, run: RunConfig) -> dict[str, dict[str, np.ndarray]]:
    """The arrays of every finished control of ``run`` (``norms``, ``fire_counts``, ``explained_variance``,
    ``w_dec_last``) with their ``steps``, by name."""
    out = {}
    for name, spec in control_inputs(run).items():
        path = stage_folder / CONTROLS_DIR / name / ARRAYS_FILE
        if path.exists():
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
            arrays["steps"] = np.asarray(run.crosscoder_steps)[spec.first :]
            out[name] = arrays
    return out


def emergence_numbers(norms: np.ndarray, alive: np.ndarray, steps: np.ndarray, fraction: float) -> dict[str, Any]:
    """Emergence at every fraction of :func:`~saetrack.analysis.emergence_controls.emergence_fractions` (the four
    fixed ones and the run's ``fraction``): the share of alive features at the first snapshot and the histogram over
    snapshots (keys ``str(fraction)``)."""
    by = ec.emergence_by_fraction(norms, alive, ec.emergence_fractions(fraction))
    return {
        "emerged_at_first": {str(f): ec.share_at_first(e) for f, e in by.items()},
        "emergence_histogram": {str(f): ec.emergence_histogram(e, steps) for f, e in by.items()},
    }


def _dropped_early(run: RunConfig, main: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Null (iii): the dropped-early crosscoder's first snapshot, and where the main one put the same features.

    Features are matched at the last snapshot (Hungarian, cosine >= ``MATCH_THRESHOLD``). For the matched ones:
    the share the dropped crosscoder puts at its first snapshot, and the share the full crosscoder had emerged by that
    step (at or before it) - equal when dropping the early snapshots only truncates the full reading, higher for the
    first when emergence piles onto whichever snapshot comes first; and, of the matched features the dropped
    crosscoder puts at its first snapshot, the share the full crosscoder had there by then.
    """
    steps, alive = arrays["steps"], arrays["fire_counts"] > 0
    fraction = run.crosscoder.emergence_fraction
    emergence = ec.emergence_by_fraction(arrays["norms"], alive, (fraction,))[fraction]
    match = match_features(arrays["w_dec_last"], main["w_dec_last"], subset_a=alive, subset_b=main["alive"])
    keep = match.cosines >= MATCH_THRESHOLD
    mine, theirs = match.index_a[keep], match.index_b[keep]
    full_step = main["steps"][np.maximum(main["emergence"][theirs], 0)]
    by_first = full_step <= steps[0]
    piled = emergence[mine] == 0

    def share(mask: np.ndarray) -> float | None:
        return float(np.mean(mask)) if mask.size else None

    return {
        "dropped_steps": [int(s) for s in main["steps"][: len(main["steps"]) - len(steps)]],
        "first_step": int(steps[0]),
        "matched": int(keep.sum()),
        "matched_emerged_at_first": int(piled.sum()),
        "matched_emerged_at_first_share": share(piled),
        "same_features_in_full_emerged_by_first_step": share(by_first),
        "at_first_features_in_full_emerged_by_first_step": share(by_first[piled]),
        "same_features_in_full_emergence_histogram": ec.emergence_histogram(main["emergence"][theirs], main["steps"]),
    }


def nulls_summary(
    run: RunConfig, main: dict[str, Any], controls: dict[str, dict[str, np.ndarray]], manifests: dict[str, Any]
) -> dict[str, Any]:
    """The ``nulls`` section of ``results.json``: the permuted-label null (ii) on the main crosscoder's norms, and each
    trained control's emergence (null (i) ``repeated``, null (iii) ``dropped_early``, ``centred``) with its settling.

    ``main`` holds the main crosscoder's ``steps``, ``norms``, ``alive``, ``emergence`` (at the config's fraction) and
    ``w_dec_last``.
    """
    fraction = run.crosscoder.emergence_fraction
    permuted = ec.permuted_snapshot_null(
        main["norms"], main["alive"], ec.emergence_fractions(fraction), permutations=run.crosscoder.null_permutations,
        seed=run.chain_seed,
    )  # fmt: skip
    fractions = [k for k in permuted if k not in ("permutations", "seed")]
    out: dict[str, Any] = {
        "permuted": {
            "permutations": permuted["permutations"],
            **{
                name: {f: permuted[f][name] for f in fractions}
                for name in (
                    "emerged_at_first_mean",
                    "emerged_at_first_q025",
                    "emerged_at_first_q05",
                    "emerged_at_first_q95",
                    "emerged_at_first_q975",
                )
            },
            "mean_histogram": {f: permuted[f]["mean_histogram"] for f in fractions},
        }
    }
    for name, arrays in controls.items():
        alive = arrays["fire_counts"] > 0
        entry = {
            **emergence_numbers(arrays["norms"], alive, arrays["steps"], fraction),
            "alive_features": int(alive.sum()),
        }
        entry["explained_variance_min"] = float(arrays["explained_variance"].min())
        settled = manifests[name]["settling"]
        entry.update(settled=settled["settled"], final_relative_change=settled["final_relative_change"],
                     settling_curve=settled["curve"])  # fmt: skip
        if name == "repeated":
            entry["snapshot_step"] = int(main["steps"][-1])
        if name == "dropped_early":
            entry.update(_dropped_early(run, main, arrays))
        if name == "centred":
            dip = ec.median_norm_dip(arrays["norms"], alive, arrays["steps"], run.crosscoder.dip_steps)
            entry.update(median_norm_dip=dip["dip"], median_norm_dip_step=dip["step"], median_norm=dip["median"])
        out[name] = entry
    return out
