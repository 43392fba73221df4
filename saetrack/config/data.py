"""Config sections of the data sources.

Corpus, the nano model suite, the studied model's checkpoints, the activation cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from saetrack.config.base import fail, require_positive
from saetrack.config.schedules import pythia_like_steps

__all__ = [
    "CACHE_HASH_DEFAULTS",
    "CACHE_HOOKS",
    "CacheConfig",
    "CorpusConfig",
    "ModelConfig",
    "SuiteConfig",
    "hashed_cache_section",
]


@dataclass(frozen=True)
class CorpusConfig:
    """Where the text comes from and how it is tokenized (nano suite only; Hub presets use their own)."""

    #: ``"sotu"`` (English prose, offline: the State of the Union addresses 1790-2026, see
    #: :mod:`saetrack.data.english`), ``"stdlib"`` (the running interpreter's standard-library sources and docs,
    #: offline), a path to a local ``.txt`` file or folder of text files, or ``"hf:<dataset name>"`` (online only).
    source: str = "sotu"
    #: Fraction of documents held out (chosen by a hash of the document name, so it is deterministic).
    heldout_fraction: float = 0.05
    #: Byte-level BPE vocabulary size.
    vocab_size: int = 4096
    #: Cap on the corpus size in characters (``None``: everything). Used by the smoke preset.
    max_chars: int | None = None
    #: Text column and split for ``hf:`` datasets.
    hf_text_column: str = "text"
    hf_split: str = "train"

    def __post_init__(self) -> None:
        if not 0 < self.heldout_fraction < 0.5:
            fail("corpus", "heldout_fraction", self.heldout_fraction, "must lie in (0, 0.5)")
        if self.vocab_size < 259:
            fail("corpus", "vocab_size", self.vocab_size, "must be >= 259 (256 bytes + specials)")
        if self.max_chars is not None:
            require_positive("corpus", {"max_chars": self.max_chars})
        if not self.source:
            fail("corpus", "source", self.source, "'sotu', 'stdlib', a local path, or 'hf:<dataset>'")


@dataclass(frozen=True)
class SuiteConfig:
    """The nano-Pythia model suite trained here: a GPT-NeoX model and its checkpoint schedule."""

    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    #: MLP width; Pythia uses 4 * d_model.
    d_mlp: int = 512
    #: Fraction of each head's dimensions that are rotary (Pythia: 0.25).
    rotary_pct: float = 0.25
    context_length: int = 128
    #: Sequences per optimizer step (tokens per step = batch_size * context_length).
    batch_size: int = 32
    total_steps: int = 2000
    #: Number of evenly spaced checkpoints after the log-spaced ones (see :func:`pythia_like_steps`).
    n_even_checkpoints: int = 20
    lr: float = 1e-3
    #: Linear warm-up steps, then cosine decay to ``min_lr_ratio * lr`` (Pythia: 1% warm-up, 10% floor).
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    #: Held-out sequences used to evaluate the loss at every checkpoint.
    eval_sequences: int = 256

    def __post_init__(self) -> None:
        require_positive(
            "suite",
            {
                "n_layers": self.n_layers,
                "d_model": self.d_model,
                "n_heads": self.n_heads,
                "d_mlp": self.d_mlp,
                "context_length": self.context_length,
                "batch_size": self.batch_size,
                "total_steps": self.total_steps,
                "n_even_checkpoints": self.n_even_checkpoints,
                "lr": self.lr,
                "eval_sequences": self.eval_sequences,
            },
        )
        if self.d_model % self.n_heads:
            fail("suite", "n_heads", self.n_heads, f"must divide d_model={self.d_model}")
        if not 0 < self.rotary_pct <= 1:
            fail("suite", "rotary_pct", self.rotary_pct, "must lie in (0, 1]")
        if not 0 <= self.min_lr_ratio <= 1:
            fail("suite", "min_lr_ratio", self.min_lr_ratio, "must lie in [0, 1]")
        if not 0 <= self.warmup_steps < self.total_steps:
            fail("suite", "warmup_steps", self.warmup_steps, f"must lie in [0, total_steps={self.total_steps})")
        if self.n_even_checkpoints > self.total_steps:
            fail("suite", "n_even_checkpoints", self.n_even_checkpoints, f"must be <= total_steps={self.total_steps}")

    @property
    def checkpoint_steps(self) -> tuple[int, ...]:
        """Training steps at which a checkpoint is saved (Pythia-like, see :func:`pythia_like_steps`)."""
        return pythia_like_steps(self.total_steps, self.n_even_checkpoints)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.context_length


@dataclass(frozen=True)
class ModelConfig:
    """Which model's checkpoints are studied and where they come from."""

    #: ``"suite"``: the nano suite trained by this project into the run directory;
    #: ``"local"``: a folder of ``step{N}/`` Hugging Face checkpoints at ``local_path``;
    #: ``"hub"``: a Hub repo ``repo_id`` with one revision per step (``revision_template``).
    source: Literal["suite", "local", "hub"] = "suite"
    repo_id: str | None = None
    local_path: str | None = None
    revision_template: str = "step{step}"
    #: All checkpoint steps of the suite, ascending. For ``"suite"`` this must equal the suite's schedule.
    checkpoint_steps: tuple[int, ...] = ()
    #: Number of transformer blocks (validates the hooked layer); ``None`` when unknown before loading.
    n_layers: int | None = None
    #: Residual-stream width, when known in advance.
    d_model: int | None = None

    def __post_init__(self) -> None:
        if self.source not in ("suite", "local", "hub"):
            fail("model", "source", self.source, "one of 'suite', 'local', 'hub'")
        if self.source == "hub" and not self.repo_id:
            fail("model", "repo_id", self.repo_id, "a Hub repo id is required when source='hub'")
        if self.source == "local" and not self.local_path:
            fail("model", "local_path", self.local_path, "a folder is required when source='local'")
        steps = self.checkpoint_steps
        if not steps:
            fail("model", "checkpoint_steps", steps, "at least one checkpoint step")
        if any(s < 0 for s in steps) or list(steps) != sorted(set(steps)):
            fail("model", "checkpoint_steps", steps, "non-negative, strictly ascending steps")
        if "{step}" not in self.revision_template:
            fail("model", "revision_template", self.revision_template, "must contain '{step}'")
        if self.n_layers is not None:
            require_positive("model", {"n_layers": self.n_layers})


#: The hooks of a block an SAE can read (``blocks.{layer}.hook_{hook}``): the residual stream entering the block, after
#: its attention, leaving it; the attention's and the MLP's outputs (what each adds to the residual stream).
CACHE_HOOKS: tuple[str, ...] = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")


@dataclass(frozen=True)
class CacheConfig:
    """Activation cache (notebook 01): which hook, which contexts, how many tokens per link."""

    #: The SAE reads ``blocks.{layer}.hook_{hook}`` (by default the residual stream entering block ``layer``).
    layer: int = 2
    #: Tokens per context for both the analysis set and the training tokens.
    context_length: int = 128
    #: Contexts of the fixed analysis set: the same datapoints at every checkpoint.
    analysis_contexts: int = 512
    #: Held-out tokens per link used for the link's quality metrics.
    heldout_tokens: int = 16_384
    #: Contexts per forward pass while caching.
    batch_contexts: int = 32
    #: Storage dtype of cached activations.
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    #: ``"cached"``: notebook 01 writes every checkpoint's activations to disk and the chain reads them;
    #: ``"streamed"``: nothing of size tokens x d_model is written - each link runs its checkpoint's model on its
    #: own slice of the token stream on the fly (forward stopped at the hooked layer) into a shuffling buffer,
    #: and the analysis stages compute one checkpoint's analysis set at a time. The paper presets stream.
    mode: Literal["cached", "streamed"] = "cached"
    #: Rows shuffled together (the training buffer): a link's rows are cut, in token order, into blocks of this
    #: many rows and each block is permuted (seeded). ``None``: the whole link is one block (a global shuffle).
    buffer_tokens: int | None = None
    #: The model forward's compute dtype: ``"bfloat16"`` runs it under autocast (activations returned in float32;
    #: the SAE keeps float32 master weights).
    forward_dtype: Literal["float32", "bfloat16"] = "float32"
    #: Allow TF32 matmuls on CUDA in the model forward only, cached or streamed alike (faster on Ampere and later;
    #: about 1e-3 relative error in the forward); the flag is set around each batch's forward and restored.
    tf32: bool = False
    #: Which activation of block ``layer`` (:data:`CACHE_HOOKS`): ``"resid_pre"`` (entering the block),
    #: ``"resid_mid"`` (after its attention; models running attention and MLP in sequence only), ``"resid_post"``
    #: (leaving it), ``"attn_out"`` or ``"mlp_out"`` (the sublayer's output). The forward stops at the hook.
    hook: Literal["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"] = "resid_pre"
    #: Several layers studied in one run (``()``: the single layer ``layer``). Each layer ``l`` gets its own run
    #: directory ``layer{l}/`` inside the run's (its chain, baselines, analyses, figures: the run with
    #: ``cache.layer = l``, see :mod:`saetrack.pipeline.layers`), and the activation cache computes every layer from
    #: one forward pass per checkpoint, run to the deepest layer only. ``layer`` is then unused.
    layers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.layer < 0:
            fail("cache", "layer", self.layer, "must be >= 0")
        if any(layer < 0 for layer in self.layers) or list(self.layers) != sorted(set(self.layers)):
            fail("cache", "layers", self.layers, "non-negative layer indices, strictly ascending (e.g. [2, 4])")
        if self.hook not in CACHE_HOOKS:
            fail("cache", "hook", self.hook, f"one of {', '.join(repr(h) for h in CACHE_HOOKS)}")
        require_positive(
            "cache",
            {
                "context_length": self.context_length,
                "analysis_contexts": self.analysis_contexts,
                "heldout_tokens": self.heldout_tokens,
                "batch_contexts": self.batch_contexts,
            },
        )
        if self.dtype not in ("float32", "float16", "bfloat16"):
            fail("cache", "dtype", self.dtype, "one of 'float32', 'float16', 'bfloat16'")
        if self.mode not in ("cached", "streamed"):
            fail("cache", "mode", self.mode, "one of 'cached', 'streamed'")
        if self.buffer_tokens is not None:
            require_positive("cache", {"buffer_tokens": self.buffer_tokens})
        if self.forward_dtype not in ("float32", "bfloat16"):
            fail("cache", "forward_dtype", self.forward_dtype, "one of 'float32', 'bfloat16'")

    @property
    def hook_name(self) -> str:
        """The transformer_lens hook the SAE reads: ``blocks.{layer}.hook_{hook}``."""
        return f"blocks.{self.layer}.hook_{self.hook}"

    @property
    def streamed(self) -> bool:
        """Whether activations are computed on the fly instead of read from the on-disk cache."""
        return self.mode == "streamed"


#: Fields added to :class:`CacheConfig` after runs were made: left out of the config hashes while at these
#: defaults, so run directories made before them stay current.
CACHE_HASH_DEFAULTS: dict[str, object] = {
    "mode": "cached",
    "buffer_tokens": None,
    "forward_dtype": "float32",
    "tf32": False,
    "hook": "resid_pre",
    "layers": (),
}


def hashed_cache_section(section: dict[str, object]) -> dict[str, object]:
    """The cache section as config hashes see it: :data:`CACHE_HASH_DEFAULTS` fields dropped while at default."""
    return {k: v for k, v in section.items() if not (k in CACHE_HASH_DEFAULTS and _same(CACHE_HASH_DEFAULTS[k], v))}


def _same(default: object, value: object) -> bool:
    """Whether a section's ``value`` is the ``default`` (a tuple default equals the list JSON gives back)."""
    if isinstance(default, tuple) and isinstance(value, list | tuple):
        return tuple(value) == default
    return default == value
