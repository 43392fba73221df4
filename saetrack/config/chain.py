"""Config section of the SAE-Track chain (notebook 02): SAE hyperparameters, token budgets, the SAE schedule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from saetrack.config.base import fail, require_positive

__all__ = [
    "CHAIN_HASH_DEFAULTS",
    "COMPARISON_ONLY_FIELDS",
    "MATMUL_PRECISIONS",
    "ChainConfig",
    "training_fields",
]


#: Chain fields read only by the comparison stage (notebook 02's controls): they do not change what the chain and
#: its baselines train, so :func:`training_fields` leaves them out of the chain's config hash.
COMPARISON_ONLY_FIELDS: tuple[str, ...] = ("seed_control",)

#: Fields added to :class:`ChainConfig` after runs were made: left out of the chain's config hash while at these
#: defaults, so run directories made before them stay current.
CHAIN_HASH_DEFAULTS: dict[str, object] = {"matmul_precision": "fp32", "target_l0": None, "calibration_tokens": 262_144}

#: Choices of ``ChainConfig.matmul_precision``: the precision of the SAE training step's matrix products.
MATMUL_PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "bf16")


def training_fields(chain: dict[str, Any]) -> dict[str, Any]:
    """The chain section (as in ``RunConfig.to_dict()["chain"]``) as the chain's config hash sees it: without
    :data:`COMPARISON_ONLY_FIELDS`, and without :data:`CHAIN_HASH_DEFAULTS` fields while at their defaults."""
    return {
        k: v
        for k, v in chain.items()
        if k not in COMPARISON_ONLY_FIELDS and not (k in CHAIN_HASH_DEFAULTS and CHAIN_HASH_DEFAULTS[k] == v)
    }


@dataclass(frozen=True)
class ChainConfig:
    """SAE-Track chain (notebook 02): SAE hyperparameters, token budgets and the checkpoint schedule."""

    #: Checkpoint indices (into ``model.checkpoint_steps``) that get an SAE, in training order.
    schedule: tuple[int, ...] = ()
    #: Checkpoint indices (a subset of ``schedule``) that also get an SAE trained from scratch.
    baseline: tuple[int, ...] = ()
    #: Dictionary size = expansion_factor * d_model.
    expansion_factor: int = 8
    #: L1 coefficient lambda of Eq. 3 (with ``l1_scale="activation_norm"``: the paper's scale-free lambda).
    l1_coefficient: float = 8e-5
    #: ``"activation_norm"`` (default, the paper's objective): the paper's trainer divided each token's squared
    #: error by the norm of the centred activation, so reconstruction and L1 both scale linearly with the
    #: activation norm and one lambda fits every checkpoint. With SAELens' plain MSE that is the same as a
    #: per-link coefficient ``l1_coefficient * d_model * E||x - mean(x)||`` over the link's own activations
    #: (up to per-token weighting), which each link records and saves. ``"none"``: the coefficient as given.
    l1_scale: Literal["activation_norm", "none"] = "activation_norm"
    #: ``"unit"``: unit-norm decoder with plain L1 (Eq. 5); ``"weighted"``: L1 weighted by decoder norms (Eq. 4).
    decoder_norm: Literal["unit", "weighted"] = "unit"
    #: Subtract the decoder bias from the encoder input (c = 1 in Eq. 2).
    apply_b_dec_to_input: bool = True
    lr_first: float = 4e-4
    lr_link: float = 4e-5
    warmup_steps_first: int = 100
    warmup_steps_link: int = 3
    #: Training tokens of the first (randomly initialised) SAE and of every later link.
    first_tokens: int = 2_000_000
    link_tokens: int = 100_000
    #: Tokens per SAE training batch.
    batch_size: int = 4096
    #: ``"fresh"``: each link starts a new Adam state (default, as the paper's code: each link is a new run);
    #: ``"carry"``: the Adam moments of the previous link are carried over.
    optimizer_policy: Literal["fresh", "carry"] = "fresh"
    #: Tokens of the from-scratch baseline SAEs (``None``: ``first_tokens``).
    baseline_tokens: int | None = None
    #: Precision of the matrix products of SAE training (the step loop only; Adam state and weights stay float32):
    #: ``"fp32"`` (default: exact float32), ``"tf32"`` (CUDA TensorFloat-32 products, allowed only around the step
    #: loop; no effect on the CPU) or ``"bf16"`` (the fused step's five products take bfloat16 operands with float32
    #: accumulation and output; emulated on the CPU). ``benchmarks/bench_precision.py`` compares bf16 with fp32.
    matmul_precision: Literal["fp32", "tf32", "bf16"] = "fp32"
    #: Target L0 (active features per token) of the first link: when set, ``l1_coefficient`` is only the search's
    #: starting point and the chain's coefficient is calibrated to this L0 on short runs on the first checkpoint
    #: (:mod:`saetrack.stages.chain.calibrate`), then kept fixed along the chain. ``None``: ``l1_coefficient`` as given.
    target_l0: float | None = None
    #: Training tokens of each calibration run (at most the first link's ``first_tokens``).
    calibration_tokens: int = 262_144
    #: Seed-to-seed control of the feature agreement (Fig. S5): at (at most) this many baseline checkpoints a second
    #: from-scratch SAE is trained with another seed (else the baseline's exact settings, rows and budget) and matched
    #: to the first. ``k``: ``k`` of them, spread back from the last (:attr:`seed_control_indices`; 2: the middle and
    #: the last); ``None``: every one; ``0``: none. Each costs one baseline's training (nano: 1M tokens, against
    #: 2.35M for the whole chain), hence the default 2.
    seed_control: int | None = 2
    #: The chain's seed (:attr:`RunConfig.chain_seed`): which windows of the corpus every token set reads, every SAE's
    #: initialisation and shuffle, the analyses' random samples. ``None``: the run seed (which also seeds the model
    #: suite); set it to vary the chain alone on one model (the seed study of notebook 04).
    seed: int | None = None

    def __post_init__(self) -> None:
        require_positive(
            "chain",
            {
                "expansion_factor": self.expansion_factor,
                "l1_coefficient": self.l1_coefficient,
                "lr_first": self.lr_first,
                "lr_link": self.lr_link,
                "first_tokens": self.first_tokens,
                "link_tokens": self.link_tokens,
                "batch_size": self.batch_size,
                "calibration_tokens": self.calibration_tokens,
            },
        )
        if self.target_l0 is not None:
            require_positive("chain", {"target_l0": self.target_l0})
        if self.baseline_tokens is not None:
            require_positive("chain", {"baseline_tokens": self.baseline_tokens})
        if not self.schedule:
            fail("chain", "schedule", self.schedule, "at least one checkpoint index")
        if any(i < 0 for i in self.schedule) or list(self.schedule) != sorted(set(self.schedule)):
            fail("chain", "schedule", self.schedule, "non-negative, strictly ascending checkpoint indices")
        missing = [i for i in self.baseline if i not in self.schedule]
        if missing:
            fail("chain", "baseline", self.baseline, f"indices must be in chain.schedule; {missing} are not")
        if self.l1_scale not in ("activation_norm", "none"):
            fail("chain", "l1_scale", self.l1_scale, "one of 'activation_norm', 'none'")
        if self.decoder_norm not in ("unit", "weighted"):
            fail("chain", "decoder_norm", self.decoder_norm, "one of 'unit' (Eq. 5), 'weighted' (Eq. 4)")
        if self.optimizer_policy not in ("fresh", "carry"):
            fail("chain", "optimizer_policy", self.optimizer_policy, "one of 'fresh', 'carry'")
        if self.matmul_precision not in MATMUL_PRECISIONS:
            fail("chain", "matmul_precision", self.matmul_precision, "one of 'fp32', 'tf32' (CUDA), 'bf16'")
        if self.seed_control is not None and self.seed_control < 0:
            fail("chain", "seed_control", self.seed_control, "must be >= 0 (0: no seed control), or None (every "
                 "baseline checkpoint)")  # fmt: skip
        if self.seed is not None and self.seed < 0:
            fail("chain", "seed", self.seed, "must be >= 0, or None (the run seed)")
        for name in ("warmup_steps_first", "warmup_steps_link"):
            if getattr(self, name) < 0:
                fail("chain", name, getattr(self, name), "must be >= 0")

    @property
    def baseline_token_budget(self) -> int:
        return self.baseline_tokens if self.baseline_tokens is not None else self.first_tokens

    @property
    def seed_control_indices(self) -> tuple[int, ...]:
        """Baseline checkpoint indices that get a second-seed SAE: ``seed_control`` of them (all when ``None`` or more),
        evenly spaced from the last backwards (2 of 5: the middle and the last), in schedule order."""
        n = len(self.baseline) if self.seed_control is None else min(self.seed_control, len(self.baseline))
        if n == 0:
            return ()
        picks = {len(self.baseline) - 1 - round(j * len(self.baseline) / n) for j in range(n)}
        return tuple(self.baseline[i] for i in sorted(picks))

    def tokens_for(self, position: int) -> int:
        """Training tokens of the link at ``position`` in the schedule (first link or later link)."""
        return self.first_tokens if position == 0 else self.link_tokens
