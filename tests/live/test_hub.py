"""Checkpoints appearing as Hub branches: discovery, pinning, a moved branch caught (a local fake lists the refs)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from saetrack.live.hub import HubRevisionWatch, ReadyRevision, revision_pattern, verify_revision


@dataclass
class _Branch:
    name: str
    target_commit: str


@dataclass
class _Refs:
    branches: list[_Branch] = field(default_factory=list)


class FakeHub:
    """``list_repo_refs`` of one repository whose branches are set by the test."""

    def __init__(self) -> None:
        self.branches: dict[str, str] = {}
        self.calls: list[tuple[str, object]] = []

    def __call__(self, repo_id: str, token: object = None) -> _Refs:
        self.calls.append((repo_id, token))
        return _Refs([_Branch(name, commit) for name, commit in self.branches.items()])


def test_revision_pattern() -> None:
    assert revision_pattern("step{step}").match("step1000").group(1) == "1000"
    assert revision_pattern("ckpt-{step}-final").match("ckpt-7-final").group(1) == "7"
    assert revision_pattern("step{step}").match("main") is None
    with pytest.raises(ValueError, match="must contain"):
        revision_pattern("main")


def test_branches_are_handed_over_once_in_step_order_pinned_to_their_commit() -> None:
    hub = FakeHub()
    watch = HubRevisionWatch("me/run", lister=hub)
    assert watch.poll() == []
    hub.branches.update({"main": "a" * 40, "step20": "b" * 40, "step10": "c" * 40})
    assert watch.poll() == [ReadyRevision(10, "step10", "c" * 40), ReadyRevision(20, "step20", "b" * 40)]
    hub.branches["step30"] = "d" * 40
    assert [r.step for r in watch.poll()] == [30]
    assert watch.poll() == []
    assert hub.calls[0][0] == "me/run"


def test_a_branch_moved_after_its_link_was_trained_is_an_error() -> None:
    hub = FakeHub()
    hub.branches["step10"] = "c" * 40
    ready = ReadyRevision(10, "step10", "c" * 40)
    verify_revision(ready, "me/run", lister=hub)
    hub.branches["step10"] = "e" * 40
    with pytest.raises(RuntimeError, match="moved"):
        verify_revision(ready, "me/run", lister=hub)
