"""Checkpoints appearing as revisions of a Hugging Face Hub repository (a training run pushing ``step{N}`` branches).

A revision is one commit, complete by construction, so a step is ready as soon as its branch exists. Each step is
pinned to the commit its branch pointed to when it was first seen (:attr:`ReadyRevision.commit`): the links are
trained on that commit, and a branch moved afterwards is an error (:func:`verify_revision`), never a silent mix.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import huggingface_hub

__all__ = ["HubRevisionWatch", "ReadyRevision", "revision_pattern", "verify_revision"]


def revision_pattern(template: str) -> re.Pattern[str]:
    """The regular expression of the branch names ``template`` makes (``"step{step}"`` -> ``^step(\\d+)$``)."""
    if "{step}" not in template:
        raise ValueError(f"revision template {template!r} is invalid: it must contain '{{step}}'.")
    head, tail = template.split("{step}", 1)
    return re.compile(f"^{re.escape(head)}(\\d+){re.escape(tail)}$")


@dataclass(frozen=True)
class ReadyRevision:
    """A step published as a Hub revision: its step, branch and the commit it was pinned to."""

    step: int
    branch: str
    commit: str


def _branches(repo_id: str, token: str | bool | None, lister: Callable[..., Any]) -> dict[str, str]:
    refs = lister(repo_id, token=token)
    return {branch.name: branch.target_commit for branch in refs.branches}


def verify_revision(ready: ReadyRevision, repo_id: str, token: str | bool | None = None,
                    lister: Callable[..., Any] = huggingface_hub.list_repo_refs) -> None:  # fmt: skip
    """Raise ``RuntimeError`` when ``ready``'s branch now points to another commit than the one its link read."""
    now = _branches(repo_id, token, lister).get(ready.branch)
    if now is not None and now != ready.commit:
        raise RuntimeError(
            f"branch {ready.branch} of {repo_id} moved from {ready.commit} to {now} after its link was trained; a "
            "training run must not rewrite a checkpoint it has published (push each step to its own branch)."
        )


@dataclass
class HubRevisionWatch:
    """Polls ``repo_id``'s branches and hands each step's revision over once, in step order (module doc).

    ``lister`` is ``huggingface_hub.list_repo_refs`` (injectable: tests pass a local fake, nothing here downloads).
    """

    repo_id: str
    revision_template: str = "step{step}"
    token: str | bool | None = None
    lister: Callable[..., Any] = huggingface_hub.list_repo_refs
    pending: dict[int, str] = field(default_factory=dict)
    _ready: set[int] = field(default_factory=set)

    def poll(self) -> list[ReadyRevision]:
        """List the repository's branches once; return the steps whose branch appeared since the last poll, ascending,
        each pinned to the branch's current commit."""
        pattern = revision_pattern(self.revision_template)
        ready = []
        for branch, commit in _branches(self.repo_id, self.token, self.lister).items():
            match = pattern.match(branch)
            if match is None or int(match.group(1)) in self._ready:
                continue
            self._ready.add(int(match.group(1)))
            ready.append(ReadyRevision(step=int(match.group(1)), branch=branch, commit=commit))
        return sorted(ready, key=lambda r: r.step)
