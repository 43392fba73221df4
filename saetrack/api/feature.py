"""The view of one SAE feature of a finished run: what the formation, drift and crosscoder stages stored about it.

:meth:`saetrack.api.Run.feature` returns a :class:`Feature`; each of its methods reads one stage's stored arrays
through the loaders the notebooks use (:func:`saetrack.stages.formation.load_formation`,
:func:`saetrack.stages.drift.load_drift`, :func:`saetrack.stages.crosscoder.load_crosscoder_result`,
:func:`saetrack.stages.crosscoder.method_comparison.load_method_comparison`) and renders contexts with the formation
stage's own :func:`saetrack.stages.formation.top_contexts`. Nothing is recomputed except the decoder cosine between
adjacent links (:meth:`saetrack.api.Run.adjacent_cosines`, once per run for every feature), which no stage stores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from saetrack.stages.crosscoder.method_comparison import MATCH_THRESHOLD
from saetrack.stages.formation import top_contexts as formation_top_contexts
from saetrack.stages.formation.examples import example_cell

if TYPE_CHECKING:
    from saetrack.api import Run

__all__ = ["ActivationStats", "Context", "CrosscoderMatch", "Drift", "Feature"]


class Context(NamedTuple):
    """One of a feature's top datapoints in the analysis set (a cell of Fig. 2): its activation ``f_i(x)`` (Eq. 2),
    the decoded text window with the activating token marked «tok», and the same window as HTML (``<mark>``)."""

    activation: float
    text: str
    html: str


@dataclass(frozen=True)
class ActivationStats:
    """What the formation stage stored about one feature at one checkpoint (Sec. 4, Def. 4.1-4.2, App. A.1)."""

    feature: int
    step: int
    #: "token", "concept" or "inactive" at this checkpoint (Def. 4.1-4.2)
    label: str
    #: live after App. A.1's filter (not dead, not ultra-low) over the whole chain
    live: bool
    #: the dominant token id among the top-k datapoints and its decoded text
    dominant_token: int
    dominant_text: str
    #: the dominant token's share of the active top-k datapoints (``None`` for stage folders without shares)
    dominant_share: float | None
    #: activations of the top-k analysis datapoints, largest first (the first is the maximum over the analysis set)
    top_activations: tuple[float, ...]
    #: mean activation over the active ones of those datapoints
    mean_top_activation: float
    #: how many of the top-k datapoints activate the feature (> 0)
    n_active: int
    #: firing frequency on the link's training tokens (SAELens' ``sparsity.safetensors``; ``None`` when absent)
    frequency: float | None

    @property
    def max_activation(self) -> float:
        """The largest activation of the feature over the analysis set at this checkpoint (the top datapoint)."""
        return self.top_activations[0] if self.top_activations else 0.0


@dataclass(frozen=True)
class Drift:
    """The decoder drift of one feature along the chain (Sec. 6.1, Fig. 6a/6b)."""

    feature: int
    #: the chain's checkpoint steps ``[T]``
    steps: tuple[int, ...]
    #: cosine of the feature's decoder direction at each step with its direction at the final step ``[T]``
    to_final: np.ndarray
    #: cosine of its decoder direction between each pair of adjacent steps ``[T-1]``
    adjacent: np.ndarray
    #: the step at which the feature formed (the drift stage's formation time), ``None`` if never or not live
    formation_step: int | None


@dataclass(frozen=True)
class CrosscoderMatch:
    """The crosscoder feature matched to a chain feature (Ge et al. 2025 beside SAE-Track, Fig. X06): the Hungarian
    matching of decoder directions at the last step both methods have, as the method-comparison stage matches them."""

    feature: int
    crosscoder_feature: int
    #: decoder cosine of the pair at ``final_step``
    cosine: float
    #: whether the cosine reaches the threshold above which the comparison counts a pair as the same feature
    above_threshold: bool
    final_step: int
    #: the crosscoder's snapshot steps ``[T']``
    steps: tuple[int, ...]
    #: the crosscoder feature's decoder norm at each snapshot ``[T']`` (its row of Fig. X02)
    norms: np.ndarray
    #: the snapshot step at which its norm first reaches the emergence fraction of its maximum (``None``: dead)
    emergence_step: int | None
    #: the chain feature's formation step (drift stage; ``None``: never formed)
    formation_step: int | None


class Feature:
    """Feature ``index`` of every link of a run's chain (one index, one identity along the chain: Sec. 3.2.2)."""

    def __init__(self, run: Run, index: int) -> None:
        self.run = run
        self.index = int(index)

    def __repr__(self) -> str:
        return f"Feature({self.index}, run={self.run.config.preset!r})"

    def top_contexts(self, step: int, k: int = 5) -> list[Context]:
        """The feature's top-``k`` datapoints in the analysis set under the link at ``step`` (Fig. 2's contexts):
        activation, text window with the activating token marked «tok», and HTML; inactive datapoints left out.

        Rendered by the formation stage's :func:`~saetrack.stages.formation.top_contexts` from its stored top-k.
        """
        result = self.run.formation()
        stored = int(result.top_values.shape[-1])
        if not 1 <= k <= stored:
            raise ValueError(f"k must lie in [1, {stored}] (the formation stage stored the top {stored}), got {k}.")
        rows = formation_top_contexts(
            result, self.index, self.run.position(step), self.run.tokenizer(), self.run.analysis_tokens(), n=k
        )
        return [Context(*row) for row in rows]

    def activation_stats(self, step: int) -> ActivationStats:
        """The formation stage's record of the feature at ``step``: its token/concept label (Def. 4.1-4.2), dominant
        token and share, top-k activations (max and mean), App. A.1 liveness, and the link's firing frequency.

        The dominant token is counted over the active top-k datapoints by the formation stage's Fig. 2 cell
        (:func:`~saetrack.stages.formation.examples.example_cell`).
        """
        result, position = self.run.formation(), self.run.position(step)
        values = np.asarray(result.top_values[position, self.index], dtype=np.float64)
        label = str(result.labels[position, self.index])
        tokenizer, tokens = self.run.tokenizer(), self.run.analysis_tokens()
        cell = example_cell(tokenizer, tokens, values, result.top_indices[position, self.index], label, 0)
        active = values[values > 0]
        frequency = self.run.firing_frequency(step)
        return ActivationStats(
            feature=self.index,
            step=int(step),
            label=label,
            live=bool(result.live[self.index]),
            dominant_token=int(cell["dominant"]),
            dominant_text=str(cell["dominant_text"]),
            dominant_share=float(result.shares[position, self.index]) if result.shares.size else None,
            top_activations=tuple(float(v) for v in values),
            mean_top_activation=float(active.mean()) if active.size else 0.0,
            n_active=int(cell["n_active"]),
            frequency=None if frequency is None else float(frequency[self.index]),
        )

    def drift(self) -> Drift:
        """The feature's decoder cosine to its final direction at every step (the drift stage's array, Fig. 6a/6b)
        and between adjacent steps (:meth:`saetrack.api.Run.adjacent_cosines`, computed once for every feature,
        Sec. 6.1), with its formation step."""
        result = self.run.drift()
        return Drift(
            feature=self.index,
            steps=tuple(int(s) for s in result.steps),
            to_final=np.asarray(result.cosine[:, self.index], dtype=np.float64),
            adjacent=np.asarray(self.run.adjacent_cosines()[:, self.index], dtype=np.float64),
            formation_step=self.formation_step,
        )

    @property
    def live(self) -> bool:
        """Whether the feature is live (App. A.1: neither dead nor ultra-low at every checkpoint)."""
        return bool(self.run.formation().live[self.index])

    @property
    def pattern(self) -> str:
        """The feature's evolution pattern (Sec. 4.2): "maintaining", "shifting", "grouping" or "other"; the
        formation stage also uses "interrupted" (its index reused after an inactive stretch) and "excluded" (not
        live)."""
        return str(self.run.formation().patterns[self.index])

    @property
    def sub_pattern(self) -> str:
        """The feature's sub-pattern (Sec. 4.2, e.g. "shifting token->concept"; "excluded" when not live)."""
        sub = self.run.formation().sub_patterns
        return str(sub[self.index]) if sub.size else ""

    @property
    def formation_step(self) -> int | None:
        """The step at which the feature formed (the drift stage's formation time, Sec. 6.1, Fig. 7's colours);
        ``None`` when it never formed or is not live."""
        result = self.run.drift()
        try:
            time = result.formation_time_of(self.index)
        except KeyError:
            return None
        return int(result.steps[time]) if time >= 0 else None

    def crosscoder(self) -> CrosscoderMatch:
        """The crosscoder feature matched to this one (:meth:`saetrack.api.Run.crosscoder_matching`, the matching
        behind Fig. X06): its index, the pair's decoder cosine, its decoder norm per snapshot (Fig. X02's row) and its
        emergence step, beside this feature's formation step.

        Raises :class:`~saetrack.api.artifacts.StageNotRunError` when the crosscoder stage did not run, and
        ``KeyError`` when this feature has no partner (not live, or more live chain features than alive crosscoder
        features).
        """
        matching = self.run.crosscoder_matching()
        hits = np.flatnonzero(matching.index_b == self.index)
        if hits.size == 0:
            raise KeyError(
                f"feature {self.index} has no matched crosscoder feature: only live features are matched "
                f"({len(matching.index_b)} of {self.run.n_features} are)"
            )
        hit = int(hits[0])
        other, result = int(matching.index_a[hit]), self.run.crosscoder()
        emergence = int(result.emergence[other])
        cosine = float(matching.cosines[hit])
        return CrosscoderMatch(
            feature=self.index,
            crosscoder_feature=other,
            cosine=cosine,
            above_threshold=cosine >= MATCH_THRESHOLD,
            final_step=int(self.run.method_comparison()[0]["final_step"]),
            steps=tuple(int(s) for s in result.steps),
            norms=np.asarray(result.norms[other], dtype=np.float64),
            emergence_step=int(result.steps[emergence]) if emergence >= 0 else None,
            formation_step=self.formation_step,
        )
