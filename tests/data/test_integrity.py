"""Checkpoint integrity: weight hashes independent of file format and sharding, and duplicate checkpoints."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import pytest
import torch

from saetrack.data.integrity import (
    DuplicateCheckpointWarning,
    checkpoint_weights_sha256,
    duplicate_checkpoints,
    format_steps,
    state_dict_sha256,
    warn_on_duplicates,
    weight_files,
)
from tests.data.neox import save_as_bin, tiny_model

pytestmark = pytest.mark.usefixtures("hub_offline", "one_thread")


def test_weights_hash_ignores_format_and_sharding(tmp_path: Path) -> None:
    model = tiny_model(5)
    model.save_pretrained(tmp_path / "safetensors")
    save_as_bin(model, tmp_path / "bin")
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    # transformers 5 stores GPT-NeoX's lm_head under Pythia's historical name ``embed_out``.
    stored_names = {"lm_head.weight": "embed_out.weight"}
    expected = state_dict_sha256((stored_names.get(name, name), t) for name, t in model.state_dict().items())
    for kind in ("safetensors", "bin", "sharded"):
        assert checkpoint_weights_sha256(tmp_path / kind) == expected, kind
    changed = {name: t.clone() for name, t in model.state_dict().items()}
    changed["gpt_neox.final_layer_norm.bias"][0] += 1e-3
    assert state_dict_sha256(changed.items()) != expected
    renamed = {f"x.{name}": t for name, t in model.state_dict().items()}
    assert state_dict_sha256(renamed.items()) != expected
    as_half = {name: t.half() for name, t in model.state_dict().items()}
    assert state_dict_sha256(as_half.items()) != expected


def test_duplicate_checkpoints_groups_equal_hashes() -> None:
    hashes = {0: "a", 1: "b", 2: "a", 4: "c", 8: "b", 16: "a", 32: "d"}
    assert duplicate_checkpoints(hashes) == [[0, 2, 16], [1, 8]]
    assert duplicate_checkpoints({0: "a", 1: "b"}) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_on_duplicates({0: "a", 1: "b"})  # distinct: no warning


def test_state_dict_sha256_by_hand_and_order_free() -> None:
    a, b = torch.arange(3, dtype=torch.float32), torch.tensor([[1, 2]], dtype=torch.int64)
    digest = hashlib.sha256()
    for name, tensor in (("a", a), ("b", b)):  # sorted by name
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.numpy().tobytes())
    assert state_dict_sha256([("b", b), ("a", a)]) == state_dict_sha256([("a", a), ("b", b)]) == digest.hexdigest()
    assert state_dict_sha256([("a", a.reshape(3, 1)), ("b", b)]) != digest.hexdigest()  # the shape counts


def test_weight_files_prefers_safetensors_and_resolves_shards(tmp_path: Path) -> None:
    model = tiny_model(6)
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    shards = weight_files(tmp_path / "sharded")
    assert len(shards) > 1 and shards == sorted(shards)
    assert {p.name for p in shards} == {p.name for p in (tmp_path / "sharded").glob("model-*.safetensors")}
    save_as_bin(model, tmp_path / "bin")
    assert weight_files(tmp_path / "bin") == [tmp_path / "bin" / "pytorch_model.bin"]
    (tmp_path / "bin" / "model.safetensors").write_bytes(b"")  # both formats: safetensors wins
    assert weight_files(tmp_path / "bin") == [tmp_path / "bin" / "model.safetensors"]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"no weight files .*\['config\.json'\]"):
        weight_files(tmp_path / "empty")


def test_warning_names_every_group_and_format_steps_abbreviates() -> None:
    with pytest.warns(DuplicateCheckpointWarning, match=r"steps \[0, 4\] \(sha256 aaaaaaaaaaaa….*steps \[1, 2\]"):
        warn_on_duplicates({0: "a" * 64, 1: "b" * 64, 2: "b" * 64, 4: "a" * 64, 8: "c" * 64})
    assert format_steps([0, 1, 2]) == "[0, 1, 2]"
    assert format_steps(list(range(30)), limit=6) == "[0, 1, 2, ..., 26, 27, 28, 29] (30 steps)"
