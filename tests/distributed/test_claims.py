"""Claims on a shared folder: one holder per unit, a dead or silent holder's claim broken, done records per config."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from saetrack.distributed.claims import Claims, Holder


def _claims(folder: Path, rank: int, host: str = "node-a", pid: int | None = None, **kw: float) -> Claims:
    return Claims(folder, Holder(rank, host, os.getpid() if pid is None else pid), **kw)


def test_a_unit_is_claimed_by_one_holder_until_released(tmp_path: Path) -> None:
    first, second = _claims(tmp_path, 0), _claims(tmp_path, 1, host="node-b")
    assert first.try_claim("layer4/chain")
    assert not second.try_claim("layer4/chain")  # a live holder on another host, fresh heartbeat
    assert first.holder_of("layer4/chain")["rank"] == 0  # type: ignore[index]
    second.release("layer4/chain")  # not second's to release
    assert first.claim_path("layer4/chain").exists()
    first.release("layer4/chain")
    assert second.try_claim("layer4/chain")


def test_a_dead_holders_claim_on_this_host_is_broken_at_once(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    dead = _claims(tmp_path, 1, pid=dead_pid)
    assert dead.try_claim("chain")
    restarted = _claims(tmp_path, 1)  # same host, its old process gone: the restarted rank takes the unit back
    assert restarted.try_claim("chain")
    assert restarted.holder_of("chain")["pid"] == os.getpid()  # type: ignore[index]
    assert len(list((tmp_path / "claims").glob("chain.json.broken-*"))) == 1


def test_another_hosts_claim_is_broken_only_when_its_heartbeat_is_stale(tmp_path: Path) -> None:
    elsewhere = _claims(tmp_path, 0, host="node-b", pid=1)
    assert elsewhere.try_claim("baselines")
    here = _claims(tmp_path, 1, stale_after_s=60.0)
    assert not here.try_claim("baselines")  # its pid means nothing here: the heartbeat decides
    old = time.time() - 120.0
    os.utime(here.claim_path("baselines"), (old, old))
    assert here.try_claim("baselines")


def test_the_heartbeat_keeps_a_claim_fresh(tmp_path: Path) -> None:
    claims = _claims(tmp_path, 0, heartbeat_s=0.05)
    assert claims.try_claim("drift")
    old = time.time() - 1000.0
    os.utime(claims.claim_path("drift"), (old, old))
    with claims.heartbeat("drift"):
        time.sleep(0.3)
    assert claims.holder_of("drift")["age_s"] < 10.0  # type: ignore[index]


def test_done_records_count_for_their_key_only(tmp_path: Path) -> None:
    claims = _claims(tmp_path, 0)
    assert not claims.is_done("formation", "abc")
    claims.mark_done("formation", "abc", seconds=1.5)
    assert claims.is_done("formation", "abc")
    assert not claims.is_done("formation", "another-config")
