"""Checkpoints appearing in a folder that a training run writes to: their steps, and when each is complete.

SAE-Track can train link k as soon as checkpoint k exists (Sec. 3.2). A checkpoint read while it is still being written
gives a wrong link silently, so a checkpoint counts as **ready** only when all of this holds:

1. it is a checkpoint folder of a known layout: ``step{N}/`` (this project's suites, Pythia's revisions) or
   ``checkpoint-{N}/`` (the Hugging Face Trainer's), holding a ``config.json``;
2. every weight file is present (``model.safetensors``, ``pytorch_model.bin``, or every shard a
   ``*.index.json`` names) and **whole**: a safetensors file is exactly 8 bytes + its header + the data its header
   declares; a torch ``.bin`` is a zip archive whose central directory, written last, is there;
3. none of its files changed size or modification time for ``settle_seconds`` (the writer has stopped).

Its files' SHA-256 are then recorded (:class:`ReadyCheckpoint`), so that a checkpoint changed after it was read is
caught (:func:`verify_unchanged`) instead of silently mixing two versions of a link's input.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CHECKPOINT_FOLDER",
    "CheckpointWatch",
    "ReadyCheckpoint",
    "folder_step",
    "incomplete_reasons",
    "verify_unchanged",
    "weight_file_problem",
]

#: Checkpoint folder names and the step they carry: ``step{N}`` and the HF Trainer's ``checkpoint-{N}``.
CHECKPOINT_FOLDER = re.compile(r"^(?:step|checkpoint-)(\d+)$")
CONFIG_FILE = "config.json"
_SINGLE_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def folder_step(name: str) -> int | None:
    """The training step a checkpoint folder's name carries (``step1000``, ``checkpoint-1000``), else ``None``."""
    match = CHECKPOINT_FOLDER.match(name)
    return int(match.group(1)) if match else None


def weight_file_problem(path: Path) -> str | None:
    """Why the weight file ``path`` is not whole (``None`` when it is): missing, a safetensors file shorter or longer
    than its header declares, or a ``.bin`` zip archive without its central directory (still being written)."""
    if not path.is_file():
        return f"{path.name} is missing"
    size = path.stat().st_size
    if path.suffix == ".safetensors":
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return f"{path.name} has {size} bytes, no header yet"
            (length,) = struct.unpack("<Q", head)
            if 8 + length > size:
                return f"{path.name} has {size} bytes, its header alone needs {8 + length}"
            try:
                header = json.loads(handle.read(length))
            except ValueError:
                return f"{path.name} has an unreadable header"
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
        expected = 8 + length + max(ends, default=0)
        return None if size == expected else f"{path.name} has {size} bytes, its header declares {expected}"
    if not zipfile.is_zipfile(path):
        return f"{path.name} is not a complete zip archive yet ({size} bytes)"
    return None


def _weight_files(folder: Path) -> list[Path] | str:
    """The weight files ``folder`` must hold, or why they cannot be known yet."""
    for single in _SINGLE_WEIGHTS:
        if (folder / single).is_file():
            return [folder / single]
    for index in _INDEXES:
        if (folder / index).is_file():
            try:
                weight_map = json.loads((folder / index).read_text())["weight_map"]
            except (ValueError, KeyError):
                return f"{index} is not complete JSON with a weight_map yet"
            return [folder / name for name in sorted(set(weight_map.values()))]
    return "no weight file (model.safetensors, pytorch_model.bin or a shard index) yet"


def incomplete_reasons(folder: Path) -> list[str]:
    """Why the checkpoint in ``folder`` cannot be read yet (empty: its config and every weight file are whole)."""
    reasons = [] if (folder / CONFIG_FILE).is_file() else [f"no {CONFIG_FILE} yet"]
    files = _weight_files(folder)
    if isinstance(files, str):
        return [*reasons, files]
    return reasons + [problem for path in files if (problem := weight_file_problem(path)) is not None]


def _signature(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Every file under ``folder`` with its size and modification time (what changes while a writer writes)."""
    entries = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            stat = path.stat()
            entries.append((path.relative_to(folder).as_posix(), stat.st_size, stat.st_mtime_ns))
    return tuple(entries)


def _sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ReadyCheckpoint:
    """A complete checkpoint: its step, folder, and the SHA-256 of every file in it when it was found complete."""

    step: int
    folder: Path
    files: dict[str, str]


def verify_unchanged(ready: ReadyCheckpoint) -> None:
    """Raise ``RuntimeError`` naming the files when the checkpoint's files are no longer the ones recorded as ready
    (rewritten, added or removed since): a link must not mix two versions of its checkpoint."""
    now = {p.relative_to(ready.folder).as_posix() for p in ready.folder.rglob("*") if p.is_file()}
    changed = sorted(now.symmetric_difference(ready.files))
    changed += sorted(n for n in now & set(ready.files) if _sha256(ready.folder / n) != ready.files[n])
    if changed:
        raise RuntimeError(
            f"checkpoint step {ready.step} at {ready.folder} changed after it was read: {changed[:5]}; a training run "
            "must not rewrite a checkpoint it has saved (save each step to its own folder)."
        )


@dataclass
class CheckpointWatch:
    """Polls ``root`` for checkpoint folders and hands each one over once, when it is ready (module doc).

    ``poll()`` returns the checkpoints that became ready since the last poll, in step order; ``pending`` says, per
    step seen but not ready, why. ``clock`` is injectable for tests (seconds, monotonic).
    """

    root: Path
    settle_seconds: float = 5.0
    clock: Callable[[], float] = time.monotonic
    pending: dict[int, str] = field(default_factory=dict)
    _seen: dict[int, tuple[tuple[tuple[str, int, int], ...], float]] = field(default_factory=dict)
    _ready: set[int] = field(default_factory=set)

    def _candidates(self) -> dict[int, Path]:
        """Checkpoint folders under ``root`` by step (a step found twice, in two layouts, is an error)."""
        found: dict[int, Path] = {}
        for child in sorted(Path(self.root).iterdir()) if Path(self.root).is_dir() else []:
            step = folder_step(child.name)
            if step is None or not child.is_dir():
                continue
            if step in found:
                raise ValueError(f"step {step} has two checkpoint folders: {found[step].name} and {child.name}.")
            found[step] = child
        return found

    def poll(self) -> list[ReadyCheckpoint]:
        """Scan ``root`` once; return the checkpoints that are now ready (whole and unchanged for ``settle_seconds``),
        each recorded with its files' SHA-256, in ascending step order."""
        now, ready = self.clock(), []
        for step, folder in self._candidates().items():
            if step in self._ready:
                continue
            signature = _signature(folder)
            previous = self._seen.get(step)
            if previous is None or previous[0] != signature:
                self._seen[step] = (signature, now)
                self.pending[step] = "being written (files changed since the last look)"
                continue
            reasons = incomplete_reasons(folder)
            if reasons:
                self.pending[step] = "; ".join(reasons)
                continue
            if now - previous[1] < self.settle_seconds:
                self.pending[step] = f"whole; waiting {self.settle_seconds:g} s without a change"
                continue
            files = {name: _sha256(folder / name) for name, _, _ in signature}
            if _signature(folder) != signature:  # written to while it was hashed: look again next time
                self._seen[step] = (_signature(folder), self.clock())
                continue
            self._ready.add(step)
            self.pending.pop(step, None)
            ready.append(ReadyCheckpoint(step=step, folder=folder, files=files))
        return sorted(ready, key=lambda r: r.step)
