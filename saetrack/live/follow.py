"""Training the chain of a watched run as its checkpoints appear (the paper's real-time property, Sec. 3.2).

:class:`LiveChain` turns "these checkpoints are ready" into the pipeline's own stages over the config of exactly those
checkpoints (:func:`saetrack.live.config.watched_config`): the corpus (tokenized once with the model's tokenizer), the
streamed cache record (token sets and each checkpoint's weights hash), and the chain stage itself, which trains only
the links not yet finished: link k from link k-1 (recurrent initialisation), with the λ calibrated on the first
checkpoint. Finished links of the shorter config are kept (:func:`saetrack.live.adopt.adopt_links`), so each new
checkpoint costs one link. The run directory is the one ``run_all.py`` writes, with the config in
``run_config.json``, so ``saetrack run --config <run_dir>/run_config.json`` runs notebooks 03-07 on it afterwards.

A run killed at any point resumes at the first unfinished link: links, like every stage part, count only once their
manifest is written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saetrack import paths, store
from saetrack.config.run import RunConfig
from saetrack.data.cache_plan import plan_tokens
from saetrack.data.checkpoints import CheckpointSource, open_source
from saetrack.data.corpus import prepare_corpus
from saetrack.live.adopt import adopt_links
from saetrack.live.config import WatchSource, checkpoint_shape, watched_config
from saetrack.live.costs import link_cost, read_costs, record_cost, tokens_spent
from saetrack.live.explorer import refresh_explorer
from saetrack.live.readings import drift_so_far
from saetrack.live.report import LIVE_DIR, checkpoint_line, write_report
from saetrack.stages.cache import cache_activations
from saetrack.stages.chain import read_link_manifests, train_chain

__all__ = ["RUN_CONFIG_FILE", "LiveChain"]

#: The watched run's config in its run directory (``RunConfig.to_dict()``; ``saetrack run --config`` reads it).
RUN_CONFIG_FILE = "run_config.json"


@dataclass
class LiveChain:
    """The chain of one watched training run in ``run_dir``: ``update(steps, config_file)`` trains what is missing."""

    base: RunConfig
    source: WatchSource
    run_dir: Path
    name: str
    device: str = "cpu"
    progress: bool = True
    #: Called with each new link's console line (default: print).
    say: Callable[[str], None] = print
    #: Calibrate the penalty to a target L0 unless the base config sets one (:func:`watched_config`).
    calibrate: bool = True
    #: Turn the outcome rule on (``chain.restart_l0_ratio``, :func:`watched_config`); False when the user set it.
    restart: bool = True
    #: Hub sources: step -> the commit each step is pinned to (its branch when first seen).
    revisions: dict[int, str] = field(default_factory=dict)
    #: Rebuild formation, drift and the explorer after this many new links (0: never; :mod:`saetrack.live.explorer`).
    explorer_every: int = 0
    _new_links: int = field(default=0, init=False)
    _run: RunConfig | None = field(default=None, init=False)
    _pending: dict[int, str] = field(default_factory=dict, init=False)
    _shape: tuple[int, int] | None = field(default=None, init=False)
    _hashes: dict[int, str] = field(default_factory=dict, init=False)

    def config_for(self, steps: Sequence[int]) -> RunConfig:
        """The run config over ``steps`` (:func:`watched_config`); the shape is read from the first checkpoint."""
        assert self._shape is not None, "update() reads the model's shape first"
        return watched_config(self.base, self.source, steps, self._shape, self.name, self.calibrate, self.restart)

    def _checkpoints(self, run: RunConfig) -> CheckpointSource:
        """The checkpoint source of ``run``, reusing weight hashes of checkpoints already hashed (they are verified
        unchanged by the watcher before each update)."""
        pins = {s: c for s, c in self.revisions.items() if s in run.model.checkpoint_steps}
        return open_source(run.model, self.run_dir, revisions=pins or None, known_hashes=self._hashes)

    def update(self, steps: Sequence[int], config_file: Path, pending: dict[int, str] | None = None) -> RunConfig:
        """Bring the chain up to the checkpoints ``steps`` (all ready, ascending; ``config_file`` is the first one's
        ``config.json``): corpus, streamed cache record, adopted links, every missing link trained; the console line
        and the report refreshed after each new link. Returns the run's config (also written to ``run_config.json``)."""
        if self._shape is None:
            self._shape = checkpoint_shape(config_file)
        run = self.config_for(steps)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        store.write_json(self.run_dir / RUN_CONFIG_FILE, run.to_dict())
        prepare_corpus(run, self.run_dir, progress=self.progress)
        adopt_links(run, self.run_dir, lambda j: self.config_for(steps[:j]))
        checkpoints = self._checkpoints(run)
        cache_activations(run, self.run_dir, source=checkpoints, device=self.device, progress=self.progress)
        self._hashes.update(checkpoints.known_hashes)
        started, heldout = time.perf_counter(), plan_tokens(run).heldout[1] * run.cache.context_length

        def after_link(step: int) -> None:
            nonlocal started
            self._new_links += 1
            links = self._links(run)
            readings = drift_so_far(run, self._folders(run, links))
            seconds = time.perf_counter() - started
            sae_tokens, forward_tokens = tokens_spent(links[-1], heldout)
            costs = record_cost(self.run_dir / LIVE_DIR, step, link_cost(seconds, sae_tokens, forward_tokens,
                                                                          self.device))  # fmt: skip
            self.say(checkpoint_line(links[-1], readings, seconds))
            write_report(self.run_dir, self.source.location, links, readings, pending or {}, costs)
            started = time.perf_counter()

        manifest = train_chain(
            run, self.run_dir, source=checkpoints, device=self.device, progress=self.progress, after_link=after_link
        )
        self._run, self._pending = run, dict(pending or {})
        if self.explorer_every and self._new_links >= self.explorer_every:
            self.refresh_explorer()
        if not (self.run_dir / LIVE_DIR / "index.html").exists():  # nothing new trained (a resumed, finished chain)
            links = manifest["links"]
            write_report(self.run_dir, self.source.location, links, drift_so_far(run, self._folders(run, links)),
                         pending or {}, read_costs(self.run_dir / LIVE_DIR))  # fmt: skip
        return run

    def refresh_explorer(self, final: bool = False) -> None:
        """Rebuild the explorer over the chain so far (:func:`saetrack.live.explorer.refresh_explorer`) and say where it
        is; with ``final`` (the watch ends) only if links were trained since the last rebuild, or none exists."""
        explorer = self.run_dir / paths.EXPLORER_DIR / "index.html"
        if self._run is None or (final and not self._new_links and explorer.exists()):
            return
        self.say(refresh_explorer(self._run, self.run_dir, device=self.device, progress=self.progress))
        self._new_links = 0
        run, links = self._run, self._links(self._run)
        write_report(self.run_dir, self.source.location, links, drift_so_far(run, self._folders(run, links)),
                     self._pending, read_costs(self.run_dir / LIVE_DIR))  # fmt: skip

    def _links(self, run: RunConfig) -> list[dict[str, Any]]:
        """The finished links' records so far, in chain order."""
        manifests = read_link_manifests(self.run_dir)
        return [manifests[s]["link"] for s in run.sae_steps if s in manifests]

    def _folders(self, run: RunConfig, links: list[dict[str, Any]]) -> dict[int, Path]:
        return {link["step"]: self.run_dir / paths.CHAIN_DIR / paths.step_dir_name(link["step"]) for link in links}
