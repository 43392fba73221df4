"""The shared forward of side-by-side layers: the rows each layer reads are its own forward's, one forward per batch
serves every layer asking for the same, and layers asking for different things, or a failing forward, never hand
a layer short or foreign rows."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from saetrack.config import get_preset
from saetrack.data.forward import residual_chunks
from saetrack.data.hf_convert import hooked_from_hf
from saetrack.data.lockstep import DETACHED, LockstepForward, token_key
from saetrack.data.stream import ContextSpan
from tests.data.archs import arch_model

LAYERS = [0, 2]
#: The broker reads the run's cache section only: its batching, storage dtype and hook.
RUN = get_preset("smoke").with_overrides({"cache.batch_contexts": 2, "cache.context_length": 10})


class _Checkpoints:
    """One tiny random-weight checkpoint (step 0), loaded afresh each time, counted."""

    def __init__(self, fail: bool = False) -> None:
        self.loads, self.fail = 0, fail

    def load_hooked(self, step: int, device: str = "cpu") -> Any:
        self.loads += 1
        if self.fail:
            raise OSError("the checkpoint cannot be read")
        return hooked_from_hf(arch_model("gpt_neox", 11))

    def weights_hash(self, step: int) -> str:
        return "same"


def _alone(layer: int, tokens: np.ndarray) -> Any:
    """The rows of ``layer`` from its own forward (what a single-layer run computes), for ``rows``' fallback."""
    model = hooked_from_hf(arch_model("gpt_neox", 11))

    def rows(first_row: int, n_rows: int) -> Iterator[torch.Tensor]:
        chunks = residual_chunks(model, tokens, layer, batch_contexts=2, device="cpu", first_context=first_row // 10)
        out = torch.cat(list(chunks))[first_row % 10 :][:n_rows]
        yield out

    return rows


def _read(broker: LockstepForward, layer: int, requests: list[tuple[np.ndarray, int, int]], out: dict) -> None:
    try:
        for index, (tokens, first, n) in enumerate(requests):
            rows = broker.rows(layer, 0, tokens, first, n, _alone(layer, tokens))
            out[(layer, index)] = torch.cat(list(rows))
    except BaseException as error:
        out[(layer, "error")] = error
    finally:
        broker.leave(layer)


def _side_by_side(broker: LockstepForward, requests: dict[int, list]) -> dict:
    out: dict = {}
    threads = [threading.Thread(target=_read, args=(broker, layer, requests[layer], out)) for layer in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive(), "a layer never finished: the shared forward deadlocked"
    return out


def _expected(layer: int, tokens: np.ndarray, first: int, n: int) -> torch.Tensor:
    return torch.cat(list(_alone(layer, tokens)(first, n)))


def test_the_same_requests_share_one_forward_per_batch_and_get_their_own_rows() -> None:
    tokens = np.random.default_rng(0).integers(0, 64, size=(9, 10))
    requests = [(tokens, 0, 90), (tokens, 23, 41)]
    broker = LockstepForward(RUN, LAYERS, _Checkpoints(), "cpu")
    out = _side_by_side(broker, {layer: requests for layer in LAYERS})
    for layer in LAYERS:
        for index, (toks, first, n) in enumerate(requests):
            assert torch.equal(out[(layer, index)], _expected(layer, toks, first, n)), (layer, index)
    assert broker.forwards == 5 + 3  # batches of 2 contexts: 9 contexts, then contexts 2..6 - once for both layers
    assert broker.streams["shared"] >= 2


def test_layers_asking_for_different_rows_each_get_their_own() -> None:
    rng = np.random.default_rng(1)
    a, b, c = (rng.integers(0, 64, size=(6, 10)) for _ in range(3))
    requests = {0: [(a, 0, 60), (b, 5, 30), (c, 0, 60)], 2: [(a, 0, 60), (c, 0, 60)]}  # layer 2 skips b
    broker = LockstepForward(RUN, LAYERS, _Checkpoints(), "cpu")
    out = _side_by_side(broker, requests)
    assert not any(key[1] == "error" for key in out)
    for layer, asked in requests.items():
        for index, (toks, first, n) in enumerate(asked):
            assert torch.equal(out[(layer, index)], _expected(layer, toks, first, n)), (layer, index)


def test_a_failing_shared_forward_fails_every_reader_instead_of_short_rows() -> None:
    tokens = np.random.default_rng(2).integers(0, 64, size=(4, 10))
    broker = LockstepForward(RUN, LAYERS, _Checkpoints(fail=True), "cpu")
    out = _side_by_side(broker, {layer: [(tokens, 0, 40)] for layer in LAYERS})
    errors = [out.get((layer, "error")) for layer in LAYERS]
    assert all(error is not None for error in errors)
    assert any("cannot be read" in str(error) for error in errors)


def test_a_changed_checkpoint_is_named_before_any_shared_forward() -> None:
    tokens = np.random.default_rng(3).integers(0, 64, size=(2, 10))
    broker = LockstepForward(RUN, LAYERS, _Checkpoints(), "cpu")
    broker.expected_hashes[0] = "recorded-by-notebook-01"
    out = _side_by_side(broker, {layer: [(tokens, 0, 20)] for layer in LAYERS})
    assert "the checkpoint changed" in str(out[(0, "error")]) or "the checkpoint changed" in str(out[(2, "error")])


def test_token_sets_are_told_apart_by_span_or_ids() -> None:
    ids = np.arange(20).reshape(2, 10)
    assert token_key(ids) == token_key(ids.copy()) != token_key(ids + 1)
    plan = type("Plan", (), {"context_length": 10, "contexts": lambda self, stream, span: ids})()
    assert token_key(ContextSpan(plan, ids, (4, 2))) == ("span", 4, 2) != token_key(ContextSpan(plan, ids, (6, 2)))
    assert DETACHED is not None
