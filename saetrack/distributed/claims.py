"""Claims on a shared file system: which rank works on which unit of a spread job, and which units are done.

A spread job (:mod:`saetrack.pipeline.spread`) deals independent units of work out over ranks that share nothing but
the run directory's file system (one node or several, started by ``torchrun``, ``srun`` or by hand). A rank takes a
unit by creating ``claims/<unit>.json`` exclusively (``O_CREAT | O_EXCL``: exactly one rank succeeds), refreshes the
file's modification time while it works (a heartbeat thread), records ``done/<unit>.json`` with the unit's key when
the unit finished, and removes its claim.

A claim whose holder is gone is broken, so a unit never waits forever on a dead rank: on the holder's own host when
its process no longer exists (a rank killed and restarted takes its unit back at once), from any host when its
heartbeat is older than ``stale_after_s``. Breaking renames the claim away first (``rename`` is atomic: of two ranks
breaking it, one wins), then claims as usual. The unit's work itself resumes from its finished parts, so a broken
claim costs only the unfinished part.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from saetrack import store

__all__ = ["HEARTBEAT_S", "STALE_AFTER_S", "Claims", "Holder"]

#: Seconds between refreshes of a held claim's modification time.
HEARTBEAT_S = 20.0
#: A claim not refreshed for this long is taken for a dead holder's (from another host: its pid cannot be checked).
STALE_AFTER_S = 300.0


@dataclass(frozen=True)
class Holder:
    """Who holds a claim: the rank, its host and its process id."""

    rank: int
    host: str
    pid: int

    @classmethod
    def here(cls, rank: int) -> Holder:
        """This process as the holder for ``rank``."""
        return cls(rank, socket.gethostname(), os.getpid())


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _file_name(unit: str) -> str:
    """A unit's name as one file name (``layer4/chain`` -> ``layer4.chain.json``)."""
    return unit.replace("/", ".") + ".json"


class Claims:
    """The claims and done records of one spread job in ``folder`` (on a file system every rank shares)."""

    def __init__(
        self, folder: Path, holder: Holder, *, stale_after_s: float = STALE_AFTER_S, heartbeat_s: float = HEARTBEAT_S
    ) -> None:
        self.folder, self.holder = Path(folder), holder
        self.stale_after_s, self.heartbeat_s = stale_after_s, heartbeat_s
        for sub in ("claims", "done"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)

    def claim_path(self, unit: str) -> Path:
        """The file whose existence is ``unit``'s claim."""
        return self.folder / "claims" / _file_name(unit)

    def done_path(self, unit: str) -> Path:
        """The record written when ``unit`` finished."""
        return self.folder / "done" / _file_name(unit)

    def holder_of(self, unit: str) -> dict[str, Any] | None:
        """The holder recorded in ``unit``'s claim, with ``age_s`` since its last heartbeat; ``None`` when unclaimed."""
        path = self.claim_path(unit)
        try:
            record = json.loads(path.read_text())
            record["age_s"] = time.time() - path.stat().st_mtime
        except (OSError, ValueError):
            return None
        return record

    def is_stale(self, record: dict[str, Any]) -> bool:
        """Whether a claim's holder is gone: its process dead on this host, or its heartbeat older than allowed."""
        if record.get("host") == self.holder.host and record.get("pid") != self.holder.pid:
            return not _alive(int(record.get("pid", -1)))
        return float(record.get("age_s", 0.0)) > self.stale_after_s

    def try_claim(self, unit: str) -> bool:
        """Take ``unit`` for this holder: True when this call created its claim (breaking a stale one first)."""
        path = self.claim_path(unit)
        record = self.holder_of(unit)
        if record is not None and self.is_stale(record):
            try:
                path.rename(path.with_name(f"{path.name}.broken-{uuid.uuid4().hex[:8]}"))
            except FileNotFoundError:  # another rank broke it first
                pass
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "w") as sink:
            json.dump({**asdict(self.holder), "since": time.time()}, sink)
        return True

    def release(self, unit: str) -> None:
        """Give ``unit`` back (its claim removed, if still this holder's)."""
        record = self.holder_of(unit)
        if record is not None and record.get("pid") == self.holder.pid and record.get("host") == self.holder.host:
            self.claim_path(unit).unlink(missing_ok=True)

    def mark_done(self, unit: str, key: str, **extra: Any) -> None:
        """Record that ``unit`` finished for ``key`` (its config's hash), atomically."""
        store.write_json(self.done_path(unit), {"key": key, "rank": self.holder.rank, "host": self.holder.host,
                                                "finished_at": time.time(), **extra})  # fmt: skip

    def is_done(self, unit: str, key: str) -> bool:
        """Whether ``unit`` finished for ``key`` (a record for another config does not count)."""
        try:
            return store.read_json(self.done_path(unit)).get("key") == key
        except (OSError, ValueError, store.StaleArtifactError):
            return False

    @contextmanager
    def heartbeat(self, unit: str) -> Iterator[None]:
        """While the block runs, refresh ``unit``'s claim every ``heartbeat_s`` seconds, so other hosts see it alive."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat_s):
                try:
                    os.utime(self.claim_path(unit))
                except OSError:
                    return

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
