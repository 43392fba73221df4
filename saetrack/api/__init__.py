"""The run API: open a finished run directory and ask it about its SAE chain and any feature.

>>> run = open_run("runs/nano")                          # doctest: +SKIP
>>> run.steps, run.config.preset                          # doctest: +SKIP
>>> sae = run.sae(run.steps[-1])                          # a SAELens SAE   # doctest: +SKIP
>>> run.feature(12).top_contexts(run.steps[-1], k=3)      # doctest: +SKIP

:func:`open_run` recovers the run's config from its stage manifests (:mod:`saetrack.api.artifacts`) and returns a
:class:`Run`. Every artifact is read on first use, through the loaders the notebooks use
(:func:`saetrack.stages.chain.load_chain`, :func:`saetrack.stages.formation.load_formation`,
:func:`saetrack.stages.drift.load_drift`, :func:`saetrack.stages.crosscoder.load_crosscoder_result`,
:func:`saetrack.stages.crosscoder.method_comparison.load_method_comparison`), each checked against the recovered
config, and kept. A stage that has not run raises :class:`~saetrack.api.artifacts.StageNotRunError` (a
``FileNotFoundError``) naming the command that builds it. ``docs/api.md`` shows every method on the smoke run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from sae_lens import SAE

from saetrack import paths
from saetrack.analysis.evolution import adjacent_cosine
from saetrack.analysis.matching import MatchResult, match_features
from saetrack.api.artifacts import (
    RunConfigError,
    StageNotRunError,
    StepNotInChainError,
    loaded,
    recover_config,
    run_command,
)
from saetrack.api.feature import ActivationStats, Context, CrosscoderMatch, Drift, Feature
from saetrack.config.run import RunConfig
from saetrack.crosscoder.io import load_crosscoder
from saetrack.data.activations import open_activations
from saetrack.data.corpus import load_corpus
from saetrack.sae.io import SAE_CFG_FILE, load_firing_frequency
from saetrack.sae.weights import SAEWeights
from saetrack.stages.chain import load_chain
from saetrack.stages.crosscoder import CrosscoderResult, load_crosscoder_result
from saetrack.stages.crosscoder.method_comparison import MATCH_THRESHOLD, load_method_comparison
from saetrack.stages.drift import DriftResult, load_drift
from saetrack.stages.formation import FormationResult, load_formation

__all__ = [
    "ActivationStats",
    "Context",
    "CrosscoderMatch",
    "Drift",
    "Feature",
    "Run",
    "RunConfigError",
    "StageNotRunError",
    "StepNotInChainError",
    "open_run",
]

T = TypeVar("T")


class Run:
    """A finished run directory: its config, the chain's links, and the stored analyses of every feature.

    Build it with :func:`open_run`. Stage outputs are loaded on first use and kept, so asking many features is
    cheap after the first.
    """

    def __init__(self, run_dir: str | os.PathLike[str], config: RunConfig | None = None) -> None:
        self.run_dir = Path(run_dir).resolve()
        if not self.run_dir.is_dir():
            raise FileNotFoundError(f"no run directory at {self.run_dir}")
        #: the run's validated config (recovered from the stage manifests unless given)
        self.config: RunConfig = config if config is not None else recover_config(self.run_dir)
        self._cache: dict[Any, Any] = {}
        self._links: dict[int, Path] = self._load(
            paths.CHAIN_DIR, lambda: load_chain(self.run_dir, self.config), "the SAE chain"
        )

    def __repr__(self) -> str:
        return f"Run({str(self.run_dir)!r}, preset={self.config.preset!r}, steps={list(self.steps)})"

    def _load(self, folder: str, load: Callable[[], T], what: str = "") -> T:
        """``load()`` once (kept under ``folder``/``what``), a missing stage raised as :class:`StageNotRunError`."""
        key = (folder, what)
        if key not in self._cache:
            self._cache[key] = loaded(load, self.run_dir, folder, self.config, what)
        return self._cache[key]

    # -- the chain ---------------------------------------------------------------------------------
    @property
    def steps(self) -> tuple[int, ...]:
        """The training steps of the chain's checkpoints, in chain order (the paper's schedule, Eq. 25-26)."""
        return tuple(self._links)

    @property
    def n_features(self) -> int:
        """The dictionary size ``d_sae`` of every link (Eq. 1's ``W^dec`` has this many columns)."""
        if "d_sae" not in self._cache:
            cfg = json.loads((self._links[self.steps[0]] / SAE_CFG_FILE).read_text())
            self._cache["d_sae"] = int(cfg["d_sae"])
        return int(self._cache["d_sae"])

    def position(self, step: int) -> int:
        """The index of ``step`` in :attr:`steps` (the row of the stages' ``[T, ...]`` arrays); ``KeyError`` naming
        the chain's steps when ``step`` is not one of them."""
        try:
            return self.steps.index(int(step))
        except ValueError:
            raise StepNotInChainError(
                f"step {step} is not a checkpoint of the chain; steps: {list(self.steps)}"
            ) from None

    def link_dir(self, step: int) -> Path:
        """The folder of the chain link trained on checkpoint ``step`` (SAE[k] of Sec. 3.2.2, SAELens format)."""
        return self._links[self.steps[self.position(step)]]

    def link(self, step: int, device: str = "cpu") -> SAEWeights:
        """The weights of the link at ``step`` (``W_enc``, ``b_enc``, ``W_dec``, ``b_dec``: Eq. 1-2) as the analysis
        code reads them (:meth:`saetrack.sae.weights.SAEWeights.load`)."""
        return SAEWeights.load(self.link_dir(step), device=device)

    def sae(self, step: int, device: str = "cpu") -> SAE[Any]:
        """The link at ``step`` as a SAELens SAE for inference (``sae_lens.SAE.load_from_disk``; Eq. 1-2)."""
        return SAE.load_from_disk(self.link_dir(step), device=device)

    def firing_frequency(self, step: int) -> np.ndarray | None:
        """Each feature's firing frequency ``[d_sae]`` on the training tokens of the link at ``step`` (the density
        of App. A.1 during training, saved as SAELens' log10 sparsity); ``None`` when the link has no such file."""
        key = ("frequency", int(step))
        if key not in self._cache:
            self._cache[key] = load_firing_frequency(self.link_dir(step))
        return self._cache[key]

    def adjacent_cosines(self) -> np.ndarray:
        """The decoder cosine of every feature between consecutive links, ``[T-1, d_sae]`` (Sec. 6.1's drift, link to
        link; :func:`~saetrack.analysis.evolution.adjacent_cosine`), computed once, two links in memory at a time."""
        if "adjacent" not in self._cache:
            previous, rows = self.link(self.steps[0]).W_dec.numpy(), []
            for step in self.steps[1:]:
                current = self.link(step).W_dec.numpy()
                rows.append(adjacent_cosine(np.stack([previous, current], axis=1))[:, 0])
                previous = current
            self._cache["adjacent"] = np.stack(rows) if rows else np.zeros((0, self.n_features))
        return self._cache["adjacent"]

    # -- the stages' stored analyses ------------------------------------------------------------
    def formation(self) -> FormationResult:
        """The formation stage's arrays (Sec. 4-5: labels, top-k datapoints, patterns, progress measures; Fig. 2-5, 8)
        via :func:`saetrack.stages.formation.load_formation`."""
        return self._load(paths.FORMATION_DIR, lambda: load_formation(self.run_dir, self.config))

    def drift(self) -> DriftResult:
        """The drift stage's arrays (Sec. 6: decoder cosine to final, formation times, trajectories; Fig. 6-7) via
        :func:`saetrack.stages.drift.load_drift`."""
        return self._load(paths.DRIFT_DIR, lambda: load_drift(self.run_dir, self.config))

    def _crosscoder_on(self) -> None:
        if not self.config.crosscoder.enabled:
            raise StageNotRunError(
                f"the crosscoder stage is off for this run (crosscoder.enabled = False); run "
                f"`{run_command(self.config.preset, 'crosscoder', ' --set crosscoder.enabled=true')}` first."
            )

    def crosscoder(self) -> CrosscoderResult:
        """The crosscoder stage's arrays (decoder norms per snapshot, emergence, directions; Fig. X02-X04) via
        :func:`saetrack.stages.crosscoder.load_crosscoder_result`."""
        self._crosscoder_on()
        return self._load(paths.CROSSCODER_DIR, lambda: load_crosscoder_result(self.run_dir, self.config))

    def method_comparison(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The method-comparison stage's manifest and arrays (crosscoder vs chain: matching, emergence vs formation;
        Fig. X06-X08) via :func:`saetrack.stages.crosscoder.method_comparison.load_method_comparison`."""
        self._crosscoder_on()
        return self._load(
            paths.CROSSCODER_COMPARISON_DIR,
            lambda: load_method_comparison(self.run_dir, self.config),
            "the crosscoder comparison",
        )

    def crosscoder_matching(self) -> MatchResult:
        """The Hungarian matching of the crosscoder's alive features to the chain's live features by decoder cosine at
        the last step both have (the method-comparison stage's matching behind Fig. X06, every pair kept: the stage
        stores only the pairs above :data:`MATCH_THRESHOLD` with both an emergence and a formation time).

        Side ``a`` is the crosscoder, side ``b`` the chain; computed once with
        :func:`saetrack.analysis.matching.match_features` (over all live features: the stage samples
        :data:`~saetrack.stages.crosscoder.method_comparison.MAX_MATCH_FEATURES` per side when there are more).
        """
        if "matching" not in self._cache:
            manifest, _ = self.method_comparison()
            result = self.crosscoder()
            folder = self.run_dir / paths.CROSSCODER_DIR / paths.CROSSCODER_MODEL_DIR
            saved = self._load(paths.CROSSCODER_DIR, lambda: load_crosscoder(folder), "the crosscoder model")
            final = int(manifest["final_step"])
            crosscoder_final = saved.model.W_dec.detach().cpu().numpy()[:, result.steps.tolist().index(final)]
            live = np.zeros(self.n_features, dtype=bool)
            live[list(self.live_features)] = True
            self._cache["matching"] = match_features(
                crosscoder_final, self.link(final).W_dec.numpy(), threshold=MATCH_THRESHOLD,
                subset_a=np.asarray(result.alive, dtype=bool), subset_b=live,
            )  # fmt: skip
        return self._cache["matching"]

    def crosscoder_matches(self) -> dict[int, int]:
        """Chain feature -> its matched crosscoder feature, for every pair of :meth:`crosscoder_matching` (Fig. X06)."""
        matching = self.crosscoder_matching()
        return {int(b): int(a) for a, b in zip(matching.index_a, matching.index_b, strict=True)}

    @property
    def live_features(self) -> tuple[int, ...]:
        """The indices of the live features (App. A.1's filter over the chain, formation stage)."""
        return tuple(int(f) for f in self.formation().live_features)

    # -- tokens ----------------------------------------------------------------------------------
    def tokenizer(self) -> Any:
        """The run's tokenizer (a ``tokenizers``-style object with ``decode``), from the corpus stage."""
        return self._load(paths.CORPUS_DIR, lambda: load_corpus(self.run_dir)[0], "the corpus")

    def analysis_tokens(self) -> np.ndarray:
        """The token ids of the fixed analysis set ``[n_contexts, context_length]``, the same at every checkpoint (the
        datapoints of Sec. 4's top-k and Eq. 12's ``D_i``)."""
        return self._load(
            paths.CACHE_DIR,
            lambda: np.asarray(open_activations(self.config, self.run_dir).analysis_tokens),
            "the analysis tokens",
        )

    # -- features --------------------------------------------------------------------------------
    def feature(self, index: int) -> Feature:
        """The view of feature ``index`` along the chain (one index is one feature at every link, Sec. 3.2.2);
        ``ValueError`` naming the allowed range when out of range."""
        if isinstance(index, bool) or not isinstance(index, int | np.integer):
            raise TypeError(f"a feature index is an int, got {type(index).__name__}")
        if not 0 <= int(index) < self.n_features:
            raise ValueError(
                f"feature {index} is out of range: this run's SAEs have {self.n_features} features "
                f"(0-{self.n_features - 1})"
            )
        return Feature(self, int(index))


def open_run(run_dir: str | os.PathLike[str], config: RunConfig | None = None) -> Run:
    """Open the finished run directory ``run_dir`` (``runs/<preset>/``) and return its :class:`Run`.

    The config is recovered from the stage manifests (the sections each stage records, checked against the chain's
    config hash) unless ``config`` is given. Needs a finished chain (Sec. 3.2.2); the formation, drift and crosscoder
    stages are needed only by what reads them. Raises :class:`StageNotRunError` without a chain and
    :class:`RunConfigError` when the config cannot be recovered.
    """
    return Run(run_dir, config)
