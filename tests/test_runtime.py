"""Seeding, the device choice, the run a notebook works on, and scoped torch thread counts."""

from __future__ import annotations

import json
import random
import resource
from pathlib import Path

import numpy as np
import pytest
import torch

from saetrack import paths
from saetrack.config import ConfigError, get_preset
from saetrack.runtime import keep_freed_memory, resolve_device, resolve_run, seed_everything, torch_threads


def test_seed_everything_seeds_python_numpy_and_torch() -> None:
    seed_everything(5)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(5)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
    seed_everything(2**32 + 5)  # NumPy takes the seed modulo 2**32
    assert np.random.rand() == first[1]


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(ValueError, match=r"device='cuda:1' was asked for but no CUDA GPU is visible"):
        resolve_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(ValueError, match=r"device='cuda:2' is not there: this machine has 2 CUDA GPU"):
        resolve_device("cuda:2")
    with pytest.raises(ValueError, match=r"device='tpu' is invalid"):
        resolve_device("tpu")


def test_resolve_run_from_a_preset_or_a_config_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(paths.RUNS_ENV, str(tmp_path / "runs"))
    run, folder = resolve_run("smoke")
    assert run == get_preset("smoke") and folder == tmp_path / "runs" / "smoke" and folder.is_dir()
    changed = get_preset("smoke", {"seed": 3})
    run, folder = resolve_run("nano", json.dumps(changed.to_dict()), str(tmp_path / "mine"))
    assert run == changed and folder == tmp_path / "mine"  # the config JSON wins over the preset name
    drawn = torch.rand(1).item()
    torch.manual_seed(3)
    assert drawn == torch.rand(1).item()  # the generators were seeded with the run's seed
    bad = {**changed.to_dict(), "seed": -1}
    with pytest.raises(ConfigError, match=r"run\.seed = -1"):
        resolve_run("smoke", json.dumps(bad), str(tmp_path / "bad"))


def test_torch_threads_is_scoped() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before  # restored after an error too
    with pytest.raises(ValueError, match="threads = 0 is invalid"):
        with torch_threads(0):
            pass


def test_keep_freed_memory_stops_page_faults_on_reallocation() -> None:
    assert keep_freed_memory()  # this project's machines run glibc

    def faults_of_reallocating() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            block = torch.ones(4 * 2**20)  # 16 MiB, below the fixed 32 MiB mmap threshold
            del block
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults_of_reallocating()  # the heap grows once
    assert faults_of_reallocating() < 20 * 4096 // 4  # re-touching freed pages: far fewer than 4096 per 16 MiB
