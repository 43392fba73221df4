"""The activation cache (notebook 01): residual-stream activations of the SAE checkpoints, written to disk."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from saetrack import paths, store
from saetrack.config.run import RunConfig
from saetrack.data.cache_plan import NUMPY_DTYPES, TORCH_DTYPES, cache_config_hash, check_disk_space, plan_tokens
from saetrack.data.checkpoints import open_source
from saetrack.data.corpus import load_corpus
from saetrack.data.integrity import warn_on_duplicates
from saetrack.data.tokens import contexts

__all__ = [
    "cache_activations",
    "residual_at_layer",
]


def residual_at_layer(model: Any, tokens: torch.Tensor, layer: int) -> torch.Tensor:
    """``blocks.{layer}.hook_resid_pre`` of a transformer_lens model, stopping the forward pass there.

    ``model(tokens, stop_at_layer=layer)`` runs the embedding and blocks ``0 .. layer-1`` only and
    returns the residual stream entering block ``layer`` — no compute past the hook.
    """
    with torch.inference_mode():
        return model(tokens, stop_at_layer=layer)


def _fill_activations(
    model: Any,
    tokens: np.ndarray,
    out: np.ndarray,
    layer: int,
    batch_contexts: int,
    device: str,
    store_dtype: torch.dtype,
    desc: str,
    progress: bool,
) -> None:
    """Write the layer-``layer`` residuals of ``tokens`` [n, ctx] into ``out`` [n * ctx, d], batch by batch."""
    n_contexts, ctx = tokens.shape
    for begin in tqdm(range(0, n_contexts, batch_contexts), desc=desc, disable=not progress, leave=False):
        batch = torch.as_tensor(np.asarray(tokens[begin : begin + batch_contexts], dtype=np.int64), device=device)
        resid = residual_at_layer(model, batch, layer).to(store_dtype).float().cpu().numpy()
        out[begin * ctx : (begin + len(batch)) * ctx] = resid.reshape(-1, resid.shape[-1])


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
    """Cache the activations of every SAE checkpoint of ``run`` into ``run_dir/cache`` and return the manifest.

    Skips the stage when its manifest matches the config; otherwise resumes at the first checkpoint whose
    folder is missing. ``force`` rebuilds everything. ``after_step`` is called after each finished
    checkpoint (used by tests to simulate an interruption).
    """

    cache_dir = Path(run_dir) / paths.CACHE_DIR
    expected = cache_config_hash(run)
    if not force and store.manifest_is_current(cache_dir, expected):
        return store.read_manifest(cache_dir) or {}
    if force and cache_dir.exists():
        shutil.rmtree(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if run.model.d_model is not None:
        check_disk_space(run, cache_dir, run.model.d_model)

    started = time.perf_counter()
    plan = plan_tokens(run)
    _, train_stream, heldout_stream = load_corpus(run_dir)
    ctx = plan.context_length
    analysis_tokens = contexts(heldout_stream, plan.analysis[0], plan.analysis[1], ctx)
    heldout_tokens = contexts(heldout_stream, plan.heldout[0], plan.heldout[1], ctx)
    token_files = {
        "analysis_tokens.npy": store.save_npy(cache_dir / "analysis_tokens.npy", analysis_tokens.astype(np.int32)),
        "heldout_tokens.npy": store.save_npy(cache_dir / "heldout_tokens.npy", heldout_tokens.astype(np.int32)),
    }
    train_contexts_needed = sum(n for _, n in plan.train.values())
    wrapped = {
        "train": train_contexts_needed * ctx > len(train_stream),
        "heldout": (plan.heldout[0] + plan.heldout[1]) * ctx > len(heldout_stream),
    }

    source = source if source is not None else open_source(run.model, Path(run_dir))
    layer = run.cache.layer
    store_dtype = TORCH_DTYPES[run.cache.dtype]
    np_dtype = NUMPY_DTYPES[run.cache.dtype]
    steps_summary: dict[str, Any] = {}
    weights_hashes: dict[int, str] = {}
    for step in tqdm(run.sae_steps, desc="caching checkpoints", disable=not progress):
        step_dir = cache_dir / paths.step_dir_name(step)
        existing = store.read_manifest(step_dir)
        if existing is not None and existing.get("config_hash") == expected:
            weights_hashes[step] = existing["weights_sha256"]
            steps_summary[str(step)] = _step_summary(existing)
            continue
        t0 = time.perf_counter()
        model = source.load_hooked(step, device=device)
        weights_hashes[step] = source.weights_hash(step)
        d_model = int(model.cfg.d_model)
        start, n_train = plan.train[step]
        train_tokens = contexts(train_stream, start, n_train, ctx)
        with store.atomic_dir(step_dir) as tmp:
            files = {}
            for name, toks in (("analysis", analysis_tokens), ("heldout", heldout_tokens), ("train", train_tokens)):
                out = np.lib.format.open_memmap(
                    tmp / f"{name}.npy", mode="w+", dtype=np_dtype, shape=(toks.size, d_model)
                )
                _fill_activations(
                    model,
                    toks,
                    out,
                    layer,
                    run.cache.batch_contexts,
                    device,
                    store_dtype,
                    f"step {step} {name}",
                    progress,
                )
                out.flush()
                del out
                files[f"{name}.npy"] = store.file_sha256(tmp / f"{name}.npy")
            files["train_tokens.npy"] = store.save_npy(tmp / "train_tokens.npy", train_tokens.astype(np.int32))
            manifest = store.write_manifest(
                tmp,
                stage="cache-step",
                config={"step": step, "layer": layer, "hook_name": run.cache.hook_name, "train_span": [start, n_train]},
                config_hash=expected,
                files=files,
                timings={"total": time.perf_counter() - t0},
                step=step,
                weights_sha256=weights_hashes[step],
                d_model=d_model,
                dtype=run.cache.dtype,
                shapes={
                    "analysis": [analysis_tokens.size, d_model],
                    "heldout": [heldout_tokens.size, d_model],
                    "train": [train_tokens.size, d_model],
                },
            )
        steps_summary[str(step)] = _step_summary(manifest)
        del model
        if after_step is not None:
            after_step(step)

    duplicates = warn_on_duplicates(weights_hashes)
    first = store.read_manifest(cache_dir / paths.step_dir_name(run.sae_steps[0])) or {}
    return store.write_manifest(
        cache_dir,
        stage="cache",
        config={"cache": run.to_dict()["cache"], "plan": plan.to_dict(), "model": source.describe()},
        config_hash=expected,
        files=token_files,
        timings={"total": time.perf_counter() - started},
        preset=run.preset,
        hook_name=run.cache.hook_name,
        layer=layer,
        d_model=first.get("d_model"),
        dtype=run.cache.dtype,
        steps=list(run.sae_steps),
        per_step=steps_summary,
        duplicate_weights=duplicates,
        wrapped=wrapped,
    )


def _step_summary(manifest: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "weights_sha256": manifest["weights_sha256"],
        "shapes": manifest["shapes"],
        "seconds": manifest["timings_s"].get("total"),
    }
