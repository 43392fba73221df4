"""The crosscoder's on-disk format: one safetensors file of weights and one ``cfg.json``, and its loader.

A saved crosscoder is a folder holding

* ``crosscoder.safetensors``: ``W_enc [T, d, F]``, ``b_enc [F]``, ``log_threshold [F]`` (τ = exp), ``W_dec [F, T, d]``,
  ``b_dec [T, d]`` and ``input_scale [T]``, all float32; snapshot ``θ`` of the input is ``x^θ / input_scale[θ]``
  (so reconstructions are in normalised units; multiply back by ``input_scale`` for the model's own);
* ``cfg.json``: ``format`` (``"saetrack-crosscoder"``) and ``format_version``, the :class:`CrosscoderShape`
  fields, ``snapshot_steps`` (the training step of each of the ``T`` snapshots, in order), ``hook_name``,
  ``layer``, ``model`` (the checkpoints' source: a Hub repo id or ``"suite"``), and ``training`` (the crosscoder
  config section it was trained with).

:func:`load_crosscoder` checks the format and every tensor's shape against ``cfg.json`` and says what is wrong in one
sentence. The same folder is what :mod:`saetrack.hub` pushes to and pulls from the Hub (``crosscoder/``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from saetrack import store
from saetrack.crosscoder.model import Crosscoder, CrosscoderShape

__all__ = [
    "CROSSCODER_CFG_FILE",
    "CROSSCODER_FORMAT",
    "CROSSCODER_WEIGHTS_FILE",
    "CrosscoderFormatError",
    "SavedCrosscoder",
    "load_crosscoder",
    "save_crosscoder",
]


CROSSCODER_WEIGHTS_FILE = "crosscoder.safetensors"
CROSSCODER_CFG_FILE = "cfg.json"
CROSSCODER_FORMAT = "saetrack-crosscoder"
FORMAT_VERSION = 1


class CrosscoderFormatError(ValueError):
    """A folder does not hold a crosscoder in this format (missing file, other format, wrong shape)."""


@dataclass
class SavedCrosscoder:
    """A loaded crosscoder with what ``cfg.json`` says about it."""

    model: Crosscoder
    snapshot_steps: tuple[int, ...]
    input_scale: np.ndarray
    cfg: dict[str, Any]


def save_crosscoder(
    model: Crosscoder,
    folder: Path,
    *,
    snapshot_steps: tuple[int, ...],
    input_scale: np.ndarray,
    metadata: dict[str, Any],
) -> dict[str, str]:
    """Write ``model`` in the documented format into ``folder``; return ``{file name: sha256}``.

    ``metadata`` adds keys to ``cfg.json`` (``hook_name``, ``layer``, ``model``, ``training``, ...).
    """
    shape = model.shape
    if len(snapshot_steps) != shape.n_snapshots or np.shape(input_scale) != (shape.n_snapshots,):
        raise ValueError(
            f"a crosscoder of {shape.n_snapshots} snapshots needs as many snapshot steps and input scales, got "
            f"{len(snapshot_steps)} and {np.shape(input_scale)}."
        )
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: p.detach().float().cpu().contiguous() for name, p in model.state_dict().items()}
    tensors["input_scale"] = torch.as_tensor(np.asarray(input_scale, dtype=np.float32))
    with store.atomic_path(folder / CROSSCODER_WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp))
    cfg = {
        **metadata,
        "format": CROSSCODER_FORMAT,
        "format_version": FORMAT_VERSION,
        **shape.to_dict(),
        "snapshot_steps": [int(s) for s in snapshot_steps],
    }
    store.write_json(folder / CROSSCODER_CFG_FILE, cfg)
    return {name: store.file_sha256(folder / name) for name in (CROSSCODER_WEIGHTS_FILE, CROSSCODER_CFG_FILE)}


def _expected_shapes(shape: CrosscoderShape) -> dict[str, tuple[int, ...]]:
    t, d, f = shape.n_snapshots, shape.d_model, shape.d_sae
    return {
        "W_enc": (t, d, f),
        "b_enc": (f,),
        "log_threshold": (f,),
        "W_dec": (f, t, d),
        "b_dec": (t, d),
        "input_scale": (t,),
    }


def load_crosscoder(folder: str | Path, device: str = "cpu") -> SavedCrosscoder:
    """Load a crosscoder saved by :func:`save_crosscoder` (or pulled from the Hub) onto ``device``, in eval mode."""
    folder = Path(folder)
    for name in (CROSSCODER_WEIGHTS_FILE, CROSSCODER_CFG_FILE):
        if not (folder / name).is_file():
            raise CrosscoderFormatError(f"{folder} holds no crosscoder: {name} is missing.")
    try:
        cfg = json.loads((folder / CROSSCODER_CFG_FILE).read_text())
    except json.JSONDecodeError as error:
        raise CrosscoderFormatError(f"{folder / CROSSCODER_CFG_FILE} is not valid JSON ({error.msg}).") from None
    if cfg.get("format") != CROSSCODER_FORMAT or cfg.get("format_version") != FORMAT_VERSION:
        raise CrosscoderFormatError(
            f"{folder / CROSSCODER_CFG_FILE} is format {cfg.get('format')!r} version {cfg.get('format_version')!r}; "
            f"this loader reads {CROSSCODER_FORMAT!r} version {FORMAT_VERSION}."
        )
    missing = [key for key in [f.name for f in fields(CrosscoderShape)] + ["snapshot_steps"] if key not in cfg]
    if missing:
        raise CrosscoderFormatError(f"{folder / CROSSCODER_CFG_FILE} lacks the field(s) {missing}.")
    shape = CrosscoderShape(**{f.name: cfg[f.name] for f in fields(CrosscoderShape)})
    tensors = load_file(str(folder / CROSSCODER_WEIGHTS_FILE))
    for name, expected in _expected_shapes(shape).items():
        got = tuple(tensors[name].shape) if name in tensors else None
        if got != expected:
            raise CrosscoderFormatError(
                f"{folder / CROSSCODER_WEIGHTS_FILE}: tensor {name} has shape {got}, cfg.json implies {expected}."
            )
    steps = tuple(int(s) for s in cfg["snapshot_steps"])
    if len(steps) != shape.n_snapshots:
        raise CrosscoderFormatError(f"{folder}: {len(steps)} snapshot steps for {shape.n_snapshots} snapshots.")
    input_scale = tensors.pop("input_scale").numpy().astype(np.float64)
    model = Crosscoder(shape)
    model.load_state_dict(tensors)
    return SavedCrosscoder(model.to(device).eval(), steps, input_scale, cfg)
