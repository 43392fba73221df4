"""The seed study of notebook 05: the phases (Sec. 4.1) over what varies between runs, and the warm-up control.

One size (``scale.seed_preset``, the cheapest that shows phases) runs once per model seed (the run seed: the suite's
initialisation and batches) x chain seed (``chain.seed``: the windows every token set reads, every SAE's
initialisation and shuffle, the analyses' samples), and once more with the suite's learning-rate warm-up lengthened
to ``scale.warmup_steps``. Each variant is a headless run of notebooks 01-04's computations
(:mod:`saetrack.pipeline.headless`) in ``<run dir>/seeds/<name>/``, without the noise floor, UMAP or seed control (the
phase curves do not read them); the variant with the size's own seeds is the scale study's run of that size itself.

From every variant's drift stage: the two phase curves, the segment count BIC prefers on each axis, the
three-segment boundaries; across the seed runs, how often each count is preferred, the boundaries' spread, and the
fewest segments whose fit of the mean curve stays within the runs' own spread
(:func:`saetrack.analysis.phases.segments_within_noise`); and whether the first boundary moves with the warm-up.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from saetrack import store
from saetrack.analysis import phases as ph
from saetrack.config.presets import get_preset
from saetrack.config.run import RunConfig
from saetrack.pipeline.parallel import Job
from saetrack.stages.drift import DriftResult, drift_config_hash, load_drift
from saetrack.stages.drift.phase_fits import PERSPECTIVES

__all__ = [
    "LIGHT_OVERRIDES",
    "SEEDS_DIR",
    "SeedVariant",
    "load_variants",
    "seed_numbers",
    "seed_variants",
    "variant_hashes",
    "variant_jobs",
]


#: The seed study's variants live in ``<run dir>/seeds/<name>/``.
SEEDS_DIR = "seeds"
#: What a variant leaves out: parts no phase curve reads.
LIGHT_OVERRIDES: dict[str, Any] = {
    "drift.noise_floor_links": 0,
    "formation.umap_token_features": 0,
    "formation.umap_concept_features": 0,
    "chain.seed_control": 0,
    "crosscoder.enabled": False,
}


@dataclass(frozen=True)
class SeedVariant:
    """One run of the seed study: its seeds, the suite's warm-up, its config and folder.

    ``shared`` is True for the variant that is the scale study's own run of the size (no job of its own); ``model``
    names the variant whose model suite this one shares (itself when it trains one).
    """

    name: str
    model_seed: int
    chain_seed: int
    warmup_steps: int
    run: RunConfig
    folder: Path
    shared: bool
    model: str

    @property
    def is_warmup_control(self) -> bool:
        return self.name.startswith("warmup")


def _variant_name(model_seed: int, chain_seed: int, warmup: int | None = None) -> str:
    return (f"warmup{warmup}-" if warmup is not None else "") + f"m{model_seed}-c{chain_seed}"


def seed_variants(run: RunConfig, run_dir: Path, size_folders: dict[str, Path]) -> list[SeedVariant]:
    """The seed study's variants of ``run`` (empty when ``scale.seed_preset`` is ""): every model x chain seed, then
    the warm-up control (first model and chain seed). ``size_folders`` are the scale study's run directories by preset:
    the variant with the size's own seeds is that run."""
    cfg = run.scale
    if not cfg.seed_preset:
        return []
    base = run if cfg.seed_preset == run.preset else get_preset(cfg.seed_preset)
    base_folder = size_folders.get(cfg.seed_preset)
    out: list[SeedVariant] = []
    for m in cfg.model_seeds:
        for c in cfg.chain_seeds:
            name = _variant_name(m, c)
            owner = _variant_name(m, cfg.chain_seeds[0])
            if base_folder is not None and m == base.seed and c == base.chain_seed:
                out.append(SeedVariant(name, m, c, _warmup(base), base, base_folder, True, name))
                continue
            variant = base.with_overrides({**LIGHT_OVERRIDES, "seed": m, "chain.seed": c})
            out.append(SeedVariant(name, m, c, _warmup(variant), variant, Path(run_dir) / SEEDS_DIR / name, False,
                                   owner))  # fmt: skip
    if cfg.warmup_steps is not None:
        m, c = cfg.model_seeds[0], cfg.chain_seeds[0]
        name = _variant_name(m, c, cfg.warmup_steps)
        variant = base.with_overrides({**LIGHT_OVERRIDES, "seed": m, "chain.seed": c,
                                       "suite.warmup_steps": cfg.warmup_steps})  # fmt: skip
        out.append(SeedVariant(name, m, c, cfg.warmup_steps, variant, Path(run_dir) / SEEDS_DIR / name, False, name))
    return out


def _warmup(run: RunConfig) -> int:
    return run.suite.warmup_steps if run.suite is not None else 0


def variant_jobs(
    variants: list[SeedVariant], size_jobs: set[str], device: str, pending: Collection[str] | None = None
) -> list[Job]:
    """A headless job per variant that is not the scale study's own run (its config written into its folder): a
    variant that shares another's model suite waits for it and adopts its corpus and model; the variants of the
    size's own model wait for the size's job when it is in the pool (``size_jobs``). Only the variants named in
    ``pending`` (default: all) get a job; the others (finished ones, the shared one) still lend their folders."""
    by_name = {v.name: v for v in variants}
    todo = [v for v in variants if not v.shared and (pending is None or v.name in pending)]
    jobs = []
    for v in todo:
        v.folder.mkdir(parents=True, exist_ok=True)
        store.write_json(v.folder / "config.json", v.run.to_dict())
        owner = by_name.get(v.model)
        after: list[str] = []
        lenders = [o.folder for o in variants if o.shared] + ([owner.folder] if owner and owner is not v else [])
        if owner is not None and owner is not v:
            after.append(owner.run.preset if owner.shared else owner.name)
        after = [a for a in after if a in size_jobs or a in {t.name for t in todo}]
        command = [sys.executable, "-m", "saetrack.pipeline.headless", "--config", str(v.folder / "config.json"),
                   "--run-dir", str(v.folder), "--device", device, "--adopt", *map(str, lenders)]  # fmt: skip
        jobs.append(Job(v.name, tuple(command), v.folder / "headless.log", tuple(after)))
    return jobs


def variant_hashes(variants: list[SeedVariant]) -> dict[str, str]:
    """Variant name -> the drift-stage hash it must carry (the scale stage's own hash covers them)."""
    return {v.name: drift_config_hash(v.run) for v in variants}


def load_variants(variants: list[SeedVariant]) -> dict[str, DriftResult]:
    """Every variant's finished drift stage (checked against its config), by name."""
    return {v.name: load_drift(v.folder, v.run) for v in variants}


def _run_record(v: SeedVariant, result: DriftResult) -> dict[str, Any]:
    phases = result.manifest["phases"]
    record: dict[str, Any] = {"name": v.name, "model_seed": v.model_seed, "chain_seed": v.chain_seed,
                              "warmup_steps": v.warmup_steps, "phases": {}}  # fmt: skip
    for perspective in PERSPECTIVES:
        record["phases"][perspective] = {
            axis: {
                "preferred": r["preferred_segments"],
                "at_cap": r["preferred_at_cap"],
                "three_index": [r["emergent_index"], r["convergent_index"]],
                "three_step": [r["emergent_step"], r["convergent_step"]],
            }
            for axis, r in phases[perspective].items()
        }
    return record


def _stability(records: list[dict[str, Any]], perspective: str, axis: str) -> dict[str, Any]:
    entries = [r["phases"][perspective][axis] for r in records]
    counts = Counter(e["preferred"] for e in entries)
    first = [e["three_index"][0] for e in entries if e["three_index"][0] is not None]
    second = [e["three_index"][1] for e in entries if e["three_index"][1] is not None]
    return {
        "runs": len(entries),
        "preferred_counts": {str(k): int(n) for k, n in sorted(counts.items(), key=lambda kv: str(kv[0]))},
        "share_three": float(np.mean([e["preferred"] == 3 for e in entries])) if entries else None,
        "share_at_cap": float(np.mean([e["at_cap"] for e in entries])) if entries else None,
        "emergent_index_range": [min(first), max(first)] if first else None,
        "convergent_index_range": [min(second), max(second)] if second else None,
        "emergent_steps": [e["three_step"][0] for e in entries],
        "convergent_steps": [e["three_step"][1] for e in entries],
    }


def _curves(results: dict[str, DriftResult], names: list[str]) -> dict[str, np.ndarray]:
    return {"drift": np.stack([results[n].median_cosine for n in names]),
            "progress": np.stack([results[n].progress_curve for n in names])}  # fmt: skip


def seed_numbers(run: RunConfig, variants: list[SeedVariant], results: dict[str, DriftResult]) -> dict[str, Any]:
    """The seed study's numbers for ``results.json`` (section ``seeds``): every run's phase fits, their stability over
    the seed runs per perspective and axis, the segment count the mean curve needs within the runs' spread, the mean
    and spread of both curves, and the warm-up control's shift of the first three-segment boundary against the seed
    runs' range of it."""
    seeds = [v for v in variants if not v.is_warmup_control]
    steps = results[seeds[0].name].steps
    records = {v.name: _run_record(v, results[v.name]) for v in variants}
    seed_records = [records[v.name] for v in seeds]
    curves = _curves(results, [v.name for v in seeds])
    cfg = run.drift
    out: dict[str, Any] = {
        "preset": run.scale.seed_preset,
        "model_seeds": list(run.scale.model_seeds),
        "chain_seeds": list(run.scale.chain_seeds),
        "steps": [int(s) for s in steps],
        "runs": list(records.values()),
        "stability": {p: {a: _stability(seed_records, p, a) for a in ph.PHASE_AXES} for p in PERSPECTIVES},
        "curves": {
            p: {"mean": np.nanmean(c, axis=0).tolist(), "sd": np.nanstd(c, axis=0, ddof=1).tolist()}
            for p, c in curves.items()
        }
        if len(seeds) > 1
        else {},
        "within_noise": {},
        "warmup_control": None,
    }
    if len(seeds) > 1:
        for p, c in curves.items():
            out["within_noise"][p] = {}
            for axis in ph.PHASE_AXES:
                found = ph.segments_within_noise(ph.phase_axis(steps, axis), c, min_phase=cfg.min_phase_checkpoints,
                                                 max_segments=cfg.max_segments)  # fmt: skip
                out["within_noise"][p][axis] = {"segments": found["segments"], "runs": found["runs"],
                                                **{k: {str(s): v for s, v in found[k].items()}
                                                   for k in ("chi2", "threshold")}}  # fmt: skip
    control = next((v for v in variants if v.is_warmup_control), None)
    if control is not None:
        out["warmup_control"] = _warmup_numbers(control, seeds, records)
    return out


def _warmup_numbers(control: SeedVariant, seeds: list[SeedVariant], records: dict[str, Any]) -> dict[str, Any]:
    """Per perspective on the checkpoint index: the first three-segment boundary of the default run with the same
    seeds and of the control, the shift in checkpoints, and the range of that boundary over the seed runs."""
    default = next(v for v in seeds if v.model_seed == control.model_seed and v.chain_seed == control.chain_seed)
    out: dict[str, Any] = {"default_warmup": default.warmup_steps, "control_warmup": control.warmup_steps}
    for p in PERSPECTIVES:
        a = records[default.name]["phases"][p]["index"]
        b = records[control.name]["phases"][p]["index"]
        first = [records[v.name]["phases"][p]["index"]["three_index"][0] for v in seeds]
        first = [f for f in first if f is not None]
        shift = (
            None
            if a["three_index"][0] is None or b["three_index"][0] is None
            else (b["three_index"][0] - a["three_index"][0])
        )
        out[p] = {
            "default_emergent_index": a["three_index"][0],
            "default_emergent_step": a["three_step"][0],
            "control_emergent_index": b["three_index"][0],
            "control_emergent_step": b["three_step"][0],
            "shift_checkpoints": shift,
            "seed_range_checkpoints": (max(first) - min(first)) if first else None,
            "default_preferred": a["preferred"],
            "control_preferred": b["preferred"],
        }
    return out
