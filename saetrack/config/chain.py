"""Config section of the SAE-Track chain (notebook 02): SAE hyperparameters, token budgets, the SAE schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from saetrack.config.base import fail, require_positive

__all__ = [
    "CHAIN_HASH_DEFAULTS",
    "CHECK_ONLY_FIELDS",
    "COMPARISON_ONLY_FIELDS",
    "LINK_ARCHITECTURES",
    "MATMUL_PRECISIONS",
    "SEARCHED_ARCHITECTURES",
    "ChainConfig",
    "training_fields",
]


#: Chain fields read only by the comparison stage (notebook 02's controls): they do not change what the chain and
#: its baselines train, so :func:`training_fields` leaves them out of the chain's config hash.
COMPARISON_ONLY_FIELDS: tuple[str, ...] = ("seed_control",)

#: Chain fields that say what to do with a finished link, not how it is trained: left out of the chain's config hash.
CHECK_ONLY_FIELDS: tuple[str, ...] = ("link_check",)

#: Fields added to :class:`ChainConfig` after runs were made: left out of the chain's config hash while at these
#: defaults, so run directories made before them stay current.
CHAIN_HASH_DEFAULTS: dict[str, object] = {
    "matmul_precision": "fp32",
    "target_l0": None,
    "calibration_tokens": 262_144,
    "calibration_full_runs": 4,
    "architecture": "standard",
    "k": None,
    "jumprelu_init_threshold": 0.01,
    "jumprelu_bandwidth": 0.05,
    "restart_below": None,
    "restart_l0_ratio": None,
}

#: Choices of ``ChainConfig.matmul_precision``: the precision of the SAE training step's matrix products.
MATMUL_PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "bf16")

#: Choices of ``ChainConfig.architecture``: the SAELens SAE architecture of every link.
LINK_ARCHITECTURES: tuple[str, ...] = ("standard", "topk", "batchtopk", "jumprelu")

#: Architectures whose sparsity is set by a coefficient, which ``target_l0`` calibrates by a search (TopK and
#: BatchTopK set their L0 directly: ``k``).
SEARCHED_ARCHITECTURES: tuple[str, ...] = ("standard", "jumprelu")


def training_fields(chain: dict[str, Any]) -> dict[str, Any]:
    """The chain section (as in ``RunConfig.to_dict()["chain"]``) as the chain's config hash sees it: without
    :data:`COMPARISON_ONLY_FIELDS`, and without :data:`CHAIN_HASH_DEFAULTS` fields while at their defaults."""
    return {
        k: v
        for k, v in chain.items()
        if k not in COMPARISON_ONLY_FIELDS + CHECK_ONLY_FIELDS
        and not (k in CHAIN_HASH_DEFAULTS and CHAIN_HASH_DEFAULTS[k] == v)
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
    #: SAE architecture of every link (SAELens' own, :mod:`saetrack.sae.architectures`): ``"standard"`` (default, the
    #: paper's ReLU SAE with the L1 penalty of Eq. 3-5), ``"topk"`` (the ``k`` largest pre-activations per token),
    #: ``"batchtopk"`` (the ``k * batch`` largest of a batch in training; a learned threshold, as JumpReLU, at
    #: inference) or ``"jumprelu"`` (a learned threshold per feature, trained with an L0 penalty).
    architecture: Literal["standard", "topk", "batchtopk", "jumprelu"] = "standard"
    #: The sparsity coefficient of Eq. 3 (with ``l1_scale="activation_norm"``: the paper's scale-free lambda): the L1
    #: coefficient of ``"standard"``, the L0-penalty coefficient of ``"jumprelu"``; unused by TopK and BatchTopK.
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
    #: ``"topk"``/``"batchtopk"``: ``k = round(target_l0)``, no search (:attr:`searches_coefficient`).
    target_l0: float | None = None
    #: Training tokens of each calibration run (at most the first link's ``first_tokens``).
    calibration_tokens: int = 262_144
    #: When ``calibration_tokens < first_tokens``: at most this many runs at the first link's own budget then correct
    #: λ (a secant step in log λ - log L0 each), since L1 keeps sparsifying past a short run; the run chosen is the
    #: first link itself, so it is not trained again. ``0``: the short runs' λ as it is.
    calibration_full_runs: int = 4
    #: Active features per token of ``"topk"`` (per token) and ``"batchtopk"`` (mean over a batch). ``None``:
    #: ``round(target_l0)``, with no calibration search. Only for those two architectures.
    k: int | None = None
    #: Initial threshold of every ``"jumprelu"`` feature (in pre-activation units; SAELens' default).
    jumprelu_init_threshold: float = 0.01
    #: Bandwidth of the straight-through estimator of ``"jumprelu"``'s threshold gradient (SAELens' default).
    jumprelu_bandwidth: float = 0.05
    #: Seed-to-seed control of the feature agreement (Fig. S5): at (at most) this many baseline checkpoints a second
    #: from-scratch SAE is trained with another seed (else the baseline's exact settings, rows and budget) and matched
    #: to the first. ``k``: ``k`` of them, spread back from the last (:attr:`seed_control_indices`; 2: the middle and
    #: the last); ``None``: every one; ``0``: none. Each costs one baseline's training (nano: 1M tokens, against
    #: 2.35M for the whole chain), hence the default 2.
    seed_control: int | None = 2
    #: A link that dies or saturates (:mod:`saetrack.stages.chain.health`): ``"error"`` (default) stops the chain with
    #: the fix named; ``"warn"`` prints the same message and goes on (the smoke presets: test-size links of a few Adam
    #: steps, whose L0 on the 32-wide smoke model exceeds its width).
    link_check: Literal["error", "warn"] = "error"
    #: Continuity rule of the chain (:mod:`saetrack.stages.chain.continuity`): when the previous link, unchanged,
    #: explains at most this share of checkpoint k's held-out variance, the chain is broken there and link k is trained
    #: as a first link (fresh initialisation, the first link's lr, warm-up and ``first_tokens``), recorded as a
    #: restart. Every link's slice then reserves ``first_tokens`` rows (:meth:`reserved_tokens_for`), so only
    #: streamed activations (``cache.mode = "streamed"``) leave the unread rows uncomputed. ``None`` (default): links
    #: always continue from the previous one, as in the paper (``saetrack watch`` too; opt in with 0.0).
    restart_below: float | None = None
    #: Outcome rule of the chain (:mod:`saetrack.stages.chain.continuity`): a later link is first trained from the
    #: previous one as usual; when its held-out L0 is more than this factor above or below the previous link's
    #: (λ is held along the chain, so a link's sparsity jumping several-fold in one link means the continued
    #: dictionary did not settle on this checkpoint), it is retrained as a first link and recorded as a restart.
    #: Every link's slice then reserves ``first_tokens`` rows, as under ``restart_below``. ``None`` (default):
    #: never, as in the paper. ``saetrack watch`` sets 2.0 unless ``--set`` gives it.
    restart_l0_ratio: float | None = None
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
        if self.calibration_full_runs < 0:
            fail("chain", "calibration_full_runs", self.calibration_full_runs, "must be >= 0")
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
        if self.link_check not in ("error", "warn"):
            fail("chain", "link_check", self.link_check, "one of 'error', 'warn'")
        if self.restart_below is not None and not math.isfinite(self.restart_below):
            fail("chain", "restart_below", self.restart_below, "a finite explained variance, or None (never restart)")
        ratio = self.restart_l0_ratio
        if ratio is not None and not (math.isfinite(ratio) and ratio > 1):
            fail("chain", "restart_l0_ratio", ratio, "a finite factor above 1, or None (never restart)")
        if self.seed is not None and self.seed < 0:
            fail("chain", "seed", self.seed, "must be >= 0, or None (the run seed)")
        for name in ("warmup_steps_first", "warmup_steps_link"):
            if getattr(self, name) < 0:
                fail("chain", name, getattr(self, name), "must be >= 0")
        self._check_architecture()

    def _check_architecture(self) -> None:
        """Validate ``architecture`` and the fields it reads (``k``, the JumpReLU fields, the matmul precision)."""
        if self.architecture not in LINK_ARCHITECTURES:
            fail("chain", "architecture", self.architecture, "one of " + ", ".join(map(repr, LINK_ARCHITECTURES)))
        topk = self.architecture in ("topk", "batchtopk")
        if self.k is not None and not topk:
            fail("chain", "k", self.k, f"only for architecture 'topk' or 'batchtopk' (not {self.architecture!r})")
        if self.k is not None and (isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1):
            fail("chain", "k", self.k, "an integer >= 1")
        if topk and self.k is None and self.target_l0 is None:
            fail("chain", "k", self.k, f"architecture {self.architecture!r} needs k, or target_l0 (k = its rounding)")
        if topk and self.target_l0 is not None:
            if round(self.target_l0) < 1:
                fail(
                    "chain", "target_l0", self.target_l0, f"k = round(target_l0) must be >= 1 for {self.architecture!r}"
                )
            if self.k is not None and self.k != round(self.target_l0):
                fail("chain", "k", self.k, f"must equal round(target_l0) = {round(self.target_l0)}, or be None")
        if not self.jumprelu_init_threshold >= 0:
            fail("chain", "jumprelu_init_threshold", self.jumprelu_init_threshold, "must be >= 0")
        if not self.jumprelu_bandwidth > 0:
            fail("chain", "jumprelu_bandwidth", self.jumprelu_bandwidth, "must be > 0")
        if self.matmul_precision == "bf16" and self.architecture != "standard":
            fail("chain", "matmul_precision", self.matmul_precision, "'bf16' sets the fused step of architecture "
                 f"'standard' only; use 'fp32' or 'tf32' with {self.architecture!r}")  # fmt: skip

    @property
    def topk_k(self) -> int | None:
        """``k`` of a ``"topk"``/``"batchtopk"`` link: ``k``, else ``round(target_l0)``; ``None`` for the others."""
        if self.architecture not in ("topk", "batchtopk"):
            return None
        return self.k if self.k is not None else round(float(self.target_l0 or 0))

    @property
    def searches_coefficient(self) -> bool:
        """Whether ``target_l0`` is reached by a search over the sparsity coefficient (:mod:`saetrack.sae.calibration`):
        set and the architecture's sparsity has a coefficient (:data:`SEARCHED_ARCHITECTURES`); TopK takes ``k``."""
        return self.target_l0 is not None and self.architecture in SEARCHED_ARCHITECTURES

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

    def reserved_tokens_for(self, position: int) -> int:
        """Training rows the token plan sets aside for the link at ``position``: :meth:`tokens_for`, or
        ``first_tokens`` for every link under either continuity rule (:attr:`may_restart`), since any link may then
        be trained as a first link (:mod:`saetrack.stages.chain.continuity`)."""
        return self.first_tokens if self.may_restart else self.tokens_for(position)

    @property
    def may_restart(self) -> bool:
        """Whether a later link may be trained as a first link: either rule of
        :mod:`saetrack.stages.chain.continuity` is on (``restart_below`` or ``restart_l0_ratio`` set)."""
        return self.restart_below is not None or self.restart_l0_ratio is not None
