"""Integrity of checkpoints.

Weight hashes, and duplicate checkpoints (published step branches that serve another step's weights).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from safetensors import safe_open

__all__ = [
    "BIN_PATTERNS",
    "SAFETENSORS_INDEX",
    "SAFETENSORS_PATTERNS",
    "DuplicateCheckpointWarning",
    "checkpoint_weights_sha256",
    "duplicate_checkpoints",
    "format_steps",
    "state_dict_sha256",
    "warn_on_duplicates",
    "weight_files",
]


#: Weight files in safetensors format (single file or shards with an index); preferred when present.
SAFETENSORS_PATTERNS: tuple[str, ...] = ("model.safetensors", "model-*.safetensors", "model.safetensors.index.json")


#: Weight files in PyTorch pickle format (older Pythia revisions ship only these).
BIN_PATTERNS: tuple[str, ...] = ("pytorch_model.bin", "pytorch_model-*.bin", "pytorch_model.bin.index.json")


SAFETENSORS_INDEX = "model.safetensors.index.json"


_BIN_INDEX = "pytorch_model.bin.index.json"


class DuplicateCheckpointWarning(UserWarning):
    """Two or more checkpoint steps hold identical weights (the source probably serves the wrong files)."""


def state_dict_sha256(tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """SHA-256 over ``(name, tensor)`` pairs in sorted name order: each name, dtype, shape and raw bytes.

    The digest depends only on the tensors, not on how they were stored (file format, sharding, order).
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(tensors, key=lambda item: item[0]):
        header = f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0"
        digest.update(header.encode())
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


def weight_files(folder: str | Path) -> list[Path]:
    """The weight files of the Hugging Face checkpoint in ``folder`` (safetensors preferred, shards resolved)."""
    folder = Path(folder)
    for single, index in (("model.safetensors", SAFETENSORS_INDEX), ("pytorch_model.bin", _BIN_INDEX)):
        if (folder / single).is_file():
            return [folder / single]
        if (folder / index).is_file():
            weight_map = json.loads((folder / index).read_text())["weight_map"]
            return [folder / name for name in sorted(set(weight_map.values()))]
    present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    raise FileNotFoundError(
        f"no weight files (model.safetensors, pytorch_model.bin or a shard index) in {folder}; it holds {present}."
    )


def _iter_file_tensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                yield name, handle.get_tensor(name)
        return
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) pickles cannot be memory-mapped
        state = torch.load(path, map_location="cpu", weights_only=True)
    yield from state.items()


def checkpoint_weights_sha256(folder: str | Path) -> str:
    """:func:`state_dict_sha256` of the tensors stored in the checkpoint folder, as stored (dtype included)."""
    tensors: list[tuple[str, torch.Tensor]] = []
    for path in weight_files(folder):
        tensors.extend(_iter_file_tensors(path))
    names = [name for name, _ in tensors]
    if len(names) != len(set(names)):
        raise ValueError(f"checkpoint {folder} stores some tensor names twice across its weight files.")
    return state_dict_sha256(tensors)


def duplicate_checkpoints(hashes: Mapping[int, str]) -> list[list[int]]:
    """Groups (ascending, each of two or more steps) of checkpoint steps whose weight hashes are identical."""
    by_hash: dict[str, list[int]] = {}
    for step, digest in hashes.items():
        by_hash.setdefault(digest, []).append(step)
    return sorted(sorted(steps) for steps in by_hash.values() if len(steps) > 1)


def warn_on_duplicates(hashes: Mapping[int, str]) -> None:
    """Issue one :class:`DuplicateCheckpointWarning` naming every group of steps with identical weights."""
    groups = duplicate_checkpoints(hashes)
    if not groups:
        return
    described = "; ".join(f"steps {group} (sha256 {hashes[group[0]][:12]}…)" for group in groups)
    warnings.warn(
        DuplicateCheckpointWarning(
            f"checkpoints with identical weights: {described}. Different training steps should differ; "
            "published Pythia step branches are known to serve the final checkpoint's weights instead of their "
            "own (e.g. 86 of 154 for pythia-2.8b), so check the source before analysing these steps."
        ),
        stacklevel=2,
    )


def format_steps(steps: Sequence[int], limit: int = 24) -> str:
    """``steps`` as a list, abbreviated in the middle when longer than ``limit``."""
    if len(steps) <= limit:
        return str(list(steps))
    head = ", ".join(str(s) for s in steps[: limit // 2])
    tail = ", ".join(str(s) for s in steps[-4:])
    return f"[{head}, ..., {tail}] ({len(steps)} steps)"
