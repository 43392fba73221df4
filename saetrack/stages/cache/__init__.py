"""The activation cache (notebook 01): residual-stream activations of the SAE checkpoints, written to disk."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
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
    TORCH_DTYPES,
    TokenPlan,
    cache_config_hash,
    check_disk_space,
    plan_tokens,
)
from saetrack.data.checkpoints import open_source
from saetrack.data.corpus import corpus_config_hash, load_corpus
from saetrack.data.forward import fill_activations, layered_chunks, residual_at_layer
from saetrack.data.integrity import warn_on_duplicates
from saetrack.data.suite import suite_config_hash
from saetrack.pipeline.skeleton import StageRun, run_stage

__all__ = [
    "build_caches",
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


def _fill_layers(
    runs: Sequence[RunConfig],
    model: Any,
    toks: np.ndarray,
    outs: Sequence[np.ndarray],
    device: str,
    desc: str,
    progress: bool,
) -> None:
    """Write the activations of ``toks`` at each of ``runs``' hooks into ``outs`` (one per run): one run's through
    :func:`~saetrack.data.forward.fill_activations`; several (the layers of ``cache.layers``, same hook and batching)
    from one forward per batch (:func:`~saetrack.data.forward.layered_chunks`), each the same values."""
    if len(runs) == 1:
        fill_activations(runs[0], model, toks, outs[0], device, desc, progress)
        return
    cache = runs[0].cache
    chunks = layered_chunks(
        model,
        toks,
        [r.cache.layer for r in runs],
        batch_contexts=cache.batch_contexts,
        device=device,
        store_dtype=TORCH_DTYPES[cache.dtype],
        forward_dtype=cache.forward_dtype,
        tf32=cache.tf32,
        hook=cache.hook,
    )
    row = 0
    for layer_chunks in tqdm(chunks, total=-(-len(toks) // cache.batch_contexts), desc=desc, disable=not progress,
                             leave=False):  # fmt: skip
        for out, chunk in zip(outs, layer_chunks, strict=True):
            out[row : row + len(chunk)] = chunk.cpu().numpy()
        row += len(layer_chunks[0])


def _cache_checkpoint(
    targets: Sequence[tuple[RunConfig, StageRun]],
    inputs: _CacheInputs,
    checkpoints: Any,
    step: int,
    device: str,
    progress: bool,
) -> list[dict[str, Any]]:
    """Run checkpoint ``step``'s model up to the deepest hooked layer of ``targets`` (one ``(run, stage)`` per layer
    whose cache is being built) on the three token sets; write each target's part atomically; their manifests."""
    t0 = time.perf_counter()
    model = checkpoints.load_hooked(step, device=device)
    weights_hash = checkpoints.weights_hash(step)
    d_model = int(model.cfg.d_model)
    start, n_train = inputs.plan.train[step]
    train_tokens = inputs.plan.contexts(inputs.train_stream, (start, n_train))
    token_sets = (("analysis", inputs.analysis_tokens), ("heldout", inputs.heldout_tokens), ("train", train_tokens))
    runs = [run for run, _ in targets]
    dtype = NUMPY_DTYPES[runs[0].cache.dtype]
    with contextlib.ExitStack() as parts:
        tmps = [parts.enter_context(stage.part(paths.step_dir_name(step))) for _, stage in targets]
        files: list[dict[str, str]] = [{} for _ in targets]
        for name, toks in token_sets:
            outs = [
                np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=dtype, shape=(toks.size, d_model))
                for tmp in tmps
            ]
            _fill_layers(runs, model, toks, outs, device, f"step {step} {name}", progress)
            for tmp, out, written in zip(tmps, outs, files, strict=True):
                out.flush()
                written[f"{name}.npy"] = store.file_sha256(tmp / f"{name}.npy")
            del outs
        manifests = []
        for (run, stage), tmp, written in zip(targets, tmps, files, strict=True):
            written["train_tokens.npy"] = store.save_npy(tmp / "train_tokens.npy", train_tokens.astype(np.int32))
            manifests.append(
                stage.write_part_manifest(
                    tmp,
                    stage="cache-step",
                    config={
                        "step": step,
                        "layer": run.cache.layer,
                        "hook_name": run.cache.hook_name,
                        "train_span": [start, n_train],
                    },
                    files=written,
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
            )
        return manifests


def _cache_inputs(run: RunConfig, run_dir: Path) -> tuple[_CacheInputs, dict[str, bool]]:
    """The token plan and token sets every checkpoint of ``run``'s cache reads, and whether each stream wrapped."""
    plan = plan_tokens(run)
    _, train_stream, heldout_stream = load_corpus(run_dir)
    ctx = plan.context_length
    inputs = _CacheInputs(
        plan,
        train_stream,
        plan.contexts(heldout_stream, plan.analysis),
        plan.contexts(heldout_stream, plan.heldout),
    )
    wrapped = {
        "train": sum(n for _, n in plan.train.values()) * ctx > len(train_stream),
        "heldout": (plan.heldout[0] + plan.heldout[1]) * ctx > len(heldout_stream),
    }
    return inputs, wrapped


def _token_files(cache_dir: Path, inputs: _CacheInputs) -> dict[str, str]:
    """Write the analysis and held-out token ids into ``cache_dir``; their hashes."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    return {
        f"{name}_tokens.npy": store.save_npy(cache_dir / f"{name}_tokens.npy", tokens.astype(np.int32))
        for name, tokens in (("analysis", inputs.analysis_tokens), ("heldout", inputs.heldout_tokens))
    }


def _finish_cache(
    run: RunConfig,
    stage: StageRun,
    checkpoints: Any,
    inputs: _CacheInputs,
    token_files: dict[str, str],
    wrapped: dict[str, bool],
    step_manifests: dict[int, Mapping[str, Any]],
) -> dict[str, Any]:
    """Write the cache manifest of ``run`` (its checkpoints' parts all finished: ``step_manifests``) and return it."""
    weights_hashes = {step: m["weights_sha256"] for step, m in step_manifests.items()}
    first = step_manifests[run.sae_steps[0]]
    return stage.finish(
        config={"cache": run.to_dict()["cache"], "plan": inputs.plan.to_dict(), "model": checkpoints.describe()},
        files=token_files,
        preset=run.preset,
        hook_name=run.cache.hook_name,
        layer=run.cache.layer,
        d_model=first.get("d_model"),
        dtype=run.cache.dtype,
        steps=list(run.sae_steps),
        per_step={str(step): _step_summary(m) for step, m in step_manifests.items()},
        duplicate_weights=warn_on_duplicates(weights_hashes),
        wrapped=wrapped,
    )


def build_caches(
    targets: Sequence[tuple[RunConfig, Path, StageRun]],
    checkpoints: Any,
    device: str,
    progress: bool,
    after_step: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Build the on-disk caches of ``targets`` (``(run, run_dir, stage)``: runs that differ only in
    ``cache.layer``, e.g. the layers of ``cache.layers``) together: per checkpoint one model load and, per batch, one
    forward to the deepest layer still to cache (:func:`_cache_checkpoint`). Checkpoint parts already finished for a
    layer are kept; returns each target's cache manifest. One target is notebook 01's single-layer cache."""
    run, run_dir = targets[0][0], targets[0][1]
    for _, _, stage in targets:
        stage.folder.mkdir(parents=True, exist_ok=True)
    if run.model.d_model is not None:
        check_disk_space(run, targets[0][2].folder, run.model.d_model, layers=len(targets))
    inputs, wrapped = _cache_inputs(run, run_dir)
    token_files = [_token_files(stage.folder, inputs) for _, _, stage in targets]
    checkpoints = checkpoints if checkpoints is not None else open_source(run.model, Path(run_dir))
    done: list[dict[int, Mapping[str, Any]]] = [{} for _ in targets]
    for step in tqdm(run.sae_steps, desc="caching checkpoints", disable=not progress):
        pending = []
        for index, (_, _, stage) in enumerate(targets):
            manifest = stage.finished_part(paths.step_dir_name(step))
            if manifest is None:
                pending.append(index)
            else:
                done[index][step] = manifest
        if pending:
            made = _cache_checkpoint(
                [(targets[i][0], targets[i][2]) for i in pending], inputs, checkpoints, step, device, progress
            )
            for index, manifest in zip(pending, made, strict=True):
                done[index][step] = manifest
            if after_step is not None:
                after_step(step)
    return [
        _finish_cache(target_run, stage, checkpoints, inputs, files, wrapped, steps)
        for (target_run, _, stage), files, steps in zip(targets, token_files, done, strict=True)
    ]


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
            else build_caches([(run, Path(run_dir), stage)], source, device, progress, after_step)[0]
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
