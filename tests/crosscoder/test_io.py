"""The crosscoder's on-disk format: an exact round trip, and one-sentence errors for what is not a crosscoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from saetrack import store
from saetrack.crosscoder.io import (
    CROSSCODER_CFG_FILE,
    CROSSCODER_FORMAT,
    CROSSCODER_WEIGHTS_FILE,
    CrosscoderFormatError,
    load_crosscoder,
    save_crosscoder,
)
from saetrack.crosscoder.model import Crosscoder, CrosscoderShape

STEPS = (0, 4, 16)
SCALE = np.array([0.5, 2.0, 7.25])


def _saved(folder: Path) -> Crosscoder:
    model = Crosscoder(CrosscoderShape(3, 4, 6, bandwidth=0.1, initial_threshold=0.2), torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in (model.b_enc, model.b_dec, model.log_threshold):
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    metadata = {"hook_name": "blocks.1.hook_resid_pre", "layer": 1, "model": "suite", "training": {"epochs": 2}}
    hashes = save_crosscoder(model, folder, snapshot_steps=STEPS, input_scale=SCALE, metadata=metadata)
    assert hashes == {name: store.file_sha256(folder / name) for name in (CROSSCODER_WEIGHTS_FILE, CROSSCODER_CFG_FILE)}
    return model


def _one_sentence(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert "\n" not in message and message.endswith(".")
    return message


def test_round_trip_is_identical(tmp_path: Path) -> None:
    model = _saved(tmp_path)
    loaded = load_crosscoder(tmp_path)
    assert loaded.model.shape == model.shape and not loaded.model.training
    expected, got = model.state_dict(), loaded.model.state_dict()
    assert set(expected) == set(got) == {"W_enc", "b_enc", "W_dec", "b_dec", "log_threshold"}
    assert all(torch.equal(expected[name], got[name]) for name in expected)
    assert loaded.snapshot_steps == STEPS
    np.testing.assert_array_equal(loaded.input_scale, SCALE)
    assert loaded.cfg["format"] == CROSSCODER_FORMAT and loaded.cfg["hook_name"] == "blocks.1.hook_resid_pre"
    assert loaded.cfg["training"] == {"epochs": 2} and loaded.cfg["d_sae"] == 6 and loaded.cfg["bandwidth"] == 0.1
    x = torch.randn(5, 3, 4)
    assert torch.equal(loaded.model(x), model(x))
    assert load_file(str(tmp_path / CROSSCODER_WEIGHTS_FILE))["input_scale"].dtype == torch.float32


def test_save_rejects_mismatched_snapshot_metadata(tmp_path: Path) -> None:
    model = Crosscoder(CrosscoderShape(3, 4, 6))
    with pytest.raises(
        ValueError, match=r"3 snapshots needs as many snapshot steps and input scales, got 2 and \(3,\)"
    ):
        save_crosscoder(model, tmp_path, snapshot_steps=(0, 1), input_scale=SCALE, metadata={})


def test_missing_file_is_a_format_error(tmp_path: Path) -> None:
    with pytest.raises(CrosscoderFormatError, match=rf"holds no crosscoder: {CROSSCODER_WEIGHTS_FILE} is missing") as e:
        load_crosscoder(tmp_path)
    _one_sentence(e)
    _saved(tmp_path)
    (tmp_path / CROSSCODER_CFG_FILE).unlink()
    with pytest.raises(CrosscoderFormatError, match=rf"{CROSSCODER_CFG_FILE} is missing"):
        load_crosscoder(tmp_path)


@pytest.mark.parametrize(("key", "value"), [("format", "saelens"), ("format_version", 2)])
def test_other_format_is_a_format_error(tmp_path: Path, key: str, value: object) -> None:
    _saved(tmp_path)
    path = tmp_path / CROSSCODER_CFG_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), key: value}))
    with pytest.raises(CrosscoderFormatError, match=r"this loader reads 'saetrack-crosscoder' version 1") as e:
        load_crosscoder(tmp_path)
    _one_sentence(e)


def test_wrong_tensor_shape_is_a_format_error(tmp_path: Path) -> None:
    _saved(tmp_path)
    weights = tmp_path / CROSSCODER_WEIGHTS_FILE
    tensors = load_file(str(weights))
    save_file({**tensors, "W_dec": torch.zeros(6, 2, 4)}, str(weights))
    with pytest.raises(
        CrosscoderFormatError, match=r"tensor W_dec has shape \(6, 2, 4\), cfg.json implies \(6, 3, 4\)"
    ):
        load_crosscoder(tmp_path)
    save_file({k: v for k, v in tensors.items() if k != "input_scale"}, str(weights))
    with pytest.raises(CrosscoderFormatError, match=r"tensor input_scale has shape None, cfg.json implies \(3,\)") as e:
        load_crosscoder(tmp_path)
    _one_sentence(e)


def test_wrong_number_of_snapshot_steps_is_a_format_error(tmp_path: Path) -> None:
    _saved(tmp_path)
    path = tmp_path / CROSSCODER_CFG_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), "snapshot_steps": [0, 4]}))
    with pytest.raises(CrosscoderFormatError, match=r"2 snapshot steps for 3 snapshots\.") as e:
        load_crosscoder(tmp_path)
    _one_sentence(e)


def test_broken_or_incomplete_cfg_is_a_format_error(tmp_path: Path) -> None:
    _saved(tmp_path)
    path = tmp_path / CROSSCODER_CFG_FILE
    cfg = json.loads(path.read_text())
    path.write_text("{not json")
    with pytest.raises(CrosscoderFormatError, match=r"cfg\.json is not valid JSON \(.*\)\.") as e:
        load_crosscoder(tmp_path)
    _one_sentence(e)
    path.write_text(json.dumps({k: v for k, v in cfg.items() if k not in ("d_sae", "snapshot_steps")}))
    with pytest.raises(CrosscoderFormatError, match=r"lacks the field\(s\) \['d_sae', 'snapshot_steps'\]\.") as e:
        load_crosscoder(tmp_path)
    _one_sentence(e)
