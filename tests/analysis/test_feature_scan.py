"""saetrack.analysis.feature_scan: the one-pass device reduction equals the old two-pass host reduction bit for bit
(ties included), creates nothing off the activations' device (meta) and copies back once per scan."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from saetrack.analysis import feature_scan as fs
from saetrack.analysis.features import feature_statistics, top_k_datapoints
from saetrack.sae.weights import SAEWeights, feature_activations


# ---- frozen copy of the old host reduction (saetrack.analysis.features before the device scan) -----------------
def _old_statistics(weights: SAEWeights, x: np.ndarray, batch_size: int) -> tuple[np.ndarray, ...]:
    n_features = weights.W_enc.shape[1]
    count = torch.zeros(n_features, dtype=torch.float64)
    total = torch.zeros(n_features, dtype=torch.float64)
    maximum = torch.zeros(n_features, dtype=torch.float64)
    for start in range(0, x.shape[0], batch_size):
        acts = feature_activations(weights, np.asarray(x[start : start + batch_size])).cpu().double()
        count += (acts > 0).sum(dim=0)
        total += acts.sum(dim=0)
        maximum = torch.maximum(maximum, acts.max(dim=0).values)
    n = x.shape[0]
    return (count / n).numpy(), maximum.numpy(), (total / n).numpy()


def _old_top_k(weights: SAEWeights, x: np.ndarray, k: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    cols = torch.arange(weights.W_enc.shape[1])
    sub = SAEWeights(weights.W_enc[:, cols], weights.b_enc[cols], weights.W_dec[cols], weights.b_dec)
    best_val = torch.empty(len(cols), 0, dtype=torch.float32)
    best_idx = torch.empty(len(cols), 0, dtype=torch.int64)
    for start in range(0, x.shape[0], batch_size):
        acts = feature_activations(sub, np.asarray(x[start : start + batch_size])).cpu().float().T
        rows = torch.arange(start, start + acts.shape[1], dtype=torch.int64).expand(len(cols), -1)
        cand_val = torch.cat([best_val, acts], dim=1)
        cand_idx = torch.cat([best_idx, rows], dim=1)
        best_val, pos = torch.topk(cand_val, min(k, cand_val.shape[1]), dim=1, largest=True, sorted=True)
        best_idx = torch.gather(cand_idx, 1, pos)
    return best_val.numpy(), best_idx.numpy()


# -----------------------------------------------------------------------------------------------------------------
def _problem(n: int, d_in: int, d_sae: int, seed: int) -> tuple[SAEWeights, np.ndarray]:
    """ReLU codes that are mostly exactly zero (ties at 0) with repeated rows (ties among positive values)."""
    g = torch.Generator().manual_seed(seed)
    weights = SAEWeights(
        W_enc=torch.randn(d_in, d_sae, generator=g),
        b_enc=torch.randn(d_sae, generator=g) - 2.5,
        W_dec=torch.randn(d_sae, d_in, generator=g),
        b_dec=torch.randn(d_in, generator=g) * 0.1,
    )
    weights.b_enc[: d_sae // 10] = -40.0  # dead: every row ties at 0
    weights.b_enc[d_sae // 10 : d_sae // 5] -= 6.0  # rare: fewer active rows than k
    x = torch.randn(n, d_in, generator=g).numpy()
    x[::9] = 2.5 * x[0]  # identical rows -> identical positive activations (like every context's first token)
    x[5::13] = x[5]
    return weights, x.astype(np.float32)


@pytest.mark.parametrize(("batch_size", "k"), [(97, 25), (300, 5), (1000, 25), (1000, 1)])
def test_one_pass_equals_the_old_two_pass_host_reduction_with_ties(batch_size: int, k: int) -> None:
    weights, x = _problem(n=1000, d_in=12, d_sae=150, seed=batch_size + k)
    stats, values, indices = fs.scan_features(weights, x, k=k, batch_size=batch_size)
    density, maximum, mean = _old_statistics(weights, x, batch_size)
    old_values, old_indices = _old_top_k(weights, x, k, batch_size)
    acts = feature_activations(weights, x).numpy()
    assert (acts == 0).mean() > 0.6, "the data must have many exact zeros"
    kth = old_values[:, -1]
    boundary_ties = (acts == kth[None, :]).sum(axis=0) > (old_values == kth[:, None]).sum(axis=1)
    assert (boundary_ties & (kth == 0)).any(), "ties at 0 must decide which rows enter the top-k"
    assert (boundary_ties & (kth > 0)).any(), "ties among positive values must decide too"
    np.testing.assert_array_equal(stats.density, density)
    np.testing.assert_array_equal(stats.max_activation, maximum)
    np.testing.assert_array_equal(stats.mean_activation, mean)  # float64 sums: same batches, same rounding
    np.testing.assert_array_equal(values, old_values)
    np.testing.assert_array_equal(indices, old_indices)  # ties broken exactly as before
    assert values.dtype == np.float32 and indices.dtype == np.int64 and stats.n_rows == 1000
    np.testing.assert_array_equal(feature_statistics(weights, x, batch_size).density, density)
    np.testing.assert_array_equal(top_k_datapoints(weights, x, k, batch_size)[1], old_indices)


def test_top_k_of_a_feature_subset_equals_the_old_reduction() -> None:
    weights, x = _problem(n=500, d_in=8, d_sae=60, seed=3)
    cols = np.array([59, 0, 7, 7, 31])
    sub = SAEWeights(weights.W_enc[:, cols], weights.b_enc[cols], weights.W_dec[cols], weights.b_dec)
    values, indices = top_k_datapoints(weights, x, k=6, batch_size=64, features=cols)
    old_values, old_indices = _old_top_k(sub, x, 6, 64)
    np.testing.assert_array_equal(values, old_values)
    np.testing.assert_array_equal(indices, old_indices)


def test_scan_accepts_a_tensor_and_rejects_bad_k() -> None:
    weights, x = _problem(n=200, d_in=6, d_sae=20, seed=4)
    from_array = fs.scan_features(weights, x, k=4, batch_size=64)
    from_tensor = fs.scan_features(weights, torch.from_numpy(x), k=4, batch_size=64)
    np.testing.assert_array_equal(from_array[2], from_tensor[2])
    np.testing.assert_array_equal(from_array[0].mean_activation, from_tensor[0].mean_activation)
    with pytest.raises(ValueError, match="k must be in"):
        fs.scan_features(weights, x, k=201)
    with pytest.raises(ValueError, match="k must be in"):
        top_k_datapoints(weights, x, k=0)


class _Devices(TorchDispatchMode):
    """Records the device of every tensor any aten op returns (factories included)."""

    def __init__(self) -> None:
        super().__init__()
        self.devices: set[str] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self.devices.add(str(t.device))
        return out


def test_statistics_and_top_k_on_meta_create_no_tensor_off_the_device() -> None:
    meta = torch.device("meta")
    weights = SAEWeights(
        W_enc=torch.empty(16, 64, device=meta),
        b_enc=torch.empty(64, device=meta),
        W_dec=torch.empty(64, 16, device=meta),
        b_dec=torch.empty(16, device=meta),
    )
    x = torch.empty(1000, 16, device=meta)  # activations that live on the device (a fake encoder's input)
    with _Devices() as seen:
        scan = fs.scan_device(weights, x, k=25, batch_size=256)
    assert seen.devices == {"meta"}
    assert scan.n_rows == 1000
    shapes = [(64,), (64,), (64,), (64, 25), (64, 25)]
    assert [tuple(t.shape) for t in scan.device_tensors()] == shapes
    assert {t.device for t in scan.device_tensors()} == {meta}


def test_one_copy_back_per_scan_whatever_the_number_of_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    weights, x = _problem(n=600, d_in=8, d_sae=40, seed=5)
    calls = {"cpu": 0, "item": 0, "tolist": 0}
    for name in calls:
        original = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *a: Any, _name: str = name, _f: Any = original, **kw: Any) -> Any:
            calls[_name] += 1
            return _f(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, counted)
    for batch_size, expected_old in ((600, 2), (50, 24)):
        calls.update(cpu=0, item=0, tolist=0)
        fs.scan_features(weights, x, k=5, batch_size=batch_size)
        assert calls == {"cpu": 1, "item": 0, "tolist": 0}
        calls.update(cpu=0)
        _old_statistics(weights, x, batch_size), _old_top_k(weights, x, 5, batch_size)
        assert calls["cpu"] == expected_old  # the old reduction copied every batch, twice


def test_host_bytes_formula() -> None:
    got = fs.scan_host_bytes(n_rows=1000, d_in=16, d_sae=64, k=25)
    assert got == {"h2d": 64_000, "d2h": 64 * 324, "old_h2d": 128_000, "old_d2h": 512_000}
    weights, x = _problem(n=100, d_in=4, d_sae=64, seed=6)
    scan = fs.scan_device(weights, x, k=25, batch_size=30)
    assert sum(t.numel() * t.element_size() for t in scan.device_tensors()) == fs.scan_host_bytes(100, 4, 64, 25)["d2h"]


def test_a_set_that_gives_its_rows_on_the_device_is_read_that_way() -> None:
    weights, x = _problem(n=300, d_in=8, d_sae=40, seed=7)

    class DeviceRows:
        """A streamed set's interface: ``device_rows`` (rows as a tensor) and a host view that must not be read."""

        shape, ndim, asked = x.shape, 2, []

        def device_rows(self, start: int, stop: int) -> torch.Tensor:
            self.asked.append((start, stop))
            return torch.as_tensor(x[start:stop])

        def __getitem__(self, key: Any) -> np.ndarray:
            raise AssertionError("the host view was read")

    streamed = DeviceRows()
    got = fs.scan_features(weights, streamed, k=5, batch_size=128)
    expected = fs.scan_features(weights, x, k=5, batch_size=128)
    assert streamed.asked == [(0, 128), (128, 256), (256, 384)]
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[2], expected[2])
    np.testing.assert_array_equal(got[0].density, expected[0].density)
