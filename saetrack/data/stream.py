"""Streamed activations (``cache.mode="streamed"``): each checkpoint's model run on the fly, nothing large on disk.

:class:`StreamedActivations` serves the same :class:`~saetrack.data.activations.ActivationSource` interface as the
on-disk cache. A link's training rows are its own slice of the corpus's training token stream (the token plan of
:func:`~saetrack.data.cache_plan.plan_tokens`, the same slice the cache would store) run through the checkpoint's
model up to the hook ``cache.hook_name`` (:func:`~saetrack.data.forward.residual_chunks`, the cache's own batches) into
the training buffer of :func:`~saetrack.data.shuffle.block_shuffled_batches` on the SAE's device. The held-out set is
computed for one checkpoint at a time and kept until another is asked for; the analysis set is a
:class:`LazyActivations` view whose rows are computed when read, so it is never held whole.

One model is loaded per checkpoint and kept until another is asked for (:meth:`StreamedActivations.model`), whole
by default because the link's evaluation needs its logits (the CE loss recovered): :func:`hooked_model` hands the
evaluation that same model instead of a second load; with ``full_model=False`` (no evaluation, e.g. formation) only
the blocks up to the hook are kept (:func:`~saetrack.data.forward.truncate_at_layer`). A link's token ids are never
materialised whole: :class:`ContextSpan` gathers each forward batch's contexts from the token stream when it is
read (int64, one batch at a time), and each batch is uploaded pinned and non-blocking to a CUDA device.

Before anything is computed the source checks its inputs: the token-stream files against the corpus manifest's
hashes, and each checkpoint's weights against the hash notebook 01 recorded for that step - a file changed on disk
after it was written is named, not trained on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saetrack import paths, store
from saetrack.config.run import RunConfig
from saetrack.data.cache_plan import TORCH_DTYPES, TokenPlan, cache_config_hash, plan_tokens
from saetrack.data.checkpoints import CheckpointSource, open_source
from saetrack.data.corpus import TRAIN_TOKENS, load_corpus
from saetrack.data.forward import residual_chunks, truncate_at_layer
from saetrack.data.shuffle import block_shuffled_batches, shuffle_peak_bytes
from saetrack.distributed.ranks import SINGLE, Ranks

__all__ = [
    "ContextSpan",
    "LazyActivations",
    "StreamedActivations",
    "hooked_model",
    "stream_peak_bytes",
]


def stream_peak_bytes(buffer_rows: int, d: int, dtype: torch.dtype, batch_rows: int, batch_size: int) -> int:
    """Peak device bytes of a streamed link's batch production besides the model's weights and forward workspace.

    :func:`~saetrack.data.shuffle.shuffle_peak_bytes` with two float32 ``[batch_rows, d]`` chunks incoming (a forward
    batch's output and its stored copy, :func:`~saetrack.data.forward.residual_chunks`) plus the batch's int64
    token ids; ``batch_rows = cache.batch_contexts * context_length``.
    """
    return shuffle_peak_bytes(buffer_rows, d, dtype, 2 * batch_rows, batch_size) + 8 * batch_rows


class ContextSpan:
    """The token ids ``[n_contexts, context_length]`` of a span of a token stream, gathered when sliced.

    ``span[a:b]`` is ``plan.contexts(stream, (start + a, b - a))`` - int64, exactly the rows ``a .. b-1`` of
    ``plan.contexts(stream, span)`` (each context is drawn on its own) - so a link's contexts are read one forward
    batch at a time instead of being materialised whole (with their int64 gather index) before the first batch.
    """

    ndim = 2

    def __init__(self, plan: TokenPlan, stream: np.ndarray, span: tuple[int, int]) -> None:
        self._plan, self._stream, self._start = plan, stream, int(span[0])
        self.shape = (int(span[1]), plan.context_length)

    @property
    def start(self) -> int:
        """The span's first context in the stream's plan (with ``shape[0]``, what identifies the span)."""
        return self._start

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError(f"a ContextSpan is read in slices of contexts, not with {type(key).__name__}.")
        start, stop, stride = key.indices(self.shape[0])
        if stride != 1:
            raise ValueError("a ContextSpan is read in consecutive slices (step 1).")
        return self._plan.contexts(self._stream, (self._start + start, max(0, stop - start)))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """Every context (the whole span in memory)."""
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)


class LazyActivations:
    """A checkpoint's activations of a fixed token set, computed only for the rows read (a read-only ``[N, d]`` view).

    Indexed like the memory map of the cache - a slice, or an array of row indices - it runs the model on just the
    contexts holding those rows, in the same batches as a full pass (so the values are bit-identical), and keeps the
    last batch it computed. The analyses read it in slices of a few thousand rows and gather their datapoints from
    it: host memory stays at one batch plus what they gather, whatever the size of the set.
    """

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, source: StreamedActivations, step: int, tokens: np.ndarray) -> None:
        self._source, self._step, self._tokens = source, step, tokens
        self.shape = (int(tokens.size), source.d_model)
        self._batch_rows = source.run.cache.batch_contexts * source.context_length
        self._kept: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def _batch(self, index: int) -> np.ndarray:
        """Rows of forward batch ``index`` (``batch_contexts`` contexts), computed or kept from the last call."""
        if self._kept is None or self._kept[0] != index:
            first = index * self._batch_rows
            n = min(self._batch_rows, self.shape[0] - first)
            rows = torch.cat([c.cpu() for c in self._source._rows(self._step, self._tokens, first, n)]).numpy()
            self._kept = (index, rows)
        return self._kept[1]

    def device_rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``[start, stop)`` as one float32 tensor on the source's device: the values of ``self[start:stop]``
        (the same forward batches), never copied to the host (the formation scan reads them so)."""
        start, stop, _ = slice(start, stop).indices(self.shape[0])
        return torch.cat(list(self._source._rows(self._step, self._tokens, start, max(0, stop - start))))

    def __getitem__(self, key: slice | np.ndarray | list[int]) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, stride = key.indices(self.shape[0])
            rows = np.arange(start, stop, stride, dtype=np.int64)
        else:
            rows = np.asarray(key, dtype=np.int64).reshape(-1)
            if rows.size and (rows.min() < -self.shape[0] or rows.max() >= self.shape[0]):
                raise IndexError(f"row index out of range for {self.shape[0]} rows.")
            rows = rows % self.shape[0]
        out = np.empty((rows.size, self.shape[1]), dtype=np.float32)
        batch_of = rows // self._batch_rows
        for index in np.unique(batch_of):
            chosen = np.nonzero(batch_of == index)[0]
            out[chosen] = self._batch(int(index))[rows[chosen] - index * self._batch_rows]
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """Every row (the whole set in memory: only for small sets and tests)."""
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)


class StreamedActivations:
    """Activations of a run's checkpoints computed on the fly (module doc); an ``ActivationSource``."""

    def __init__(
        self,
        run: RunConfig,
        run_dir: Path,
        checkpoints: CheckpointSource | None = None,
        device: str = "cpu",
        full_model: bool = True,
        ranks: Ranks = SINGLE,
    ) -> None:
        self.run, self.device, self.full_model, self.ranks = run, device, full_model, ranks
        self.dir = Path(run_dir) / paths.CACHE_DIR
        manifest = store.read_manifest(self.dir)
        if manifest is None or manifest.get("config_hash") != cache_config_hash(run):
            raise store.StaleArtifactError(
                f"no finished token plan for this config at {self.dir}; run notebook 01 "
                "(or `python run_all.py --only cache`) first."
            )
        self.manifest = manifest
        self.steps: tuple[int, ...] = tuple(manifest["steps"])
        self.hook_name: str = run.cache.hook_name
        self.d_model: int = int(manifest["d_model"])
        self.context_length: int = run.cache.context_length
        self.plan = plan_tokens(run)
        corpus_dir = Path(run_dir) / paths.CORPUS_DIR
        store.check_files(corpus_dir, [TRAIN_TOKENS])
        store.check_files(self.dir)
        _, self._train_stream, _ = load_corpus(run_dir)
        self.checkpoints = checkpoints if checkpoints is not None else open_source(run.model, Path(run_dir))
        self._model: tuple[int, Any] | None = None
        self._heldout: tuple[int, np.ndarray] | None = None

    # -- the checkpoint's model ------------------------------------------------------------------
    def model(self, step: int) -> Any:
        """The hooked model of ``step`` on the source's device (one kept at a time), its weights hash checked.

        Whole when ``full_model`` (the link's evaluation reuses it, :func:`hooked_model`), else cut after the hook
        (:func:`~saetrack.data.forward.truncate_at_layer`)."""
        if self._model is None or self._model[0] != step:
            self._model = None
            expected = self.weights_hash(step)
            actual = self.checkpoints.weights_hash(step)
            if actual != expected:
                raise store.StaleArtifactError(
                    f"the weights of checkpoint step {step} ({self.checkpoints.checkpoint_dir(step)}) hash to "
                    f"{actual[:12]}..., not {expected[:12]}... as when notebook 01 planned this run; the checkpoint "
                    "changed - rerun notebook 01 with force."
                )
            model = self.checkpoints.load_hooked(step, device=self.device)
            self._model = (
                step,
                model if self.full_model else truncate_at_layer(model, self.run.cache.layer, self.run.cache.hook),
            )
        return self._model[1]

    def _rows(self, step: int, tokens: np.ndarray | ContextSpan, first_row: int, n_rows: int) -> Iterator[torch.Tensor]:
        """Rows ``[first_row, first_row + n_rows)`` of the activations of ``tokens`` at ``step``, in order."""
        ctx = self.context_length
        chunks = residual_chunks(
            self.model(step),
            tokens,
            self.run.cache.layer,
            batch_contexts=self.run.cache.batch_contexts,
            device=self.device,
            store_dtype=TORCH_DTYPES[self.run.cache.dtype],
            forward_dtype=self.run.cache.forward_dtype,
            first_context=first_row // ctx,
            tf32=self.run.cache.tf32,
            hook=self.run.cache.hook,
            ranks=self.ranks,
        )
        skip, left = first_row % ctx, n_rows
        for chunk in chunks:
            chunk = chunk[skip : left + skip]
            skip, left = 0, left - len(chunk)
            yield chunk
            del chunk  # not alive while the next one is computed
            if left <= 0:
                return

    def train_tokens(self, step: int) -> np.ndarray:
        """Token ids of the link's training contexts: ``[n_contexts, context_length]`` (its slice of the stream)."""
        return self.plan.contexts(self._train_stream, self.plan.train[step])

    def _train_span(self, step: int) -> ContextSpan:
        """The link's training contexts as a :class:`ContextSpan` (what :meth:`train_tokens` gives, read by batch)."""
        return ContextSpan(self.plan, self._train_stream, self.plan.train[step])

    def _check_rows(self, step: int, start: int, n_tokens: int) -> int:
        if len(self._train_stream) == 0:
            raise ValueError(
                "the corpus holds no training tokens: it was built for analysing a chain installed from the Hub. "
                "Remove the chain folder and rerun notebook 01 to stream the training tokens."
            )
        available = self.plan.train[step][1] * self.context_length
        if start < 0 or start + n_tokens > available:
            raise ValueError(
                f"rows [{start}, {start + n_tokens}) of step {step}'s training slice were asked for, but the token "
                f"plan gives it {available} tokens."
            )
        return available

    def train_head(self, step: int, n_rows: int) -> np.ndarray:
        """The first ``n_rows`` (at most the slice) training rows of the link at ``step``, float32 on the host."""
        n = min(n_rows, self._check_rows(step, 0, 0))
        return torch.cat([c.cpu() for c in self._rows(step, self._train_span(step), 0, n)]).numpy()

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
        """SAE batches of the link's rows ``[start, start + n_tokens)``, streamed and shuffled (module doc).

        Reads whole batches (``n_tokens`` rounded up) when the slice has the rows, so one pass feeds every step.
        """
        available = self._check_rows(step, start, n_tokens)
        whole = -(-n_tokens // batch_size) * batch_size
        n_rows = whole if start + whole <= available else n_tokens
        tokens = self._train_span(step)
        return block_shuffled_batches(
            lambda: self._rows(step, tokens, start, n_rows),
            batch_size,
            buffer_rows=min(self.run.cache.buffer_tokens or n_rows, n_rows),  # never more than the link holds
            seed=seed,
            dtype=dtype,
            device=device,
        )

    def heldout(self, step: int) -> np.ndarray:
        """Held-out activations at ``step``: ``[n_heldout_tokens, d_model]``, computed now (kept for one step)."""
        if step not in self.steps:
            raise KeyError(f"step {step} is not in the run's schedule; steps: {list(self.steps)}")
        if self._heldout is None or self._heldout[0] != step:
            self._heldout = None
            tokens = np.asarray(self.heldout_tokens)
            rows = torch.cat([c.cpu() for c in self._rows(step, tokens, 0, tokens.size)]).numpy()
            self._heldout = (step, rows)
        return self._heldout[1]

    def analysis(self, step: int) -> LazyActivations:
        """The analysis set at ``step`` as a :class:`LazyActivations` view ``[n_contexts * context_length, d_model]``:
        rows are computed when read, so the whole set is never held."""
        if step not in self.steps:
            raise KeyError(f"step {step} is not in the run's schedule; steps: {list(self.steps)}")
        return LazyActivations(self, step, np.asarray(self.analysis_tokens))

    @property
    def analysis_tokens(self) -> np.ndarray:
        """Token ids of the analysis set: ``[n_contexts, context_length]``, identical at every checkpoint."""
        return np.load(self.dir / "analysis_tokens.npy", mmap_mode="r")

    @property
    def heldout_tokens(self) -> np.ndarray:
        """Token ids of the held-out set: ``[n_contexts, context_length]``."""
        return np.load(self.dir / "heldout_tokens.npy", mmap_mode="r")

    def weights_hash(self, step: int) -> str:
        """SHA-256 of the checkpoint weights of ``step`` as recorded by notebook 01."""
        return str(self.manifest["per_step"][str(step)]["weights_sha256"])


def hooked_model(activations: object, checkpoints: CheckpointSource, step: int, device: str | torch.device) -> Any:
    """The whole hooked model of checkpoint ``step`` on ``device`` for a link's evaluation (App. C.1's CE loss).

    When ``activations`` streams on that device with whole models it is the model it already holds for ``step``
    (:meth:`StreamedActivations.model`, weights hash checked): one load per link for training and evaluation. Else
    ``checkpoints.load_hooked(step, device=device)``.
    """
    if (
        isinstance(activations, StreamedActivations)
        and activations.full_model
        and torch.device(activations.device) == torch.device(device)
    ):
        return activations.model(step)
    return checkpoints.load_hooked(step, device=device)
