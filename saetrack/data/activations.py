"""Where activations come from: the one interface the chain, baselines, metrics and analyses read them through.

:class:`ActivationSource` is the seam: per checkpoint step, the SAE training rows of that step's link, held-out
rows for its quality metrics, and the fixed analysis set (**the same datapoints at every checkpoint**), plus the
token ids behind them. :func:`open_activations` returns the source of a run; today that is the on-disk cache of
notebook 01 (:class:`ActivationCache`), and a streamed source (activations computed from each checkpoint on the fly)
can be added behind the same interface without touching its readers.

The cache holds, for every checkpoint in the SAE schedule, memory-mappable ``.npy`` files:

* ``analysis.npy`` — the fixed analysis set of contexts (row ``c * context_length + q`` is position ``q`` of context
  ``c``; the token ids are in ``cache/analysis_tokens.npy``). Used by the formation and drift analyses.
* ``heldout.npy`` — held-out contexts (``cache/heldout_tokens.npy``) for each link's quality metrics.
* ``train.npy`` — the SAE training tokens of this checkpoint's link. Each link gets its own slice of the training
  stream (links never share tokens); a checkpoint that also has a from-scratch baseline gets enough tokens for the
  baseline's budget, of which the chain link uses the first rows.

It is written by :func:`saetrack.stages.cache.cache_activations`. A cache made for another model, layer, token plan
or set of weights raises :class:`~saetrack.store.StaleArtifactError` instead of being reused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from saetrack import paths, store
from saetrack.config.run import RunConfig
from saetrack.data.cache_plan import cache_config_hash

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

    def train(self, step: int) -> np.ndarray:
        """SAE training rows of the link at ``step``: ``[n_tokens, d_model]``, in training order."""
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


def open_activations(run: RunConfig, run_dir: Path) -> ActivationSource:
    """The activation source of ``run`` in ``run_dir``: the activation cache, checked against the config."""
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
