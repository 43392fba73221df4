"""Streamed activations of several layers from one forward per batch (``cache.layers`` with ``cache.mode="streamed"``).

Each layer of a several-layer run trains its own chain (:mod:`saetrack.pipeline.layers`); streamed, each link's
rows are its checkpoint's model run on the link's tokens. Run one after the other, the layers would each run that
forward. Run side by side (one thread per layer, :mod:`saetrack.stages.chain.lockstep`), the layers ask for the
same rows in the same order - they share the token plan and the chain's budgets - and :class:`LockstepForward`
serves them from one forward: the first layer to need a batch runs the model once to the deepest layer
(:func:`~saetrack.data.forward.layered_chunks`) and queues every other layer's rows for it.

A request for rows is a *stream*: ``(step, token set, first row, rows)`` and how many times this layer asked for
the same before. A stream is shared by the layers that had, when it was opened, opened fewer streams than its
opener (they are behind, and will open it next if their requests match); a layer that opens a different stream at
that position is detached from it (it asked for something else - e.g. a calibration that took more short runs) and
any stream it is not part of is computed from its own model (:class:`LockstepActivations` falls back to
:class:`~saetrack.data.stream.StreamedActivations`' forward), so sharing never changes a value, only how often the
model runs. A layer ahead waits while a layer behind holds :data:`MAX_QUEUED` unread batches of the stream (host
memory stays a few batches a layer); after :data:`STALL_SECONDS` without progress it stops waiting and detaches
that layer instead, so no wait is unbounded.
"""

from __future__ import annotations

import collections
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saetrack import store
from saetrack.config.run import RunConfig
from saetrack.data.cache_plan import TORCH_DTYPES
from saetrack.data.checkpoints import CheckpointSource
from saetrack.data.forward import layered_chunks, truncate_at_layer
from saetrack.data.stream import ContextSpan, StreamedActivations

__all__ = ["MAX_QUEUED", "STALL_SECONDS", "LockstepActivations", "LockstepForward", "token_key"]

#: Unread batches a stream may hold for a layer behind before the layer ahead waits for it.
MAX_QUEUED = 4
#: Seconds a layer ahead waits for one behind without any progress before detaching it from the stream.
STALL_SECONDS = 600.0


def token_key(tokens: np.ndarray | ContextSpan) -> tuple[Any, ...]:
    """What identifies a token set between layers: a span of the training stream by its start and length, an array
    (the held-out or analysis set) by its shape and the SHA-1 of its ids."""
    if isinstance(tokens, ContextSpan):
        return ("span", tokens.start, tokens.shape[0])
    ids = np.ascontiguousarray(np.asarray(tokens, dtype=np.int64))
    return ("ids", ids.shape, hashlib.sha1(ids.tobytes()).hexdigest())


class _Detached:
    """The type of :data:`DETACHED`."""


#: What :meth:`LockstepForward._next_chunk` returns to a layer no longer attached to the stream it reads.
DETACHED = _Detached()


@dataclass
class _Stream:
    """One request for rows that several layers may read: its producer and each attached layer's unread batches."""

    key: tuple[Any, ...]
    index: int  # the opener's count of opened streams when it opened this one
    layers: list[int]  # every layer the producer computes (in order), attached or not
    producer: Iterator[list[torch.Tensor]]
    queues: dict[int, collections.deque[torch.Tensor]] = field(default_factory=dict)
    done: bool = False
    producing: bool = False
    error: BaseException | None = None


class LockstepForward:
    """One forward per batch for the rows several layers' threads ask for in the same order (module doc)."""

    def __init__(self, run: RunConfig, layers: list[int], checkpoints: CheckpointSource, device: str) -> None:
        self.run, self.layers, self.checkpoints, self.device = run, sorted(layers), checkpoints, device
        self.forwards = 0  # forward passes run for shared streams (the benchmark and the tests read it)
        self.streams = {"shared": 0, "alone": 0}  # requests served from a shared stream / by the layer's own forward
        self._cond = threading.Condition()
        self._opened = dict.fromkeys(self.layers, 0)
        self._occurrences: dict[tuple[int, tuple[Any, ...]], int] = {}
        self._streams: dict[tuple[Any, ...], _Stream] = {}
        self._model: tuple[int, Any] | None = None
        self._model_lock = threading.Lock()
        #: Step -> the weights hash notebook 01 recorded (every layer's cache manifest records the same).
        self.expected_hashes: dict[int, str] = {}

    def _model_at(self, step: int) -> Any:
        """The checkpoint's model cut after the deepest layer's hook (one kept at a time; loaded under a lock), its
        weights hash checked against the one notebook 01 recorded, as :meth:`StreamedActivations.model` does."""
        with self._model_lock:
            if self._model is None or self._model[0] != step:
                self._model = None
                expected, actual = self.expected_hashes.get(step), self.checkpoints.weights_hash(step)
                if expected is not None and actual != expected:
                    raise store.StaleArtifactError(
                        f"the weights of checkpoint step {step} hash to {actual[:12]}..., not {expected[:12]}... as "
                        "when notebook 01 planned this run; the checkpoint changed - rerun notebook 01 with force."
                    )
                model = self.checkpoints.load_hooked(step, device=self.device)
                self._model = (step, truncate_at_layer(model, max(self.layers), self.run.cache.hook))
            return self._model[1]

    def _produce(self, step: int, tokens: np.ndarray | ContextSpan, first_row: int) -> Iterator[list[torch.Tensor]]:
        """Every layer's chunks of ``tokens`` from context ``first_row // ctx`` on, one forward per batch."""
        cache = self.run.cache
        model = self._model_at(step)
        chunks = layered_chunks(
            model, tokens, self.layers, batch_contexts=cache.batch_contexts, device=self.device,
            store_dtype=TORCH_DTYPES[cache.dtype], forward_dtype=cache.forward_dtype, tf32=cache.tf32,
            hook=cache.hook, first_context=first_row // cache.context_length,
        )  # fmt: skip
        for values in chunks:
            self.forwards += 1
            yield values

    def _open(self, layer: int, key: tuple[Any, ...], tokens: np.ndarray | ContextSpan) -> _Stream | None:
        """Register that ``layer`` opens stream ``key``: the shared stream it is attached to, else ``None`` (it
        computes the rows itself). Detaches it from the streams it skipped (module doc). Under the condition."""
        self._opened[layer] += 1
        index = self._opened[layer]
        occurrence = self._occurrences.get((layer, key), 0)
        self._occurrences[(layer, key)] = occurrence + 1
        full_key = (key, occurrence)
        for stream in list(self._streams.values()):
            if stream.index == index and stream.key != full_key:
                self._detach(stream, layer)
        stream = self._streams.get(full_key)
        if stream is not None:
            return stream if layer in stream.queues else None
        behind = [other for other in self.layers if other != layer and self._opened[other] < index]
        if not behind:
            return None  # nobody else will read it: the layer's own forward
        stream = _Stream(full_key, index, self.layers, self._produce(key[0], tokens, key[2]))
        stream.queues = {other: collections.deque() for other in (layer, *behind)}
        self._streams[full_key] = stream
        return stream

    def _detach(self, stream: _Stream, layer: int) -> None:
        """``layer`` will not read ``stream`` (any more); the stream is dropped once nobody is attached."""
        stream.queues.pop(layer, None)
        if not stream.queues:
            self._streams.pop(stream.key, None)
            if not stream.producing:  # else the thread running it finds nobody to hand its batch to
                stream.producer.close()
        self._cond.notify_all()

    def leave(self, layer: int) -> None:
        """``layer``'s thread ended (finished or failed): it reads nothing more, so nobody waits for it."""
        with self._cond:
            self._opened[layer] = 1 << 62
            for stream in list(self._streams.values()):
                if layer in stream.queues:
                    self._detach(stream, layer)

    def _next_chunk(self, stream: _Stream, layer: int) -> torch.Tensor | _Detached | None:
        """The next batch of ``layer``'s rows from ``stream``; ``None`` when the stream is exhausted, :data:`DETACHED`
        when ``layer`` was detached from it (the caller computes the rest). Produces one batch for every attached
        layer when its queue is empty; waits while a layer behind holds :data:`MAX_QUEUED` batches (module doc)."""
        while True:
            with self._cond:
                waited_since = time.monotonic()
                while True:
                    queue = stream.queues.get(layer)
                    if stream.error is not None:
                        raise RuntimeError(f"the shared forward failed: {stream.error}") from stream.error
                    if queue is None:
                        return DETACHED
                    if queue:
                        self._cond.notify_all()
                        return queue.popleft()
                    if stream.done:
                        return None
                    full = [o for o, q in stream.queues.items() if o != layer and len(q) >= MAX_QUEUED]
                    if not stream.producing and not full:
                        stream.producing = True
                        break
                    if full and time.monotonic() - waited_since > STALL_SECONDS:
                        for other in full:  # stalled: the layer behind computes its own rows from here on
                            self._detach(stream, other)
                    self._cond.wait(timeout=1.0)
            values, error = None, None
            try:
                values = next(stream.producer, None)
            except BaseException as raised:  # every reader of the stream is told, not handed short rows
                error = raised
            with self._cond:
                stream.producing = False
                if error is not None:
                    stream.error = error
                elif values is None:
                    stream.done = True
                else:
                    for other, queue in stream.queues.items():
                        queue.append(values[stream.layers.index(other)])
                self._cond.notify_all()
            if error is not None:
                raise error

    def rows(
        self,
        layer: int,
        step: int,
        tokens: np.ndarray | ContextSpan,
        first_row: int,
        n_rows: int,
        alone: Callable[[int, int], Iterator[torch.Tensor]],
    ) -> Iterator[torch.Tensor]:
        """Rows ``[first_row, first_row + n_rows)`` of ``layer``'s activations of ``tokens`` at ``step``, in order
        (as :meth:`StreamedActivations._rows` gives them): from shared forwards while the other layers ask for the
        same, else (or from where the layer was detached) from ``alone(first_row, n_rows)``, its own forward."""
        key = (step, token_key(tokens), first_row, n_rows)
        with self._cond:
            stream = self._open(layer, key, tokens)
            self.streams["alone" if stream is None else "shared"] += 1
        if stream is None:
            yield from alone(first_row, n_rows)
            return
        skip, done, detached = first_row % self.run.cache.context_length, 0, False
        try:
            while done < n_rows:
                chunk = self._next_chunk(stream, layer)
                if chunk is None or isinstance(chunk, _Detached):
                    detached = chunk is not None
                    break
                chunk = chunk[skip : skip + n_rows - done]
                skip, done = 0, done + len(chunk)
                yield chunk
        finally:
            with self._cond:
                if layer in stream.queues:
                    self._detach(stream, layer)
        if detached:  # part-way: the rest from the layer's own forward (the same batches, so the same values)
            yield from alone(first_row + done, n_rows - done)


class LockstepActivations(StreamedActivations):
    """A layer's streamed activations whose rows come from a :class:`LockstepForward` shared with the other layers
    when they ask for the same, from its own model's forward otherwise (the same values either way)."""

    def __init__(
        self, run: RunConfig, run_dir: Path, broker: LockstepForward, checkpoints: CheckpointSource | None = None,
        device: str = "cpu",
    ) -> None:  # fmt: skip
        super().__init__(run, run_dir, checkpoints, device, full_model=True)
        if broker.run.cache.hook != run.cache.hook or run.cache.layer not in broker.layers:
            raise ValueError(f"layer {run.cache.layer} ({run.cache.hook}) is not one of the broker's layers")
        self.broker = broker

    def _rows(self, step: int, tokens: np.ndarray | ContextSpan, first_row: int, n_rows: int) -> Iterator[torch.Tensor]:
        """The rows of :meth:`StreamedActivations._rows`, from the shared forward when the other layers read them."""
        self.broker.expected_hashes.setdefault(step, self.weights_hash(step))
        alone = super()._rows
        return self.broker.rows(self.run.cache.layer, step, tokens, first_row, n_rows,
                                lambda first, n: alone(step, tokens, first, n))  # fmt: skip
