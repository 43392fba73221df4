"""A watched run over the smoke suite's checkpoints, grown one update at a time (shared by the live tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from saetrack.config import get_preset
from saetrack.live.config import WATCH_RESTART_BELOW, WatchSource
from saetrack.live.follow import LiveChain

#: The checkpoints each update of the shared watched run sees (the smoke suite's first five).
UPDATES: tuple[tuple[int, ...], ...] = ((0, 1), (0, 1, 2), (0, 1, 2, 4, 8))


def live_chain(
    model_dir: Path, run_dir: Path, lines: list[str], carried_rule: bool = False, outcome_rule: bool = True
) -> LiveChain:
    """A :class:`LiveChain` following the smoke suite in ``model_dir`` into ``run_dir``, its penalty calibrated to the
    default target L0 (8 for the 32-wide smoke model) and the outcome rule at the watch's default unless
    ``outcome_rule`` is False; ``carried_rule`` also opts into the carried-variance rule (``chain.restart_below``
    = 0)."""
    base = get_preset("smoke", {"chain.restart_below": WATCH_RESTART_BELOW} if carried_rule else None)
    return LiveChain(base, WatchSource("local", str(model_dir)), run_dir, "watch-smoke", progress=False,
                     say=lines.append, restart=outcome_rule)  # fmt: skip


@pytest.fixture(scope="session")
def watched_smoke(smoke_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The smoke suite watched in three updates, the continuity rule opted into: the run directory, the printed
    lines, and the link weights' bytes after each update (step -> bytes of ``sae_weights.safetensors``)."""
    run_dir = tmp_path_factory.mktemp("watched")
    lines: list[str] = []
    chain = live_chain(smoke_run_dir / "model", run_dir, lines, carried_rule=True)  # both rules' mechanisms
    weights = []
    for steps in UPDATES:
        run = chain.update(list(steps), smoke_run_dir / "model" / "step0" / "config.json")
        weights.append({s: (run_dir / "chain" / f"step{s}" / "sae_weights.safetensors").read_bytes() for s in steps})
    return {"run_dir": run_dir, "lines": lines, "weights": weights, "run": run}


@pytest.fixture(scope="session")
def watched_smoke_continued(smoke_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The smoke suite's first five checkpoints watched in one update with both continuity rules off (the paper's
    chain, never restarted): the run directory and the run."""
    run_dir = tmp_path_factory.mktemp("watched_continued")
    chain = live_chain(smoke_run_dir / "model", run_dir, [], outcome_rule=False)
    run = chain.update(list(UPDATES[-1]), smoke_run_dir / "model" / "step0" / "config.json")
    return {"run_dir": run_dir, "run": run}
