"""The activation cache (notebook 01): residual-stream activations at ``blocks.{L}.hook_resid_pre``.

For every checkpoint in the SAE schedule the cache holds, as memory-mappable ``.npy`` files:

* ``analysis.npy`` — the fixed analysis set of contexts, **the same datapoints at every checkpoint**
  (row ``c * context_length + q`` is position ``q`` of context ``c``; the token ids are in
  ``cache/analysis_tokens.npy``). Used by the formation and drift analyses.
* ``heldout.npy`` — held-out contexts (``cache/heldout_tokens.npy``) for each link's quality metrics.
* ``train.npy`` — the SAE training tokens of this checkpoint's link. Each link gets its own slice of
  the training stream (links never share tokens); a checkpoint that also has a from-scratch baseline
  gets enough tokens for the baseline's budget, of which the chain link uses the first rows.

The forward pass stops at layer ``L`` (``stop_at_layer``), so no block past the hook is computed.
Each checkpoint is written into a temporary folder and renamed when complete, so an interrupted run
resumes at the first missing checkpoint and never reads a half-written file. Every step folder records
the weights hash of the checkpoint it came from; a cache made for another model, layer, token plan or
set of weights raises :class:`~saetrack.store.StaleArtifactError` instead of being reused.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from saetrack import paths, store
from saetrack.config import RunConfig, config_hash

__all__ = [
    "ActivationCache",
    "CacheTooLargeError",
    "TokenPlan",
    "cache_activations",
    "cache_config_hash",
    "check_disk_space",
    "plan_tokens",
    "planned_cache_bytes",
    "residual_at_layer",
]

_TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
# numpy has no bfloat16: bfloat16 caches are stored as float32 values rounded to bfloat16.
_NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(np.float32),
}


class CacheTooLargeError(RuntimeError):
    """The planned activation cache would not fit on the disk holding the run directory."""


def planned_cache_bytes(run: RunConfig, d_model: int) -> int:
    """Bytes the activation cache of ``run`` will occupy: every planned token at every scheduled checkpoint."""
    plan = plan_tokens(run)
    contexts_per_step = plan.analysis[1] + plan.heldout[1]
    train_contexts = sum(n for _, n in plan.train.values())
    n_tokens = (contexts_per_step * len(run.sae_steps) + train_contexts) * plan.context_length
    return n_tokens * d_model * _NUMPY_DTYPES[run.cache.dtype].itemsize


def check_disk_space(run: RunConfig, folder: Path, d_model: int) -> int:
    """Raise :class:`CacheTooLargeError` unless the planned cache fits in 90% of the free space at ``folder``."""
    need = planned_cache_bytes(run, d_model)
    free = shutil.disk_usage(folder).free
    if need > 0.9 * free:
        raise CacheTooLargeError(
            f"the activation cache of preset {run.preset!r} needs {need / 1e9:,.1f} GB "
            f"({run.chain.first_tokens:,} first-SAE tokens, {run.chain.link_tokens:,} per later link, "
            f"d_model {d_model}, {run.cache.dtype}) but only {free / 1e9:,.1f} GB are free at {folder}. "
            "Lower chain.first_tokens / chain.link_tokens, store float16 (cache.dtype), or point "
            "SAETRACK_RUNS at a bigger disk. (The paper's 300M + 15M-token budgets cannot be cached; they need "
            "activations computed on the fly, which this version does not implement.)"
        )
    return need


@dataclass(frozen=True)
class TokenPlan:
    """Which contexts of the token streams each part of the cache uses (all in units of contexts).

    ``train`` maps a checkpoint step to ``(start_context, n_contexts)`` in the training stream;
    ``analysis`` and ``heldout`` are ``(start_context, n_contexts)`` in the held-out stream.
    """

    context_length: int
    analysis: tuple[int, int]
    heldout: tuple[int, int]
    train: dict[int, tuple[int, int]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "context_length": self.context_length,
            "analysis": list(self.analysis),
            "heldout": list(self.heldout),
            "train": {str(step): list(span) for step, span in self.train.items()},
        }


def plan_tokens(run: RunConfig) -> TokenPlan:
    """Allocate contexts: the analysis and held-out sets from the held-out stream, one training slice per link.

    Link ``p`` of the chain needs ``chain.tokens_for(p)`` tokens; a checkpoint that also gets a baseline
    needs ``chain.baseline_token_budget``. Slices follow each other in chain order, so no two links
    see the same training tokens (streams shorter than the plan wrap around; :func:`cache_activations`
    records when that happens).
    """
    ctx = run.cache.context_length
    n_heldout = math.ceil(run.cache.heldout_tokens / ctx)
    train: dict[int, tuple[int, int]] = {}
    start = 0
    baseline_steps = set(run.baseline_steps)
    for position, step in enumerate(run.sae_steps):
        tokens = run.chain.tokens_for(position)
        if step in baseline_steps:
            tokens = max(tokens, run.chain.baseline_token_budget)
        n_contexts = math.ceil(tokens / ctx)
        train[step] = (start, n_contexts)
        start += n_contexts
    return TokenPlan(
        context_length=ctx,
        analysis=(0, run.cache.analysis_contexts),
        heldout=(run.cache.analysis_contexts, n_heldout),
        train=train,
    )


def cache_config_hash(run: RunConfig) -> str:
    """Hash of everything the cache depends on: corpus, model suite, model source, cache section and token plan."""
    data = run.to_dict()
    payload = {
        "seed": run.seed,
        "corpus": data["corpus"],
        "suite": data["suite"],
        "model": data["model"],
        "cache": data["cache"],
        "plan": plan_tokens(run).to_dict(),
    }
    return config_hash(payload)


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
    from saetrack.checkpoints import open_source, warn_on_duplicates
    from saetrack.corpus import contexts, load_corpus

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
    store_dtype = _TORCH_DTYPES[run.cache.dtype]
    np_dtype = _NUMPY_DTYPES[run.cache.dtype]
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


class ActivationCache:
    """Read access to a finished activation cache; every array is a read-only memory map.

    Pass ``run`` to check that the cache was made for that config (model, layer, token plan): a cache
    made for anything else raises :class:`~saetrack.store.StaleArtifactError` rather than being reused.
    ``verify=True`` also re-hashes every file against its manifest (slow for large caches).
    """

    def __init__(self, run_dir: Path, run: RunConfig | None = None, verify: bool = False) -> None:
        self.dir = Path(run_dir) / paths.CACHE_DIR
        manifest = store.read_manifest(self.dir)
        if manifest is None:
            raise store.StaleArtifactError(
                f"no finished activation cache at {self.dir}; run notebook 01 (or `python run_all.py --only cache`)."
            )
        if run is not None and manifest["config_hash"] != cache_config_hash(run):
            raise store.StaleArtifactError(
                f"the activation cache at {self.dir} was made for preset {manifest.get('preset')!r}, "
                f"hook {manifest.get('hook_name')!r} (config hash {manifest['config_hash']}), not for this config "
                f"(preset {run.preset!r}, hook {run.cache.hook_name!r}, hash {cache_config_hash(run)}); "
                "rerun notebook 01 with force to rebuild it."
            )
        self.manifest = manifest
        self.steps: tuple[int, ...] = tuple(manifest["steps"])
        self.layer: int = manifest["layer"]
        self.hook_name: str = manifest["hook_name"]
        self.d_model: int = manifest["d_model"]
        self.context_length: int = manifest["config"]["plan"]["context_length"]
        if verify:
            self.verify()

    def verify(self) -> None:
        """Re-hash every cached file against the manifests; raise on the first mismatch."""
        for rel, digest in self.manifest["files"].items():
            self._check(self.dir / rel, digest)
        for step in self.steps:
            step_dir = self.dir / paths.step_dir_name(step)
            step_manifest = store.read_manifest(step_dir) or {}
            for rel, digest in step_manifest.get("files", {}).items():
                self._check(step_dir / rel, digest)

    @staticmethod
    def _check(path: Path, digest: str) -> None:
        if not path.exists() or store.file_sha256(path) != digest:
            raise store.StaleArtifactError(f"{path} is missing or corrupt (hash mismatch); rebuild the cache.")

    def _load(self, path: Path) -> np.ndarray:
        try:
            return np.load(path, mmap_mode="r")
        except (OSError, ValueError) as error:
            raise store.StaleArtifactError(
                f"cannot read {path} ({error}); the cache is corrupt, rebuild it."
            ) from error

    def _step_file(self, step: int, name: str) -> np.ndarray:
        if step not in self.steps:
            raise KeyError(f"step {step} is not cached; cached steps: {list(self.steps)}")
        array = self._load(self.dir / paths.step_dir_name(step) / f"{name}.npy")
        expected = self.manifest["per_step"][str(step)]["shapes"].get(name)
        if expected is not None and list(array.shape) != expected:
            raise store.StaleArtifactError(
                f"{name}.npy of step {step} has shape {list(array.shape)}, manifest says {expected}; rebuild the cache."
            )
        return array

    def train(self, step: int) -> np.ndarray:
        """Training activations of the link at ``step``: ``[n_tokens, d_model]``."""
        return self._step_file(step, "train")

    def heldout(self, step: int) -> np.ndarray:
        """Held-out activations at ``step`` (for quality metrics): ``[n_heldout_tokens, d_model]``."""
        return self._step_file(step, "heldout")

    def analysis(self, step: int) -> np.ndarray:
        """Activations of the fixed analysis set at ``step``: ``[n_contexts * context_length, d_model]``."""
        return self._step_file(step, "analysis")

    def train_tokens(self, step: int) -> np.ndarray:
        """Token ids of the link's training contexts: ``[n_contexts, context_length]``."""
        return self._load(self.dir / paths.step_dir_name(step) / "train_tokens.npy")

    @property
    def analysis_tokens(self) -> np.ndarray:
        """Token ids of the analysis set: ``[n_contexts, context_length]`` (identical at every checkpoint)."""
        return self._load(self.dir / "analysis_tokens.npy")

    @property
    def heldout_tokens(self) -> np.ndarray:
        """Token ids of the held-out set: ``[n_contexts, context_length]``."""
        return self._load(self.dir / "heldout_tokens.npy")

    def weights_hash(self, step: int) -> str:
        """SHA-256 of the checkpoint weights the activations of ``step`` were computed from."""
        return self.manifest["per_step"][str(step)]["weights_sha256"]
