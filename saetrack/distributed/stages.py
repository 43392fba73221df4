"""A stage's output folder when several ranks compute it together: the writer (rank 0) writes, the others wait and
read what it wrote, so every rank returns the same manifest and nothing is written twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from saetrack import store
from saetrack.distributed.ranks import Ranks, barrier
from saetrack.pipeline.skeleton import StageRun

__all__ = ["writer_finishes", "written_manifest"]


def writer_finishes(stage: StageRun, ranks: Ranks, **finish: Any) -> dict[str, Any]:
    """:meth:`StageRun.finish` ``(**finish)`` on the writer; every rank waits for it and returns the manifest written
    (the other ranks read it from the stage folder)."""
    if ranks.writer:
        stage.finish(**finish)
    return written_manifest(stage.folder, ranks)


def written_manifest(folder: Path, ranks: Ranks) -> dict[str, Any]:
    """The manifest the writer wrote in ``folder``, read by every rank once all are here (every rank calls this, after
    a barrier); a ``RuntimeError`` saying the run directory must be shared when it is not there."""
    barrier(ranks)
    written = store.read_manifest(folder)
    if written is None:
        raise RuntimeError(f"rank {ranks.rank}: the writer finished {folder} but no manifest is there; the run "
                           "directory must be on a file system every rank shares.")  # fmt: skip
    return written
