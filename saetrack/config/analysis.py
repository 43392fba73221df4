"""Config sections of the analyses: formation (notebook 03), drift (notebook 04), scale study (notebook 05)."""

from __future__ import annotations

from dataclasses import dataclass

from saetrack.config.base import PRESETS, fail, require_positive

__all__ = [
    "DENSITY_ONLY_FIELDS",
    "DRIFT_HASH_DEFAULTS",
    "DriftConfig",
    "FormationConfig",
    "ScaleConfig",
    "drift_hash_fields",
]


#: Drift fields read only by the checkpoint-density study (its own folder ``density/`` and hash,
#: :mod:`saetrack.stages.drift.density`): the drift stage's hash never sees them, so turning the study on or off or
#: changing its strides leaves the drift stage current.
DENSITY_ONLY_FIELDS: tuple[str, ...] = ("density_strides",)

#: Fields added to :class:`DriftConfig` after runs were made: left out of the drift stage's hash while at these
#: defaults, so run directories made before them stay current (none yet besides :data:`DENSITY_ONLY_FIELDS`, which
#: are left out at any value).
DRIFT_HASH_DEFAULTS: dict[str, object] = {}


def drift_hash_fields(drift: dict[str, object]) -> dict[str, object]:
    """The drift section (as in ``RunConfig.to_dict()["drift"]``) as the drift stage's config hash sees it: without
    :data:`DENSITY_ONLY_FIELDS`, and without :data:`DRIFT_HASH_DEFAULTS` fields while at their defaults."""
    return {
        k: v
        for k, v in drift.items()
        if k not in DENSITY_ONLY_FIELDS and not (k in DRIFT_HASH_DEFAULTS and DRIFT_HASH_DEFAULTS[k] == v)
    }


@dataclass(frozen=True)
class FormationConfig:
    """Feature phases, patterns and formation (notebook 03; paper Sec. 4-5, App. A.1, C.2)."""

    #: Top-activating datapoints per feature (the paper's 25): D_i of Eq. 12 and the contexts of Fig. 2.
    top_k: int = 25
    #: A feature is token-level (Def. 4.1) when at least this share of its active top-k datapoints is one token.
    token_share: float = 0.5
    #: Fewer active top-k datapoints than this: the feature is "inactive" at that checkpoint.
    min_active: int = 5
    #: Ultra-low features (App. A.1): best density over checkpoints below this fraction of analysis tokens.
    min_density: float = 1e-4
    #: Random datapoints of the progress-measure baselines (the paper's code: 150 and 100).
    n_random_activation: int = 150
    n_random_feature: int = 100
    #: Features shown in the UMAP figure (Fig. 4): the most formed token- and concept-level features.
    umap_token_features: int = 4
    umap_concept_features: int = 3
    umap_seed: int = 42
    #: Fig. 2: examples per category (maintaining, shifting token->token, shifting token->concept, grouping
    #: noise->coherent; the clearest by the rules of saetrack.analysis.patterns) and contexts per table cell.
    examples_per_pattern: int = 1
    contexts_per_cell: int = 6

    def __post_init__(self) -> None:
        require_positive(
            "formation",
            {
                "top_k": self.top_k,
                "min_active": self.min_active,
                "n_random_activation": self.n_random_activation,
                "n_random_feature": self.n_random_feature,
                "examples_per_pattern": self.examples_per_pattern,
                "contexts_per_cell": self.contexts_per_cell,
            },
        )
        if self.top_k < 2:
            fail("formation", "top_k", self.top_k, "must be >= 2 (similarities need pairs)")
        if not 0 < self.token_share <= 1:
            fail("formation", "token_share", self.token_share, "must lie in (0, 1]")
        if self.min_active > self.top_k:
            fail("formation", "min_active", self.min_active, f"must be <= top_k={self.top_k}")
        if not 0 <= self.min_density < 1:
            fail("formation", "min_density", self.min_density, "must lie in [0, 1)")
        for name in ("umap_token_features", "umap_concept_features", "umap_seed"):
            if getattr(self, name) < 0:
                fail("formation", name, getattr(self, name), "must be >= 0")


@dataclass(frozen=True)
class DriftConfig:
    """Decoder drift, formation times, trajectories and training phases (notebook 04; paper Sec. 6)."""

    #: A feature counts as formed at checkpoint t when its label (and, for token-level features, its token) equals
    #: the final one and its activation-space progress measure is at least this fraction of its final value.
    formed_fraction: float = 0.5
    #: Fig. 6b: features sampled reproducibly from all live features.
    n_sampled_features: int = 8
    #: Fig. 7: trajectories per evolution pattern (maintaining, shifting, grouping).
    trajectories_per_pattern: int = 2
    #: Fig. 6a: checkpoints shown as histograms (spread over the chain like the paper's panels).
    n_histograms: int = 6
    #: Change-point rule: each segment of a phase fit spans at least this many checkpoints.
    min_phase_checkpoints: int = 2
    #: Phase fits of 1 up to this many segments are compared by BIC (>= 3, so three phases can lose to more).
    max_segments: int = 6
    #: Drift noise floor: links retrained from the final SAE on the unchanged final checkpoint (None: as many as the
    #: chain has after its first, T - 1; 0: no floor).
    noise_floor_links: int | None = None
    #: The checkpoint-density study (:mod:`saetrack.stages.drift.density`): chains over every s-th checkpoint of the
    #: schedule for each stride s here, beside the run's own chain (stride 1), each trained as the chain's links are.
    #: ``()``: no study. Read only by the study, never by the drift stage's hash (:data:`DENSITY_ONLY_FIELDS`).
    density_strides: tuple[int, ...] = (2, 4, 8)

    def __post_init__(self) -> None:
        strides = self.density_strides
        if any(s < 2 for s in strides) or list(strides) != sorted(set(strides)):
            fail("drift", "density_strides", strides, "strictly ascending strides >= 2 (stride 1 is the chain itself)")
        if not 0 < self.formed_fraction <= 1:
            fail("drift", "formed_fraction", self.formed_fraction, "must lie in (0, 1]")
        if self.max_segments < 3:
            fail("drift", "max_segments", self.max_segments, "must be >= 3 (three phases must be among the fits)")
        if self.noise_floor_links is not None and self.noise_floor_links < 0:
            fail("drift", "noise_floor_links", self.noise_floor_links, "must be >= 0 (or None: T - 1)")
        require_positive(
            "drift",
            {
                "n_sampled_features": self.n_sampled_features,
                "trajectories_per_pattern": self.trajectories_per_pattern,
                "n_histograms": self.n_histograms,
                "min_phase_checkpoints": self.min_phase_checkpoints,
            },
        )


@dataclass(frozen=True)
class ScaleConfig:
    """The scale study (notebook 05; paper App. C.3): the presets of the model sizes compared, this run's included.

    Each size runs the whole pipeline (notebooks 01-04) in its own run directory; notebook 05 draws the per-size
    figures (Fig. 9-16) and the cross-scale summary. Sizes are ordered small to large.
    """

    presets: tuple[str, ...] = ()
    #: Sizes other than this run's whose pipelines run at once, each in its own process on one torch thread (small
    #: models use a second thread poorly, so two one-thread pipelines fill two cores better than one after the
    #: other). 1: one after the other in this process (GPU presets: one GPU).
    parallel_sizes: int = 2
    #: The seed study (notebook 05): the preset it runs on - the cheapest size that shows the phases - ("": off).
    #: Its pipeline (notebooks 01-04's computations, no figures) runs once per model seed x chain seed, and once more
    #: with a longer learning-rate warm-up of the model suite.
    seed_preset: str = ""
    #: Model (suite) seeds (the run seed) and chain seeds (``chain.seed``) of the seed study; every pair runs.
    model_seeds: tuple[int, ...] = (0, 1)
    chain_seeds: tuple[int, ...] = (0, 1, 2)
    #: The warm-up control: the seed study's first model retrained with this many learning-rate warm-up steps (None:
    #: no control). Do the first phase boundaries move with the warm-up's end?
    warmup_steps: int | None = None

    def __post_init__(self) -> None:
        if self.parallel_sizes < 1:
            fail("scale", "parallel_sizes", self.parallel_sizes, "must be >= 1")
        if self.seed_preset and self.seed_preset not in PRESETS:
            fail("scale", "seed_preset", self.seed_preset, f"a known preset or '' (off); known: {sorted(PRESETS)}")
        if self.seed_preset and (len(self.model_seeds) < 1 or len(self.chain_seeds) < 1):
            fail("scale", "model_seeds", (self.model_seeds, self.chain_seeds), "at least one model and one chain seed")
        for name in ("model_seeds", "chain_seeds"):
            values = getattr(self, name)
            if len(set(values)) != len(values) or any(v < 0 for v in values):
                fail("scale", name, values, "distinct seeds >= 0")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            fail("scale", "warmup_steps", self.warmup_steps, "must be >= 0, or None (no warm-up control)")
        if len(set(self.presets)) != len(self.presets):
            fail("scale", "presets", self.presets, "no preset may appear twice")
        unknown = [p for p in self.presets if p not in PRESETS]
        if unknown:
            fail("scale", "presets", self.presets, f"known presets only; {unknown} are not ({sorted(PRESETS)})")
