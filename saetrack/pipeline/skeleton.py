"""The stage skeleton, written once: skip when current, resume finished parts, write atomically, end with a manifest.

Every stage output folder (``corpus/``, ``model/``, ``cache/``, ``chain/``, ``baseline/``, ``comparison/``,
``formation/``, ``drift/``, ``scale/``) is built through :func:`run_stage`:

* when the folder's ``manifest.json`` carries the config hash asked for, the stage is current and its manifest is
  returned without any work (unless ``force``);
* otherwise ``build`` runs with a :class:`StageRun`. Stages made of independent parts (one checkpoint of the cache,
  one chain link, one baseline SAE) keep the parts that finished with the same config hash
  (:meth:`StageRun.finished_part`), so an interrupted run resumes at the first unfinished part; a part is written
  into a temporary folder and renamed when complete (:meth:`StageRun.part`), or carries its own manifest written
  last. Stages computed at once write the whole folder under a temporary name (:meth:`StageRun.atomic`);
* :meth:`StageRun.finish` writes the stage manifest (resolved config, its hash, file hashes, timings including the
  stage's total time), last, so a folder without one is never taken for finished.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saetrack import store

__all__ = ["StageRun", "current_manifest", "finished_manifest", "run_stage"]


def current_manifest(folder: Path, config_hash: str) -> dict[str, Any] | None:
    """The manifest of ``folder`` when it finished with ``config_hash``; ``None`` when absent or made otherwise."""
    if not store.manifest_is_current(folder, config_hash):
        return None
    return store.read_manifest(folder)


def finished_manifest(folder: Path, config_hash: str | None, what: str, notebook: str) -> dict[str, Any]:
    """The manifest of a finished ``what`` in ``folder`` for a typed loader; made with ``config_hash`` when given.

    A missing manifest or another config raises :class:`~saetrack.store.StaleArtifactError` naming the folder and
    the notebook (``notebook``, e.g. ``"02"``) to run, so no loader reads outputs made for another config.
    """
    manifest = store.read_manifest(folder)
    if manifest is None:
        raise store.StaleArtifactError(f"no finished {what} at {folder}; run notebook {notebook} first.")
    if config_hash is not None and manifest.get("config_hash") != config_hash:
        raise store.StaleArtifactError(
            f"the {what} at {folder} was made for another config (hash {manifest.get('config_hash')}, expected "
            f"{config_hash}); rerun notebook {notebook}."
        )
    return manifest


@dataclass
class StageRun:
    """One output folder being (re)built: its name, the config hash it must carry, and when it started."""

    folder: Path
    stage: str
    config_hash: str
    force: bool = False
    started: float = field(default_factory=time.perf_counter)

    def finished_part(self, name: str) -> dict[str, Any] | None:
        """The manifest of part ``folder/name`` when it finished with this config (never under ``force``)."""
        if self.force:
            return None
        manifest = store.read_manifest(self.folder / name)
        if manifest is None or manifest.get("config_hash") != self.config_hash:
            return None
        return manifest

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[Path]:
        """A temporary folder that becomes part ``folder/name`` when the block finishes without error."""
        with store.atomic_dir(self.folder / name) as tmp:
            yield tmp

    @contextlib.contextmanager
    def atomic(self) -> Iterator[Path]:
        """A temporary folder that replaces the whole output folder when the block finishes without error."""
        with store.atomic_dir(self.folder) as tmp:
            yield tmp

    def write_part_manifest(
        self,
        where: Path,
        *,
        stage: str,
        config: Mapping[str, Any],
        files: Mapping[str, str] | None = None,
        timings: Mapping[str, float] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Write the manifest of one part (in ``where``) with this stage's config hash, and return it."""
        return store.write_manifest(
            where, stage=stage, config=config, config_hash=self.config_hash, files=files, timings=timings, **extra
        )

    def finish(
        self,
        *,
        config: Mapping[str, Any],
        files: Mapping[str, str] | None = None,
        timings: Mapping[str, float] | None = None,
        into: Path | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Write the stage manifest (into ``into``, e.g. the folder of :meth:`atomic`, else the output folder).

        ``timings`` gains ``total``: the seconds since the stage started, unless given.
        """
        all_timings = {"total": time.perf_counter() - self.started, **(timings or {})}
        return store.write_manifest(
            into or self.folder,
            stage=self.stage,
            config=config,
            config_hash=self.config_hash,
            files=files,
            timings=all_timings,
            **extra,
        )


def run_stage(
    folder: Path,
    stage: str,
    config_hash: str,
    build: Callable[[StageRun], dict[str, Any]],
    *,
    force: bool = False,
    clear_on_force: bool = False,
) -> dict[str, Any]:
    """Return the manifest of ``folder`` when current with ``config_hash``; else run ``build`` and return its manifest.

    ``build`` receives the :class:`StageRun` and must end with :meth:`StageRun.finish`. ``force`` rebuilds a current
    folder (``clear_on_force`` deletes it first, so no part is reused).
    """
    folder = Path(folder)
    if not force and (manifest := current_manifest(folder, config_hash)) is not None:
        return manifest
    if force and clear_on_force and folder.exists():
        shutil.rmtree(folder)
    return build(StageRun(folder, stage, config_hash, force))
