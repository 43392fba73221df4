"""Config section of the cross-snapshot crosscoder (notebook 06; Ge et al. 2025, beside the SAE-Track chain)."""

from __future__ import annotations

from dataclasses import dataclass

from saetrack.config.base import fail, require_positive

__all__ = [
    "PAPER_EARLY_STEPS",
    "CrosscoderConfig",
    "default_snapshots",
]


#: Ge et al. (2025) take every Pythia checkpoint before this step (20 of them) and spread the rest over later training.
PAPER_EARLY_STEPS = 10_000


def default_snapshots(steps: tuple[int, ...], max_snapshots: int) -> tuple[int, ...]:
    """Checkpoint indices a crosscoder reads when none are named: all of them, or ``max_snapshots`` by the paper's rule.

    With more checkpoints than ``max_snapshots``: every checkpoint before step :data:`PAPER_EARLY_STEPS` (Ge et al.'s
    20 early Pythia snapshots, as many as fit), then the rest evenly spaced over later training, the last included
    (for Pythia's 154 checkpoints and 32 snapshots: 20 early + 12 late, as in the paper).
    """
    n = len(steps)
    if n <= max_snapshots:
        return tuple(range(n))
    early = [i for i, s in enumerate(steps) if s < PAPER_EARLY_STEPS][: max_snapshots - 1]
    later = [i for i in range(n) if i not in early]
    k = max_snapshots - len(early)
    if k == 1:
        picked = [later[-1]]
    else:
        picked = [later[round(j * (len(later) - 1) / (k - 1))] for j in range(k)]
    return tuple(sorted(set(early) | set(picked)))


@dataclass(frozen=True)
class CrosscoderConfig:
    """The crosscoder of notebook 06: which checkpoints it reads, its size, its training budget and its analyses."""

    #: Whether notebook 06 runs for this preset (``run_all.py`` skips the stage, and its plan, when off).
    enabled: bool = True
    #: Checkpoint indices (into ``model.checkpoint_steps``) read at once; ``()``: :func:`default_snapshots`.
    snapshots: tuple[int, ...] = ()
    #: At most this many snapshots when ``snapshots`` is empty (the paper's 32).
    max_snapshots: int = 32
    #: Dictionary size = expansion_factor * d_model; ``None``: the chain's (equal dictionary size, for item 2).
    expansion_factor: int | None = None
    #: Contexts of the training stream (its first ones: the tokens the chain's first SAE trains on) whose activations
    #: at every snapshot are cached (``crosscoder/activations/``) and trained on for ``epochs`` shuffled passes.
    train_contexts: int = 1024
    #: Long enough for the decoder norms to settle (notebook 06's rule, saetrack.analysis.emergence_controls), measured
    #: on nano (1024 contexts, batch 1024, lr decay 0.2): the row-normalised norm matrix changed 3.1% over the last
    #: 10% of 5 epochs, 3.3% of 8 and 1.8% of 10 (2%: settled); at a constant rate still 4.3% after 969 steps.
    epochs: int = 10
    batch_size: int = 1024
    lr: float = 1e-3
    #: λ of the sparsity penalty λ Σ_i tanh(c f_i Σ_θ ||W_dec,i^θ||), ramped up linearly over the first
    #: ``sparsity_warmup`` share of the steps; ``tanh_scale`` is c. With every snapshot normalised to unit mean norm,
    #: an active feature's f_i Σ_θ ||W_dec,i^θ|| is a few units at T = 28, so Anthropic's c = 4 saturates the tanh
    #: and leaves no gradient on the decoder norms of snapshots where the feature is absent (measured on nano: 13%
    #: dead features at c = 4, λ = 0.1; 2% at c = 0.05, λ = 1, at similar explained variance and L0 50-60).
    sparsity_coefficient: float = 1.0
    tanh_scale: float = 0.05
    sparsity_warmup: float = 0.05
    #: The learning rate decays linearly to zero over this last share of the steps (0: constant), as in Anthropic's
    #: crosscoder and SAE recipes: at a constant rate Adam's noise keeps the decoder norms moving (measured on nano:
    #: the row-normalised norm matrix still changed 3-4% per 50 steps after 500 steps), so they never settle.
    lr_decay: float = 0.2
    #: Anthropic's pre-activation loss on features that did not fire in the last ``dead_window_tokens`` tokens.
    pre_act_coefficient: float = 0.1
    dead_window_tokens: int = 20_000
    #: JumpReLU: straight-through kernel width and initial threshold (inputs have unit mean norm per snapshot).
    bandwidth: float = 0.05
    initial_threshold: float = 0.05
    initial_decoder_norm: float = 0.1
    #: Training state is saved every this many steps, so an interrupted run resumes there.
    save_every: int = 100
    #: Emergence: the first snapshot where a feature's decoder norm reaches this fraction of its maximum.
    emergence_fraction: float = 0.5
    #: An initialisation feature (emerged at the first snapshot) *decays* when its norm at the last snapshot is below
    #: this fraction of its maximum.
    decay_fraction: float = 0.5
    #: Train the control crosscoders beside the main one, each exactly like it (one more training each): null (i), the
    #: last snapshot repeated at every snapshot; null (iii), the snapshots up to ``dropped_early_max_step`` dropped;
    #: and the centred normalisation. Null (ii), permuted snapshot labels, needs no training and always runs.
    controls: bool = True
    #: Null (iii) drops the snapshots at steps <= this (nano: 0, 1, 2, 4, 8, the near-duplicate early checkpoints).
    dropped_early_max_step: int = 8
    #: Seeded permutations of the permuted-label null (ii) and of the rank-correlation null of Fig. X06.
    null_permutations: int = 1000
    #: Steps (inclusive) where the depth of the dip of the median row-normalised decoder norm is read: the window
    #: of the random baseline's peak in the progress measure (Fig. 5d on nano).
    dip_steps: tuple[int, int] = (8, 64)

    def __post_init__(self) -> None:
        require_positive(
            "crosscoder",
            {
                "max_snapshots": self.max_snapshots,
                "train_contexts": self.train_contexts,
                "epochs": self.epochs,
                "batch_size": self.batch_size,
                "lr": self.lr,
                "sparsity_coefficient": self.sparsity_coefficient,
                "tanh_scale": self.tanh_scale,
                "dead_window_tokens": self.dead_window_tokens,
                "bandwidth": self.bandwidth,
                "initial_threshold": self.initial_threshold,
                "initial_decoder_norm": self.initial_decoder_norm,
                "save_every": self.save_every,
                "null_permutations": self.null_permutations,
            },
        )
        if self.expansion_factor is not None:
            require_positive("crosscoder", {"expansion_factor": self.expansion_factor})
        if self.max_snapshots < 2:
            fail("crosscoder", "max_snapshots", self.max_snapshots, "must be >= 2 (a crosscoder compares snapshots)")
        if self.snapshots and (len(self.snapshots) < 2 or list(self.snapshots) != sorted(set(self.snapshots))):
            fail("crosscoder", "snapshots", self.snapshots, "at least two strictly ascending checkpoint indices")
        if any(i < 0 for i in self.snapshots):
            fail("crosscoder", "snapshots", self.snapshots, "checkpoint indices must be >= 0")
        if not 0 <= self.sparsity_warmup < 1:
            fail("crosscoder", "sparsity_warmup", self.sparsity_warmup, "must lie in [0, 1)")
        if not 0 <= self.lr_decay <= 1:
            fail("crosscoder", "lr_decay", self.lr_decay, "must lie in [0, 1]")
        if self.pre_act_coefficient < 0:
            fail("crosscoder", "pre_act_coefficient", self.pre_act_coefficient, "must be >= 0 (0: off)")
        if self.dropped_early_max_step < 0:
            fail("crosscoder", "dropped_early_max_step", self.dropped_early_max_step, "must be >= 0")
        if len(self.dip_steps) != 2 or not 0 <= self.dip_steps[0] <= self.dip_steps[1]:
            fail("crosscoder", "dip_steps", self.dip_steps, "two steps (first, last) with 0 <= first <= last")
        for name in ("emergence_fraction", "decay_fraction"):
            if not 0 < getattr(self, name) <= 1:
                fail("crosscoder", name, getattr(self, name), "must lie in (0, 1]")

    def snapshot_indices(self, steps: tuple[int, ...]) -> tuple[int, ...]:
        """The checkpoint indices read: ``snapshots`` when given, else :func:`default_snapshots`."""
        return self.snapshots or default_snapshots(steps, self.max_snapshots)
