"""The activation cache (notebook 01): residual-stream activations of the SAE checkpoints, written to disk."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from saetrack import paths, store
from saetrack.config.run import RunConfig
from saetrack.data.activations import ActivationSource, open_activations
from saetrack.data.cache_plan import (
    NUMPY_DTYPES,
    TokenPlan,
    cache_config_hash,
    check_disk_space,
    plan_tokens,
)
from saetrack.data.checkpoints import open_source
from saetrack.data.corpus import corpus_config_hash, load_corpus
from saetrack.data.forward import fill_activations, residual_at_layer
from saetrack.data.integrity import warn_on_duplicates
from saetrack.data.suite import suite_config_hash
from saetrack.pipeline.skeleton import StageRun, run_stage

__all__ = [
    "cache_activations",
    "checkpoint_width",
    "load_cache",
    "output_hashes",
    "residual_at_layer",
]


@dataclass(frozen=True)
class _CacheInputs:
    """What every checkpoint of the cache shares: the token plan, the token streams and the fixed context sets."""

    plan: TokenPlan
    train_stream: np.ndarray
    analysis_tokens: np.ndarray
    heldout_tokens: np.ndarray


def _cache_checkpoint(
    run: RunConfig, stage: StageRun, inputs: _CacheInputs, checkpoints: Any, step: int, device: str, progress: bool
) -> dict[str, Any]:
    """Run checkpoint ``step``'s model up to the hooked layer on the three token sets; write its part atomically."""
    t0 = time.perf_counter()
    model = checkpoints.load_hooked(step, device=device)
    weights_hash = checkpoints.weights_hash(step)
    d_model = int(model.cfg.d_model)
    start, n_train = inputs.plan.train[step]
    train_tokens = inputs.plan.contexts(inputs.train_stream, (start, n_train))
    token_sets = (("analysis", inputs.analysis_tokens), ("heldout", inputs.heldout_tokens), ("train", train_tokens))
    with stage.part(paths.step_dir_name(step)) as tmp:
        files = {}
        for name, toks in token_sets:
            out = np.lib.format.open_memmap(
                tmp / f"{name}.npy", mode="w+", dtype=NUMPY_DTYPES[run.cache.dtype], shape=(toks.size, d_model)
            )
            fill_activations(run, model, toks, out, device, f"step {step} {name}", progress)
            out.flush()
            del out
            files[f"{name}.npy"] = store.file_sha256(tmp / f"{name}.npy")
        files["train_tokens.npy"] = store.save_npy(tmp / "train_tokens.npy", train_tokens.astype(np.int32))
        return stage.write_part_manifest(
            tmp,
            stage="cache-step",
            config={
                "step": step,
                "layer": run.cache.layer,
                "hook_name": run.cache.hook_name,
                "train_span": [start, n_train],
            },
            files=files,
            timings={"total": time.perf_counter() - t0},
            step=step,
            weights_sha256=weights_hash,
            d_model=d_model,
            dtype=run.cache.dtype,
            shapes={
                "analysis": [inputs.analysis_tokens.size, d_model],
                "heldout": [inputs.heldout_tokens.size, d_model],
                "train": [train_tokens.size, d_model],
            },
        )


def _build_cache(
    run: RunConfig,
    run_dir: Path,
    stage: StageRun,
    checkpoints: Any,
    device: str,
    progress: bool,
    after_step: Callable[[int], None] | None,
) -> dict[str, Any]:
    cache_dir = stage.folder
    cache_dir.mkdir(parents=True, exist_ok=True)
    if run.model.d_model is not None:
        check_disk_space(run, cache_dir, run.model.d_model)
    plan = plan_tokens(run)
    _, train_stream, heldout_stream = load_corpus(run_dir)
    ctx = plan.context_length
    inputs = _CacheInputs(
        plan,
        train_stream,
        plan.contexts(heldout_stream, plan.analysis),
        plan.contexts(heldout_stream, plan.heldout),
    )
    token_files = {
        "analysis_tokens.npy": store.save_npy(
            cache_dir / "analysis_tokens.npy", inputs.analysis_tokens.astype(np.int32)
        ),
        "heldout_tokens.npy": store.save_npy(cache_dir / "heldout_tokens.npy", inputs.heldout_tokens.astype(np.int32)),
    }
    wrapped = {
        "train": sum(n for _, n in plan.train.values()) * ctx > len(train_stream),
        "heldout": (plan.heldout[0] + plan.heldout[1]) * ctx > len(heldout_stream),
    }
    checkpoints = checkpoints if checkpoints is not None else open_source(run.model, Path(run_dir))
    steps_summary: dict[str, Any] = {}
    weights_hashes: dict[int, str] = {}
    for step in tqdm(run.sae_steps, desc="caching checkpoints", disable=not progress):
        manifest = stage.finished_part(paths.step_dir_name(step))
        if manifest is None:
            manifest = _cache_checkpoint(run, stage, inputs, checkpoints, step, device, progress)
            if after_step is not None:
                after_step(step)
        weights_hashes[step] = manifest["weights_sha256"]
        steps_summary[str(step)] = _step_summary(manifest)

    duplicates = warn_on_duplicates(weights_hashes)
    first = store.read_manifest(cache_dir / paths.step_dir_name(run.sae_steps[0])) or {}
    return stage.finish(
        config={"cache": run.to_dict()["cache"], "plan": plan.to_dict(), "model": checkpoints.describe()},
        files=token_files,
        preset=run.preset,
        hook_name=run.cache.hook_name,
        layer=run.cache.layer,
        d_model=first.get("d_model"),
        dtype=run.cache.dtype,
        steps=list(run.sae_steps),
        per_step=steps_summary,
        duplicate_weights=duplicates,
        wrapped=wrapped,
    )


def _streamed_plan(run: RunConfig, run_dir: Path, stage: StageRun, checkpoints: Any, progress: bool) -> dict[str, Any]:
    """Streamed mode: no activations are written - only the token sets, the plan and each checkpoint's hash.

    The links, the held-out metrics and the analyses compute activations from these on the fly
    (:class:`~saetrack.data.stream.StreamedActivations`), checking every checkpoint against the hash recorded here.
    """
    cache_dir = stage.folder
    cache_dir.mkdir(parents=True, exist_ok=True)
    plan = plan_tokens(run)
    _, train_stream, heldout_stream = load_corpus(run_dir)
    ctx = plan.context_length
    analysis_tokens = plan.contexts(heldout_stream, plan.analysis)
    heldout_tokens = plan.contexts(heldout_stream, plan.heldout)
    files = {
        "analysis_tokens.npy": store.save_npy(cache_dir / "analysis_tokens.npy", analysis_tokens.astype(np.int32)),
        "heldout_tokens.npy": store.save_npy(cache_dir / "heldout_tokens.npy", heldout_tokens.astype(np.int32)),
    }
    checkpoints = checkpoints if checkpoints is not None else open_source(run.model, Path(run_dir))
    hashes = {
        step: checkpoints.weights_hash(step)
        for step in tqdm(run.sae_steps, desc="hashing checkpoints", disable=not progress)
    }
    d_model = run.model.d_model or checkpoint_width(checkpoints.checkpoint_dir(run.sae_steps[0]))
    return stage.finish(
        config={"cache": run.to_dict()["cache"], "plan": plan.to_dict(), "model": checkpoints.describe()},
        files=files,
        preset=run.preset,
        mode="streamed",
        hook_name=run.cache.hook_name,
        layer=run.cache.layer,
        d_model=d_model,
        dtype=run.cache.dtype,
        steps=list(run.sae_steps),
        per_step={str(step): {"weights_sha256": hashes[step], "train_span": list(plan.train[step])} for step in hashes},
        duplicate_weights=warn_on_duplicates(hashes),
        wrapped={
            # None: the corpus holds no training tokens (a chain installed from the Hub is only analysed)
            "train": sum(n for _, n in plan.train.values()) * ctx > len(train_stream) if len(train_stream) else None,
            "heldout": (plan.heldout[0] + plan.heldout[1]) * ctx > len(heldout_stream),
        },
    )


#: Keys of a Hugging Face ``config.json`` naming the residual-stream width, in the order they are tried
#: (``n_embd``: GPT-2; ``d_model``: OPT-like configs).
_WIDTH_KEYS: tuple[str, ...] = ("hidden_size", "n_embd", "d_model")


def checkpoint_width(folder: Path) -> int:
    """``d_model`` of the Hugging Face checkpoint in ``folder``, read from its ``config.json``: ``hidden_size``
    (GPT-NeoX, Llama, Mistral, Qwen2), ``n_embd`` (GPT-2) or ``d_model``, whichever it has."""
    path = Path(folder) / "config.json"
    config = json.loads(path.read_text())
    for key in _WIDTH_KEYS:
        if config.get(key):
            return int(config[key])
    raise KeyError(f"{path} states no residual width (none of {', '.join(_WIDTH_KEYS)}).")


def cache_activations(
    run: RunConfig,
    run_dir: Path,
    *,
    source: Any | None = None,
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
    after_step: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Cache the activations at ``blocks.{L}.hook_resid_pre`` of every SAE checkpoint into ``run_dir/cache``.

    With ``cache.mode="streamed"`` nothing of size tokens x d_model is written: the folder gets the analysis and
    held-out token sets, the token plan and every checkpoint's weights hash, and later stages run the models on
    the fly (:class:`~saetrack.data.stream.StreamedActivations`).

    Returns the cache manifest. Skipped when current with the config; otherwise resumes at the first checkpoint
    whose folder is missing. ``force`` rebuilds everything. ``source`` is the checkpoint source (default: the
    run's model); ``after_step`` is called after each newly cached checkpoint (tests use it to interrupt).
    """
    return run_stage(
        Path(run_dir) / paths.CACHE_DIR,
        "cache",
        cache_config_hash(run),
        lambda stage: (
            _streamed_plan(run, run_dir, stage, source, progress)
            if run.cache.streamed
            else _build_cache(run, run_dir, stage, source, device, progress, after_step)
        ),
        force=force,
        clear_on_force=True,
    )


def _step_summary(manifest: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "weights_sha256": manifest["weights_sha256"],
        "shapes": manifest["shapes"],
        "seconds": manifest["timings_s"].get("total"),
    }


def load_cache(run: RunConfig, run_dir: Path) -> ActivationSource:
    """The finished activation cache of ``run`` (checked against its config) as an :class:`ActivationSource`."""
    return open_activations(run, run_dir)


def output_hashes(run: RunConfig) -> dict[str, str]:
    """Output folder -> config hash of notebook 01: the corpus, the nano suite (local presets) and the cache."""
    hashes = {paths.CORPUS_DIR: corpus_config_hash(run)}
    if run.model.source == "suite":
        hashes[paths.MODEL_DIR] = suite_config_hash(run)
    hashes[paths.CACHE_DIR] = cache_config_hash(run)
    return hashes
