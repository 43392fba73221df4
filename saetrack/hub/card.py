"""The model card (README.md) written beside a chain pushed to the Hub."""

from __future__ import annotations

import math
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from saetrack.config.run import RunConfig
from saetrack.hub.layout import INDEX_FILE

__all__ = [
    "model_card",
    "sae_lens_version",
]


def sae_lens_version() -> str:
    """The installed sae-lens version (named in the model card), or ``"unknown"``."""
    try:
        return metadata.version("sae-lens")
    except metadata.PackageNotFoundError:  # pragma: no cover - sae_lens is a hard dependency
        return "unknown"


def _fmt(value: Any, spec: str, scale: float = 1.0) -> str:
    if value is None:
        return "n/a"
    number = float(value)
    return "n/a" if not math.isfinite(number) else format(number * scale, spec)


def _model_section(run: RunConfig, cache_manifest: Mapping[str, Any] | None) -> list[str]:
    model = run.model
    steps = run.sae_steps
    lines = ["## Model", ""]
    if model.source == "hub":
        lines += [
            f"- Hub repo: [`{model.repo_id}`](https://huggingface.co/{model.repo_id})",
            f"- revisions: `{model.revision_template}` (one per checkpoint step; the chain's steps are "
            f"{', '.join(str(s) for s in steps)})",
        ]
        described = (cache_manifest or {}).get("config", {}).get("model", {})
        resolved = described.get("resolved_commits") or {}
        if resolved:
            lines += [
                "- resolved commits (the activation cache's record of what each revision pointed to):",
                "",
                "| step | revision | commit |",
                "|---:|---|---|",
            ]
            lines += [
                f"| {step} | `{model.revision_template.format(step=step)}` | `{resolved[str(step)]}` |"
                for step in steps
                if str(step) in resolved
            ]
        else:
            lines.append("- resolved commits: not recorded (the run's cache manifest was not available)")
    elif model.source == "suite":
        suite = run.suite
        corpus = run.corpus
        lines += [
            f"- the locally trained nano suite of saetrack, preset `{run.preset}`: a GPT-NeoX (Pythia architecture) "
            "model trained by saetrack itself; its checkpoints are not on the Hub.",
        ]
        if suite is not None:
            lines.append(
                f"- {suite.n_layers} layers, d_model {suite.d_model}, {suite.n_heads} heads, d_mlp {suite.d_mlp}, "
                f"context {suite.context_length}, {suite.total_steps} training steps"
            )
        if corpus is not None:
            lines.append(f"- corpus: `{corpus.source}` (vocabulary {corpus.vocab_size})")
        lines.append(f"- rebuild it (and everything else) with `python run_all.py --preset {run.preset}`")
    else:
        lines.append(f"- local checkpoint folder `{model.local_path}` (revisions `{model.revision_template}`)")
    lines.append(f"- checkpoint steps with an SAE: {', '.join(str(s) for s in steps)}")
    return lines


def _front_matter(run: RunConfig) -> list[str]:
    """The card's YAML front matter: library, tags and the base model."""
    tags = ["sae-track", "sparse-autoencoder", "saelens", "saetrack", "interpretability", "training-dynamics"]
    front = ["---", "library_name: saelens", "tags:", *(f"- {tag}" for tag in tags)]
    if run.model.source == "hub" and run.model.repo_id:
        front.append(f"base_model: {run.model.repo_id}")
    front.append("---")
    return front


def _hyperparameter_section(run: RunConfig, steps: list[int], sae_cfg: Mapping[str, Any] | None) -> list[str]:
    """The SAE's hyperparameters (every chain field) and the token budgets of the first and later links."""
    chain = run.chain
    lines = ["## SAE hyperparameters", ""]
    if sae_cfg:
        lines += [
            f"SAELens `{sae_cfg.get('architecture', 'standard')}` SAE, d_in {sae_cfg.get('d_in')}, "
            f"d_sae {sae_cfg.get('d_sae')}.",
            "",
        ]
    lines += ["| field | value |", "|---|---|"]
    lines += [f"| `{name}` | `{value}` |" for name, value in run.to_dict()["chain"].items()]
    lines += [
        "",
        "Each link's effective L1 coefficient (with `l1_scale = activation_norm`, scaled by its own activations' "
        "norm) is saved in its `cfg.json` and `manifest.json`.",
        "",
        "## Token budgets",
        "",
        f"- first link (random init, step {steps[0] if steps else 'n/a'}): {chain.first_tokens:,} tokens",
        f"- every later link (initialised from the previous link): {chain.link_tokens:,} tokens",
        f"- batch size {chain.batch_size} tokens; each training token is seen once",
        "",
    ]
    return lines


def _metrics_section(links: list[Mapping[str, Any]]) -> list[str]:
    """The per-link quality table (explained variance, L0, dead and dense shares, CE recovered)."""
    lines = [
        "## Per-link metrics",
        "",
        "Held-out activations of each link's own checkpoint (CE recovered: n/a where the clean and zero-ablation "
        "losses are too close to define it).",
        "",
        "| link | step | explained variance | L0 | dead % | dense % | CE recovered |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for position, link in enumerate(links):
        m = link.get("metrics", {})
        lines.append(
            f"| {link.get('position', position) + 1} | {link.get('step')} | {_fmt(m.get('explained_variance'), '.3f')} "
            f"| {_fmt(m.get('l0'), '.1f')} | {_fmt(m.get('dead_fraction'), '.1f', 100)} "
            f"| {_fmt(m.get('dense_fraction'), '.1f', 100)} | {_fmt(m.get('ce_recovered'), '.3f')} |"
        )
    return lines


def _loading_section(repo: str, steps: list[int]) -> list[str]:
    """How to load one link with SAELens and the whole chain with saetrack, and the files of the repo."""
    first = f"step{steps[0]}" if steps else "step0"
    return [
        "",
        "## How to load",
        "",
        "One link with SAELens (reads the repo's `main` branch; SAELens has no revision argument):",
        "",
        "```python",
        "from sae_lens import SAE",
        "",
        f'sae = SAE.from_pretrained("{repo}", "{first}")  # sae_id: step{{N}}, one of the steps above',
        "```",
        "",
        "The whole chain with saetrack, pinned to a commit and hash-checked, installed into a run directory so "
        "that notebooks 03-05 use it as if notebook 02 had trained it:",
        "",
        "```python",
        "from saetrack import paths",
        "from saetrack.hub import download_chain, install_chain, run_config_of",
        "",
        'revision = "<40-hex commit hash of this upload>"  # repo page -> Files and versions -> History',
        f'snapshot = download_chain("{repo}", revision)',
        "run = run_config_of(snapshot)  # the exact config the chain was trained with",
        "folders = install_chain(snapshot, paths.run_dir(run.preset), run)  # {step: folder}",
        "```",
        "",
        "(`saetrack.hub.load_hub_chain(repo_id, revision, run_dir, run)` does both steps.) The analyses also need the "
        "run's corpus, model checkpoints and activation cache: `python run_all.py` with this config builds them and "
        "finds the installed chain current (notebook 02 trains nothing).",
        "",
        "## Files",
        "",
        "- `manifest.json`: the chain manifest (config, config hash, steps, per-link training records and metrics)",
        "- `step{N}/`: one link in SAELens format (`cfg.json`, `sae_weights.safetensors`, `sparsity.safetensors`) "
        "and its saetrack `manifest.json` (loss curve, metrics)",
        f"- `{INDEX_FILE}`: the full run config, the layout version and the SHA-256 of every other file",
        "",
    ]


def _crosscoder_section(repo: str, crosscoder: Mapping[str, Any]) -> list[str]:
    """What the pushed crosscoder is, its snapshots and size, and how to load it."""
    steps = [int(s) for s in crosscoder.get("snapshot_steps", [])]
    return [
        "",
        "## Cross-snapshot crosscoder",
        "",
        "The same upload holds, under `crosscoder/`, a cross-snapshot crosscoder on the same checkpoints and hook "
        "(Ge et al., *Evolution of Concepts in Language Model Pre-Training*, arXiv 2509.17196): one JumpReLU "
        "dictionary whose shared encoder reads a token's activations at every snapshot at once and whose decoder "
        "is one per snapshot, so a feature's decoder norm at a snapshot measures its presence there.",
        "",
        f"- snapshots: {len(steps)} checkpoint steps, {', '.join(str(s) for s in steps)}",
        f"- d_model {crosscoder.get('d_model')}, d_sae {crosscoder.get('d_sae')} features, hook "
        f"`{crosscoder.get('hook_name')}`; config hash `{crosscoder.get('config_hash')}`",
        "- files: `crosscoder/crosscoder.safetensors` and `crosscoder/cfg.json` in the format documented in "
        "`saetrack.crosscoder.io` (inputs divided by the per-snapshot `input_scale`), its `manifest.json` and loss "
        "curve `curve.json`; all hashed in the index",
        "",
        "```python",
        "from saetrack.hub import load_hub_crosscoder",
        "",
        f'saved = load_hub_crosscoder("{repo}", revision, "crosscoder-model")  # pinned to the commit, hash-checked',
        "saved.model, saved.snapshot_steps  # a saetrack.crosscoder.model.Crosscoder and its snapshots' steps",
        "```",
        "",
        "A downloaded `crosscoder/` folder loads with `saetrack.crosscoder.io.load_crosscoder(folder)`.",
    ]


def model_card(
    run: RunConfig,
    chain_manifest: Mapping[str, Any],
    *,
    repo_id: str | None = None,
    cache_manifest: Mapping[str, Any] | None = None,
    sae_cfg: Mapping[str, Any] | None = None,
    crosscoder: Mapping[str, Any] | None = None,
) -> str:
    """The model card (``README.md``) of a pushed chain: YAML front matter, provenance, hyperparameters, metrics.

    ``chain_manifest`` is the chain's ``manifest.json`` (its ``links`` give the per-link metrics table);
    ``cache_manifest`` the run's ``cache/manifest.json`` (resolved Hub commits of the model, when recorded);
    ``sae_cfg`` the first link's SAELens ``cfg.json`` (dictionary size and architecture); ``crosscoder`` the
    index entry of a crosscoder pushed beside the chain (adds its section: snapshots, size, how to load it).
    """
    repo = repo_id or "<owner>/<name>"
    hook = run.cache.hook_name
    links = list(chain_manifest.get("links", []))
    steps = [int(s) for s in chain_manifest.get("steps", run.sae_steps)]
    model_name = run.model.repo_id if run.model.source == "hub" else f"saetrack-{run.preset}"
    lines = [
        *_front_matter(run),
        "",
        f"# SAE-Track chain: `{model_name}`, `{hook}`",
        "",
        "A chain of sparse autoencoders over a language model's training checkpoints, trained with "
        "[saetrack](https://arxiv.org/abs/2412.17626) (SAE-Track, Xu et al., *Tracking the Feature Dynamics in LLM "
        "Training*). The first SAE is randomly initialised; every later link starts from the previous link's "
        "weights and trains on its own checkpoint's activations, so feature *i* of one link is (mostly) feature "
        "*i* of the next.",
        "",
        f"- preset: `{run.preset}`, seed {run.seed} (chain seed {run.chain_seed}), {len(steps)} links, "
        f"chain config hash `{chain_manifest.get('config_hash')}`",
        "",
        *_model_section(run, cache_manifest),
        "",
        "## Hook",
        "",
        f"`{hook}` (the residual stream entering block {run.cache.layer}), read from the model **without weight "
        "processing** (no LayerNorm folding or centring): it equals the Hugging Face model's "
        f"`hidden_states[{run.cache.layer}]`. Context length {run.cache.context_length}, no BOS prepended.",
        "",
    ]
    lines += _hyperparameter_section(run, steps, sae_cfg)
    lines += _metrics_section(links)
    lines += _loading_section(repo, steps)
    if crosscoder:
        lines += _crosscoder_section(repo, crosscoder)
    return "\n".join(lines)
