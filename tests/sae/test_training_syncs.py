"""train_sae reads nothing back from the device between its read points: host syncs counted per training step.

Every Python-level way of reading a tensor's value on the host (``item``, ``bool``, ``float``, ``int``, ``index``,
``tolist``, ``cpu``, ``numpy``) is wrapped with a counter, and the batches come from an iterator that notes the
counter each time the trainer asks for the next batch: the difference is what one step read back. (Reads inside C++
kernels, e.g. ``nonzero``, do not pass through Python; ``tests/sae/test_loop.py`` runs the step on the meta device,
where they would fail.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

from saetrack.sae.loop import check_every
from saetrack.sae.model import build_sae
from saetrack.sae.training import train_sae
from tests.sae.helpers import D_IN, chain_config

pytestmark = pytest.mark.usefixtures("one_thread")

#: The tensor methods through which Python reads a value back to the host.
SYNC_METHODS = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "cpu", "numpy")


class SyncCounter:
    """Counts calls of :data:`SYNC_METHODS` on any tensor while installed."""

    def __init__(self) -> None:
        self.count = 0
        self.names: list[str] = []

    def wrap(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        """``method`` counting its calls."""

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            self.names.append(name)
            return method(*args, **kwargs)

        return counted


def _counted_batches(batches: list[torch.Tensor], counter: SyncCounter, marks: list[int]) -> Iterator[torch.Tensor]:
    """``batches`` one by one, noting ``counter.count`` when each is asked for (the previous step is done)."""
    for batch in batches:
        marks.append(counter.count)
        yield batch


@pytest.mark.parametrize(("decoder_norm", "log_every"), [("unit", 1), ("weighted", 5), ("unit", 25)])
def test_no_host_sync_on_steps_between_read_points(
    data: np.ndarray, monkeypatch: pytest.MonkeyPatch, decoder_norm: str, log_every: int
) -> None:
    n_steps, batch_size = 75, 64
    batches = [torch.from_numpy(data[(i * batch_size) % 5952 :][:batch_size].copy()) for i in range(n_steps)]
    sae = build_sae(D_IN, chain_config(decoder_norm=decoder_norm), seed=0)
    counter, marks = SyncCounter(), []
    for name in SYNC_METHODS:
        monkeypatch.setattr(torch.Tensor, name, counter.wrap(name, getattr(torch.Tensor, name)))
    assert bool(torch.isfinite(torch.ones(()))) and float(torch.nn.Parameter(torch.ones(()))) == 1.0
    assert counter.count == 2  # the wrappers see reads on tensors and parameters
    counter.count = 0
    result = train_sae(sae, _counted_batches(batches, counter, marks), n_tokens=n_steps * batch_size, lr=1e-3,
                       warmup_steps=3, batch_size=batch_size, seed=0, log_every=log_every, progress=False)  # fmt: skip
    end = counter.count
    monkeypatch.undo()
    assert len(marks) == n_steps
    per_step = [after - before for before, after in zip(marks, [*marks[1:], end], strict=True)]
    every = check_every(log_every, n_steps)
    read_points = {s for s in range(1, n_steps + 1) if s % every == 0}
    for step, syncs in enumerate(per_step[:-1], start=1):  # the last step also finishes training (see below)
        assert syncs == (1 if step in read_points else 0), (step, syncs)
    # after the last step: its read, then the end of training (SAELens' final metadata, frequency, Adam's state)
    assert 1 <= per_step[-1] <= 8
    assert sum(per_step) < n_steps // 4 + 10
    logged = [1, *range(log_every, n_steps + 1, log_every)]
    assert result.loss_curve["step"] == sorted({*logged, n_steps})
