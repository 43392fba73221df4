"""Checkpoints appearing in a training run's folder: steps from folder names, whole weight files, and a checkpoint
handed over once, only when complete and settled — never while it is being copied in."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from saetrack.live.checkpoints import (
    CheckpointWatch,
    folder_step,
    incomplete_reasons,
    verify_unchanged,
    weight_file_problem,
)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _weights(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(64, 32, generator=generator), "b.bias": torch.randn(32, generator=generator)}


def _checkpoint(folder: Path, seed: int = 0) -> Path:
    """A complete Hugging Face checkpoint folder: config.json and model.safetensors."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    save_file(_weights(seed), str(folder / "model.safetensors"))
    return folder


def test_steps_come_from_the_folder_names_of_both_layouts() -> None:
    assert [folder_step(n) for n in ("step0", "step1000", "checkpoint-250", "stepx", "checkpoint_3", "tokenizer")] == [
        0, 1000, 250, None, None, None,
    ]  # fmt: skip


def test_a_truncated_safetensors_or_zip_file_is_not_whole(tmp_path: Path) -> None:
    full = _checkpoint(tmp_path / "full") / "model.safetensors"
    assert weight_file_problem(full) is None
    data = full.read_bytes()
    for cut in (4, 20, len(data) // 2, len(data) - 1):
        partial = tmp_path / f"cut{cut}.safetensors"
        partial.write_bytes(data[:cut])
        assert weight_file_problem(partial) is not None, cut
    torch.save(_weights(), tmp_path / "pytorch_model.bin")
    whole = tmp_path / "pytorch_model.bin"
    assert zipfile.is_zipfile(whole) and weight_file_problem(whole) is None
    blob = (tmp_path / "pytorch_model.bin").read_bytes()
    (tmp_path / "half.bin").write_bytes(blob[: len(blob) // 2])
    assert "not a complete zip" in weight_file_problem(tmp_path / "half.bin")
    assert "missing" in weight_file_problem(tmp_path / "absent.safetensors")


def test_a_sharded_checkpoint_needs_every_shard_its_index_names(tmp_path: Path) -> None:
    folder = tmp_path / "step5"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    shards = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    index = {"weight_map": {"a.weight": shards[0], "b.bias": shards[1]}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    save_file({"a.weight": torch.zeros(2)}, str(folder / "model-00001-of-00002.safetensors"))
    assert incomplete_reasons(folder) == ["model-00002-of-00002.safetensors is missing"]
    save_file({"b.bias": torch.zeros(2)}, str(folder / "model-00002-of-00002.safetensors"))
    assert incomplete_reasons(folder) == []
    (folder / "model.safetensors.index.json").write_text('{"weight_map": {')  # the index itself half-written
    assert "not complete JSON" in incomplete_reasons(folder)[0]


def test_a_checkpoint_is_handed_over_once_when_whole_and_settled(tmp_path: Path) -> None:
    clock = Clock()
    watch = CheckpointWatch(tmp_path, settle_seconds=5.0, clock=clock)
    assert watch.poll() == []
    _checkpoint(tmp_path / "checkpoint-100")
    assert watch.poll() == [] and "being written" in watch.pending[100]  # first sight
    clock.now = 3.0
    assert watch.poll() == [] and "waiting 5 s" in watch.pending[100]  # whole, not yet settled
    clock.now = 5.0
    (ready,) = watch.poll()
    assert ready.step == 100 and ready.folder == tmp_path / "checkpoint-100"
    assert set(ready.files) == {"config.json", "model.safetensors"} and 100 not in watch.pending
    clock.now = 100.0
    assert watch.poll() == []  # never twice
    verify_unchanged(ready)
    save_file(_weights(seed=1), str(tmp_path / "checkpoint-100" / "model.safetensors"))  # rewritten afterwards
    with pytest.raises(RuntimeError, match="changed after it was read"):
        verify_unchanged(ready)


def test_a_checkpoint_copied_in_slowly_is_never_read_before_it_is_complete(tmp_path: Path) -> None:
    source = _checkpoint(tmp_path / "source", seed=2)
    data = (source / "model.safetensors").read_bytes()
    clock = Clock()
    watch = CheckpointWatch(tmp_path / "run", settle_seconds=2.0, clock=clock)
    target = tmp_path / "run" / "step7"
    target.mkdir(parents=True)
    (target / "config.json").write_text((source / "config.json").read_text())
    with open(target / "model.safetensors", "wb") as handle:
        for start in range(0, len(data), 1000):  # a slow copy: one chunk per poll, the clock running on
            handle.write(data[start : start + 1000])
            handle.flush()
            clock.now += 10.0  # however long between chunks, a partial file is never whole
            assert watch.poll() == [], start
    clock.now += 1.0
    assert watch.poll() == []  # complete now, but seen changing at the last look
    clock.now += 2.0
    (ready,) = watch.poll()
    assert (target / "model.safetensors").read_bytes() == data and ready.step == 7


def test_several_checkpoints_come_in_step_order_and_a_step_in_two_layouts_is_refused(tmp_path: Path) -> None:
    clock = Clock()
    watch = CheckpointWatch(tmp_path, settle_seconds=1.0, clock=clock)
    for step in (300, 20, 1000):
        _checkpoint(tmp_path / f"step{step}", seed=step)
    (tmp_path / "tokenizer").mkdir()
    watch.poll()
    clock.now = 1.0
    assert [r.step for r in watch.poll()] == [20, 300, 1000]
    _checkpoint(tmp_path / "checkpoint-20")
    with pytest.raises(ValueError, match="two checkpoint folders"):
        watch.poll()
