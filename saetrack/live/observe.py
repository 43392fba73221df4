"""SAE-Track inside a training loop: hand each checkpoint to a ``saetrack watch`` process, and go on training.

Two entry points, both writing checkpoints into one watch folder that a separate ``saetrack watch`` process (started
on the first checkpoint) follows, so the training process only pays for writing the checkpoint:

* :func:`observe` ``(model_or_path, step)`` for a hand-written loop (nanoGPT style): a ``transformers`` model is saved
  with ``save_pretrained`` (its tokenizer once, when given); a folder that already holds a checkpoint is linked in;
* :class:`SAETrackCallback`, a ``transformers.TrainerCallback``: after the Trainer saves ``checkpoint-N/``, its model
  files (config, weights, tokenizer; not the optimizer state) are hard-linked into the watch folder as ``stepN/``, so
  the Trainer's ``save_total_limit`` may delete its own copy at once.

Every checkpoint is written into a hidden temporary folder and renamed into place, so the watcher never sees half of
it (and would not read it anyway: :mod:`saetrack.live.checkpoints`). :meth:`Observer.finish` writes the watcher's
end marker; the watcher then trains the links still missing and stops.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from saetrack import paths, store

__all__ = ["MARKER", "MODEL_FILES", "Observer", "SAETrackCallback", "observe", "observer_for"]

#: The file that tells the watcher the training run has finished (``saetrack watch --marker``'s default).
MARKER = "saetrack.done"
#: Files of a checkpoint folder the watcher reads (weights, their index, configs, tokenizer); the rest is not copied.
MODEL_FILES = (".safetensors", ".bin", ".json", ".txt", ".model", ".tiktoken")
_SKIP = ("optimizer", "scheduler", "rng_state", "trainer_state", "training_args", "scaler")


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or no hard links: a copy
        shutil.copy2(source, target)


def _mirror(folder: Path, target: Path) -> None:
    """Link ``folder``'s model files (module doc) into ``target`` (which must not exist yet), atomically."""
    with store.atomic_dir(target) as tmp:
        for path in sorted(Path(folder).iterdir()):
            if path.is_file() and path.name.endswith(MODEL_FILES) and not path.name.startswith(_SKIP):
                _link_or_copy(path, Path(tmp) / path.name)


class Observer:
    """Checkpoints of one training run written into ``folder`` (``stepN/``) for a ``saetrack watch`` process.

    ``watch_args`` are ``saetrack watch``'s options (e.g. ``["--preset", "nano", "--set", "cache.layer=3"]``); the
    watcher's output goes to ``folder/watch.log``. ``watch=False`` only writes the checkpoints (a watcher started by
    hand follows them).
    """

    def __init__(self, folder: str | os.PathLike[str], watch_args: list[str] | None = None, watch: bool = True):
        self.folder = Path(folder).resolve()
        self.watch_args = list(watch_args or [])
        self.watch = watch
        self.process: subprocess.Popen[bytes] | None = None
        self.seconds: list[float] = []

    def _start(self) -> None:
        if not self.watch or self.process is not None:
            return
        command = [sys.executable, "-m", "saetrack", "watch", str(self.folder), "--idle-timeout", "86400",
                   "--quiet", *self.watch_args]  # fmt: skip
        log = open(self.folder / "watch.log", "ab")  # the child holds it for its lifetime
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(paths.REPO_ROOT),
                                                                         os.environ.get("PYTHONPATH")]))}  # fmt: skip
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)

    def observe(self, model_or_path: Any, step: int, tokenizer: Any = None) -> float:
        """Write the checkpoint of training step ``step`` (a ``transformers`` model, or a folder holding a saved
        checkpoint) as ``folder/step{step}/``; start the watcher on the first call. Returns the seconds the training
        process spent (the cost per checkpoint it pays)."""
        started = time.perf_counter()
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / paths.step_dir_name(int(step))
        if target.exists():
            raise FileExistsError(f"{target} exists: a training run must save each step once.")
        if isinstance(model_or_path, (str, os.PathLike)):
            _mirror(Path(model_or_path), target)
        else:
            with store.atomic_dir(target) as tmp:
                model_or_path.save_pretrained(str(tmp))
                if tokenizer is not None:
                    tokenizer.save_pretrained(str(tmp))
        self._start()
        self.seconds.append(time.perf_counter() - started)
        return self.seconds[-1]

    def finish(self, wait: bool = False, timeout: float | None = None) -> int | None:
        """Tell the watcher the run has finished (the marker file); with ``wait``, wait for it and return its exit
        code (``None`` when it was not started or is still running)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / MARKER).touch()
        if wait and self.process is not None:
            return self.process.wait(timeout=timeout)
        return None if self.process is None else self.process.poll()


_OBSERVERS: dict[Path, Observer] = {}


def observer_for(folder: str | os.PathLike[str], watch_args: list[str] | None = None) -> Observer:
    """The one :class:`Observer` of ``folder`` in this process (created on the first call, with ``watch_args``)."""
    key = Path(folder).resolve()
    if key not in _OBSERVERS:
        _OBSERVERS[key] = Observer(key, watch_args)
    return _OBSERVERS[key]


def observe(model_or_path: Any, step: int, folder: str | os.PathLike[str], tokenizer: Any = None,
            watch_args: list[str] | None = None) -> float:  # fmt: skip
    """:meth:`Observer.observe` on the one observer of ``folder`` in this process (created on the first call with
    ``watch_args``); returns the seconds the call blocked training."""
    return observer_for(folder, watch_args).observe(model_or_path, step, tokenizer)


class SAETrackCallback(TrainerCallback):
    """A ``transformers.TrainerCallback`` that hands every checkpoint the Trainer saves to a ``saetrack watch``
    process following ``folder`` (default: ``<output_dir>/saetrack``), and ends it with the training run."""

    def __init__(self, folder: str | os.PathLike[str] | None = None, watch_args: list[str] | None = None,
                 watch: bool = True) -> None:  # fmt: skip
        self.folder = folder
        self.watch_args = watch_args
        self.watch = watch
        self.observer: Observer | None = None

    def _observer(self, output_dir: str) -> Observer:
        if self.observer is None:
            folder = self.folder if self.folder is not None else Path(output_dir) / "saetrack"
            self.observer = Observer(folder, self.watch_args, self.watch)
        return self.observer

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Link the checkpoint the Trainer has just written (``checkpoint-<global_step>``) into the watch folder."""
        saved = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and saved.is_dir():
            self._observer(args.output_dir).observe(saved, state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Write the end marker: the watcher trains the links still missing, then stops."""
        if state.is_world_process_zero:
            self._observer(args.output_dir).finish()
