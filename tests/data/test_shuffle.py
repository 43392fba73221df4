"""The training buffer: block shuffle on known inputs, equality with the global shuffle when one block, the same
batches as the list-and-cat implementation it replaced (kept below), no device->host read per batch, nothing made
off the target device, and pinned non-blocking uploads to CUDA."""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from saetrack.data.shuffle import (
    block_shuffled_batches,
    blocks_of,
    copy_rows,
    full_batches,
    shuffle_peak_bytes,
    to_device,
)
from saetrack.sae.training import shuffled_batches

#: Tensor methods that read a value back to the host (a device sync on CUDA).
SYNCS = ("item", "__bool__", "__float__", "__int__", "tolist", "cpu", "numpy")


def _chunks(x: torch.Tensor, size: int):
    return lambda: iter(x.split(size))


def reference_block_shuffled_batches(
    rows: Callable[[], Iterator[torch.Tensor]],
    batch_size: int,
    *,
    buffer_rows: int,
    seed: int,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> Iterator[torch.Tensor]:
    """The implementation before the preallocated buffer (frozen copy): blocks cat from chunk lists, permuted whole."""
    rng = np.random.default_rng(seed)
    leftover: torch.Tensor | None = None
    while True:
        n_seen = 0
        for block in blocks_of(rows(), buffer_rows):
            n_seen += block.shape[0]
            order = torch.as_tensor(rng.permutation(block.shape[0]), device=block.device)
            batches, leftover = full_batches(block[order].to(device=device, dtype=dtype), leftover, batch_size)
            yield from batches
        if n_seen == 0:
            raise ValueError("the link has no rows to train on (its row stream is empty).")


def test_blocks_of_regroups_rows_in_order_whatever_the_chunking() -> None:
    x = torch.arange(23, dtype=torch.float32).reshape(23, 1)
    blocks = list(blocks_of(iter(x.split(4)), 10))
    assert [len(b) for b in blocks] == [10, 10, 3]
    assert torch.equal(torch.cat(blocks), x)
    with pytest.raises(ValueError, match="block_rows = 0"):
        list(blocks_of(iter(x.split(4)), 0))


def test_one_pass_uses_every_row_once_and_blocks_do_not_mix() -> None:
    x = torch.arange(40, dtype=torch.float32).reshape(40, 1)
    batches = list(itertools.islice(block_shuffled_batches(_chunks(x, 7), 5, buffer_rows=10, seed=3), 8))
    rows = torch.cat(batches).reshape(-1)
    assert sorted(rows.tolist()) == list(range(40))
    for block in range(4):  # rows 10b..10b+9 come out together, in the b-th group of 10
        assert sorted(rows[10 * block : 10 * block + 10].tolist()) == list(range(10 * block, 10 * block + 10))
    assert rows.tolist() != list(range(40))


def test_order_depends_on_rows_seed_and_buffer_not_on_chunking() -> None:
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    a = list(itertools.islice(block_shuffled_batches(_chunks(x, 5), 8, buffer_rows=16, seed=1), 8))
    b = list(itertools.islice(block_shuffled_batches(_chunks(x, 64), 8, buffer_rows=16, seed=1), 8))
    c = list(itertools.islice(block_shuffled_batches(_chunks(x, 5), 8, buffer_rows=16, seed=2), 8))
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a, c, strict=True))


def test_one_block_is_the_global_shuffle_of_shuffled_batches_across_passes() -> None:
    x = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    ours = block_shuffled_batches(_chunks(torch.from_numpy(x), 9), 16, buffer_rows=50, seed=7)
    reference = shuffled_batches(x, 16, seed=7)
    for _ in range(10):  # past the end of the first pass: leftovers and the second permutation agree too
        assert torch.equal(next(ours), next(reference))


@pytest.mark.parametrize(
    ("n_rows", "chunk", "batch_size", "buffer_rows", "source_dtype", "dtype"),
    [
        (100, 7, 8, 30, torch.float32, torch.float32),  # blocks straddled by batches, a short last block
        (96, 96, 16, 32, torch.float32, torch.float32),  # everything divides
        (50, 3, 16, 5, torch.float32, torch.float32),  # blocks smaller than a batch
        (61, 13, 10, 61, torch.float64, torch.float32),  # one block, cast on the way
        (77, 11, 9, 20, torch.float32, torch.bfloat16),
        (40, 40, 64, 100, torch.float32, torch.float32),  # the link shorter than a batch and than the buffer
    ],
)
def test_batches_are_bit_identical_to_the_list_and_cat_implementation(
    n_rows: int, chunk: int, batch_size: int, buffer_rows: int, source_dtype: torch.dtype, dtype: torch.dtype
) -> None:
    x = torch.randn(n_rows, 6, generator=torch.Generator().manual_seed(n_rows), dtype=source_dtype)
    kwargs: dict[str, Any] = dict(buffer_rows=buffer_rows, seed=11, dtype=dtype)
    n = 3 * -(-n_rows // batch_size) + 2  # three passes and more: leftovers across passes too
    ours = list(itertools.islice(block_shuffled_batches(_chunks(x, chunk), batch_size, **kwargs), n))
    old = list(itertools.islice(reference_block_shuffled_batches(_chunks(x, chunk), batch_size, **kwargs), n))
    for a, b in zip(ours, old, strict=True):  # kept batches stay valid: none is a view of the reused buffer
        assert a.dtype == b.dtype == dtype and a.shape == (batch_size, 6) and a.is_contiguous()
        assert torch.equal(a, b)


def test_full_batches_carries_the_leftover_rows() -> None:
    x = torch.arange(7, dtype=torch.float32).reshape(7, 1)
    batches, leftover = full_batches(x, None, 3)
    assert [b.reshape(-1).tolist() for b in batches] == [[0, 1, 2], [3, 4, 5]] and leftover.reshape(-1).tolist() == [6]
    batches, leftover = full_batches(x[:2], leftover, 3)
    assert [b.reshape(-1).tolist() for b in batches] == [[6, 0, 1]] and leftover is None


def test_an_empty_link_and_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="no rows"):
        next(block_shuffled_batches(lambda: iter(()), 4, buffer_rows=8, seed=0))
    with pytest.raises(ValueError, match="buffer_rows = 0"):
        next(block_shuffled_batches(_chunks(torch.ones(4, 2), 2), 4, buffer_rows=0, seed=0))
    with pytest.raises(ValueError, match="batch_size = 0"):
        next(block_shuffled_batches(_chunks(torch.ones(4, 2), 2), 0, buffer_rows=4, seed=0))


def count_syncs(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    """Wrap every host-read method of ``torch.Tensor`` (:data:`SYNCS`) to count its calls; returns the counter."""
    counts: collections.Counter[str] = collections.Counter()
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *args: Any, _original: Any = original, _name: str = name, **kw: Any) -> Any:
            counts[_name] += 1
            return _original(self, *args, **kw)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return counts


def test_counting_wrappers_see_a_host_read() -> None:
    with pytest.MonkeyPatch.context() as patch:
        counts = count_syncs(patch)
        _ = torch.ones(2).sum().item(), bool(torch.ones(())), torch.ones(2).tolist()
    assert counts == {"item": 1, "__bool__": 1, "tolist": 1}


def test_no_batch_reads_anything_back_to_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(203, 5, generator=torch.Generator().manual_seed(0))
    batches = block_shuffled_batches(_chunks(x, 17), 8, buffer_rows=50, seed=4)
    next(batches)  # warm-up: the buffer is allocated
    counts = count_syncs(monkeypatch)
    for _ in range(60):  # two passes and more: refills, straddling batches, a short block, a new pass
        next(batches)
    assert sum(counts.values()) == 0, counts


#: The one operator allowed to return a host tensor: ``torch.from_numpy`` wrapping a host array (the permutation
#: drawn by numpy, token ids) - no allocation, no copy, before it is uploaded.
HOST_WRAP = "aten.lift_fresh.default"


class DeviceRecorder(TorchDispatchMode):
    """Records ``(operator, device)`` of every tensor an operator returns."""

    def __init__(self) -> None:
        super().__init__()
        self.devices: collections.Counter[tuple[str, str]] = collections.Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.devices[str(func), tensor.device.type] += 1
        return out

    def off_device(self, device: str) -> set[str]:
        """Operators that returned a tensor off ``device``, other than wrapping a host array (:data:`HOST_WRAP`)."""
        return {op for op, where in self.devices if where != device and op != HOST_WRAP}


def test_on_the_meta_device_nothing_is_made_elsewhere() -> None:
    x = torch.empty(90, 7, device="meta")
    with DeviceRecorder() as recorder:
        batches = list(
            itertools.islice(block_shuffled_batches(_chunks(x, 13), 8, buffer_rows=40, seed=0, device="meta"), 30)
        )
    assert all(b.device.type == "meta" and b.shape == (8, 7) for b in batches)
    assert recorder.off_device("meta") == set()
    assert sum(n for (_, where), n in recorder.devices.items() if where == "meta") > 30


def test_host_rows_bound_for_cuda_are_pinned_and_uploaded_without_blocking(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, Any]] = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append(("pin", None)) or self)
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **kw: calls.append(("to", kw)) or self)
    monkeypatch.setattr(torch.Tensor, "copy_", lambda self, src, **kw: calls.append(("copy_", kw)) or self)
    host = torch.ones(3, 2)
    to_device(host, "cuda", torch.float32)
    assert calls == [
        ("pin", None),
        ("to", {"device": torch.device("cuda"), "dtype": torch.float32, "non_blocking": True}),
    ]
    calls.clear()
    to_device(host, "cpu")
    to_device(torch.empty(3, device="meta"), "cuda")  # not a host tensor: a plain move
    plain = [("to", {"device": torch.device(where), "dtype": None}) for where in ("cpu", "cuda")]
    assert calls == plain
    calls.clear()
    monkeypatch.setattr(
        torch.Tensor, "device", property(lambda self: torch.device("cuda" if self.shape[0] == 4 else "cpu"))
    )
    copy_rows(torch.empty(4, 2), host)  # into a (pretend) CUDA buffer
    copy_rows(torch.empty(3, 2), host)  # host to host
    assert calls == [("pin", None), ("copy_", {"non_blocking": True}), ("copy_", {})]


def test_peak_formula() -> None:
    assert shuffle_peak_bytes(1000, 16, torch.float32, 100, 10) == 1000 * (64 + 8) + 100 * 64 + 3 * 10 * 64
    assert shuffle_peak_bytes(1000, 16, torch.bfloat16) == 1000 * (32 + 8)
