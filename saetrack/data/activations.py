"""Where activations come from: the one interface the chain, baselines, metrics and analyses read them through.

:class:`ActivationSource` is the seam: per checkpoint step, the SAE training rows of that step's link, held-out
rows for its quality metrics, and the fixed analysis set (**the same datapoints at every checkpoint**), plus the
token ids behind them. :func:`open_activations` returns the source of a run: the on-disk cache of notebook 01
(:class:`ActivationCache`, ``cache.mode="cached"``) or activations computed from each checkpoint on the fly
(:class:`~saetrack.data.stream.StreamedActivations`, ``cache.mode="streamed"``). Training reads a link's rows as
shuffled batches (:meth:`ActivationSource.train_batches`); both sources shuffle with
:func:`~saetrack.data.shuffle.block_shuffled_batches` when ``cache.buffer_tokens`` is set, so the same rows in the
same order train the same SAE on either path.

The cache holds, for every checkpoint in the SAE schedule, memory-mappable ``.npy`` files:

* ``analysis.npy`` — the fixed analysis set of contexts (row ``c * context_length + q`` is position ``q`` of context
  ``c``; the token ids are in ``cache/analysis_tokens.npy``). Used by the formation and drift analyses.
* ``heldout.npy`` — held-out contexts (``cache/heldout_tokens.npy``) for each link's quality metrics.
* ``train.npy`` — the SAE training tokens of this checkpoint's link. Each link gets its own slice of the training
  stream (links never share tokens); a checkpoint that also has a from-scratch baseline gets enough tokens for the
  baseline's budget, of which the chain link uses the first rows.

It is written by :func:`saetrack.stages.cache.cache_activations`. A cache made for another model, layer, token plan
or set of weights raises :class:`~saetrack.store.StaleArtifactError` instead of being reused, and every file is
re-hashed against its manifest the first time it is read, so a file altered on disk is named before anything trains
on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from saetrack import paths, store
from saetrack.config.run import RunConfig
from saetrack.data.cache_plan import cache_config_hash
from saetrack.data.checkpoints import CheckpointSource
from saetrack.data.shuffle import block_shuffled_batches
from saetrack.data.stream import StreamedActivations
from saetrack.distributed.ranks import SINGLE, Ranks
from saetrack.sae.training import CHUNK_BYTES, shuffled_batches

__all__ = [
    "ActivationCache",
    "ActivationSource",
    "open_activations",
]


class ActivationSource(Protocol):
    """Activations at one hook of a model's checkpoints: what the chain and the analyses read (see module doc)."""

    #: Checkpoint steps this source serves, in training order.
    steps: tuple[int, ...]
    hook_name: str
    d_model: int
    context_length: int

    def train_batches(
        self,
        step: int,
        *,
        start: int = 0,
        n_tokens: int,
        batch_size: int,
        seed: int,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> Iterator[torch.Tensor]:
        """Endless shuffled ``[batch_size, d_model]`` batches of the link's training rows from ``start`` on."""
        ...

    def train_head(self, step: int, n_rows: int) -> np.ndarray:
        """The first ``n_rows`` training rows of the link at ``step`` (fewer if its slice is shorter)."""
        ...

    def heldout(self, step: int) -> np.ndarray:
        """Held-out rows at ``step`` for quality metrics: ``[n_heldout_tokens, d_model]``."""
        ...

    def analysis(self, step: int) -> np.ndarray:
        """The fixed analysis set at ``step``: ``[n_contexts * context_length, d_model]``."""
        ...

    @property
    def analysis_tokens(self) -> np.ndarray:
        """Token ids of the analysis set: ``[n_contexts, context_length]``, identical at every checkpoint."""
        ...

    @property
    def heldout_tokens(self) -> np.ndarray:
        """Token ids of the held-out set: ``[n_contexts, context_length]``."""
        ...

    def weights_hash(self, step: int) -> str:
        """SHA-256 of the checkpoint weights the activations of ``step`` come from."""
        ...


def open_activations(
    run: RunConfig,
    run_dir: Path,
    checkpoints: CheckpointSource | None = None,
    device: str = "cpu",
    *,
    full_model: bool = True,
    ranks: Ranks = SINGLE,
) -> ActivationSource:
    """The activation source of ``run`` in ``run_dir``, checked against the config: the on-disk cache, or (when
    ``cache.mode="streamed"``) the checkpoints' models run on the fly on ``device`` - whole, or with
    ``full_model=False`` (a stage that evaluates no link) only the blocks before the hook. With several ``ranks``
    the streamed forwards are dealt out over them, every rank receiving every row
    (:func:`~saetrack.data.forward.residual_chunks`); a cache is read whole by every rank."""
    if run.cache.streamed:
        return StreamedActivations(run, run_dir, checkpoints, device, full_model=full_model, ranks=ranks)
    return ActivationCache(run_dir, run)


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
        self.buffer_tokens = run.cache.buffer_tokens if run is not None else None
        self._verified: set[Path] = set()
        self.steps: tuple[int, ...] = tuple(manifest["steps"])
        self.layer: int = manifest["layer"]
        self.hook_name: str = manifest["hook_name"]
        self.d_model: int = manifest["d_model"]
        self.context_length: int = manifest["config"]["plan"]["context_length"]
        if verify:
            self.verify()

    def verify(self) -> None:
        """Re-hash every cached file against the manifests; raise on the first mismatch."""
        store.check_files(self.dir)
        for step in self.steps:
            store.check_files(self.dir / paths.step_dir_name(step))

    def _load(self, path: Path) -> np.ndarray:
        try:
            return np.load(path, mmap_mode="r")
        except (OSError, ValueError) as error:
            raise store.StaleArtifactError(
                f"cannot read {path} ({error}); the cache is corrupt, rebuild it."
            ) from error

    def _verified_path(self, folder: Path, name: str) -> Path:
        """``folder / name``, re-hashed against ``folder``'s manifest the first time it is read."""
        path = folder / name
        if path not in self._verified:
            store.check_files(folder, [name])
            self._verified.add(path)
        return path

    def _step_file(self, step: int, name: str) -> np.ndarray:
        if step not in self.steps:
            raise KeyError(f"step {step} is not cached; cached steps: {list(self.steps)}")
        array = self._load(self._verified_path(self.dir / paths.step_dir_name(step), f"{name}.npy"))
        expected = self.manifest["per_step"][str(step)]["shapes"].get(name)
        if expected is not None and list(array.shape) != expected:
            raise store.StaleArtifactError(
                f"{name}.npy of step {step} has shape {list(array.shape)}, manifest says {expected}; rebuild the cache."
            )
        return array

    def train(self, step: int) -> np.ndarray:
        """Training activations of the link at ``step``: ``[n_tokens, d_model]``."""
        return self._step_file(step, "train")

    def train_head(self, step: int, n_rows: int) -> np.ndarray:
        """The first ``n_rows`` training rows of the link at ``step`` (fewer if its slice is shorter)."""
        return self.train(step)[:n_rows]

    def train_batches(
        self,
        step: int,
        *,
        start: int = 0,
        n_tokens: int,
        batch_size: int,
        seed: int,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> Iterator[torch.Tensor]:
        """Shuffled batches of the cached rows ``[start, start + n_tokens)`` of the link at ``step``.

        ``buffer_tokens=None``: one global shuffle per pass (:func:`~saetrack.sae.training.shuffled_batches`);
        otherwise the block shuffle of :func:`~saetrack.data.shuffle.block_shuffled_batches`, as streamed.
        """
        data = self.train(step)
        if start < 0 or start + n_tokens > len(data):
            raise ValueError(
                f"rows [{start}, {start + n_tokens}) of step {step} were asked for, but the cache holds {len(data)}."
            )
        rows = data[start : start + n_tokens]
        if self.buffer_tokens is None:
            return shuffled_batches(rows, batch_size, seed=seed, dtype=dtype, device=device)
        chunk = max(1, CHUNK_BYTES // (4 * self.d_model))

        def in_order() -> Iterator[torch.Tensor]:
            for begin in range(0, len(rows), chunk):
                yield torch.from_numpy(np.ascontiguousarray(rows[begin : begin + chunk]))

        return block_shuffled_batches(
            in_order,
            batch_size,
            buffer_rows=min(self.buffer_tokens, len(rows)),  # never more than the link holds (same batches)
            seed=seed,
            dtype=dtype,
            device=device,
        )

    def heldout(self, step: int) -> np.ndarray:
        """Held-out activations at ``step`` (for quality metrics): ``[n_heldout_tokens, d_model]``."""
        return self._step_file(step, "heldout")

    def analysis(self, step: int) -> np.ndarray:
        """Activations of the fixed analysis set at ``step``: ``[n_contexts * context_length, d_model]``."""
        return self._step_file(step, "analysis")

    def train_tokens(self, step: int) -> np.ndarray:
        """Token ids of the link's training contexts: ``[n_contexts, context_length]``."""
        return self._load(self._verified_path(self.dir / paths.step_dir_name(step), "train_tokens.npy"))

    @property
    def analysis_tokens(self) -> np.ndarray:
        """Token ids of the analysis set: ``[n_contexts, context_length]`` (identical at every checkpoint)."""
        return self._load(self._verified_path(self.dir, "analysis_tokens.npy"))

    @property
    def heldout_tokens(self) -> np.ndarray:
        """Token ids of the held-out set: ``[n_contexts, context_length]``."""
        return self._load(self._verified_path(self.dir, "heldout_tokens.npy"))

    def weights_hash(self, step: int) -> str:
        """SHA-256 of the checkpoint weights the activations of ``step`` were computed from."""
        return self.manifest["per_step"][str(step)]["weights_sha256"]
