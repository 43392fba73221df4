"""Sharing SAE-Track chains on the Hugging Face Hub: push a finished chain, load it back pinned and hash-checked.

A pushed chain is the run's ``chain/`` folder as it is — the chain ``manifest.json`` and one ``step{N}/`` folder per
link in SAELens format (``cfg.json``, ``sae_weights.safetensors``, ``sparsity.safetensors``, the link's
``manifest.json``) — plus a model card (``README.md``) and :data:`INDEX_FILE` (``saetrack_chain.json``: the full run
config, the layout version, the SAE ids and the SHA-256 of every other file of the upload).

Because every link sits in a folder named by its SAE id at the repo root, SAELens loads a link straight from the
repo: ``SAE.from_pretrained(repo_id, "step{N}")`` — a ``release`` that is not in SAELens' registry
(``pretrained_saes.yaml``) is taken as the Hub repo id and ``sae_id`` as the folder holding ``cfg.json`` and the
weights (``get_repo_id_and_folder_name`` and ``sae_lens_huggingface_loader`` in ``sae_lens`` 6.54). SAELens has no
revision argument, so it always reads the repo's ``main`` branch; saetrack itself only loads a chain pinned to a
commit hash (:func:`download_chain`) and checks every file's hash before installing it into a run directory
(:func:`install_chain`), where notebooks 03-05 use it exactly as if notebook 02 had trained it.

Tokens: passed through to ``huggingface_hub`` as given (``None`` lets it use ``HF_TOKEN`` or the stored login) and
never printed, logged, written to a file or put into an error message.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

from saetrack import __version__, paths, store
from saetrack.chain import chain_config_hash, load_chain
from saetrack.config import RunConfig

__all__ = [
    "CARD_FILE",
    "INDEX_FILE",
    "LAYOUT_VERSION",
    "ChainConfigMismatchError",
    "ChainIntegrityError",
    "RemoteFilesExistError",
    "download_chain",
    "install_chain",
    "load_hub_chain",
    "model_card",
    "push_chain",
    "run_config_of",
    "stage_chain",
    "validate_repo_id",
    "verify_chain_files",
]

log = logging.getLogger(__name__)

#: The index of a pushed chain: run config, layout version, SAE ids and the SHA-256 of every other file.
INDEX_FILE = "saetrack_chain.json"
#: The model card.
CARD_FILE = "README.md"
#: Version of the pushed layout described in the module docstring; bumped on incompatible changes.
LAYOUT_VERSION = 1

_COMMIT_HASH = re.compile(r"^[0-9a-f]{40}$")
_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REPO_ID = re.compile(rf"^{_REPO_PART}/{_REPO_PART}$")
#: Run-config sections the chain's config hash depends on (see ``chain_config_hash`` and ``cache_config_hash``).
_HASHED_SECTIONS = ("seed", "corpus", "suite", "model", "cache", "chain")


class ChainIntegrityError(store.StaleArtifactError):
    """A downloaded chain is incomplete or a file's SHA-256 differs from the one recorded when it was pushed."""


class ChainConfigMismatchError(store.StaleArtifactError):
    """A pushed chain was trained with another config than the run it is being installed into."""


class RemoteFilesExistError(FileExistsError):
    """Files to be pushed already exist in the Hub repo and overwriting them was not asked for."""


# ----------------------------------------------------------------------------------------------
# Validation helpers
# ----------------------------------------------------------------------------------------------


def validate_repo_id(repo_id: str) -> str:
    """Return ``repo_id`` if it is a Hub model repo id ``"owner/name"``, else raise ``ValueError``."""
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id) or ".." in repo_id or "--" in repo_id:
        raise ValueError(
            f"repo_id = {repo_id!r} is invalid: expected 'owner/name' (letters, digits, '-', '_', '.'; "
            "no '--' or '..'), e.g. 'my-user/saetrack-nano-chain'."
        )
    return repo_id


def _check_commit(revision: str) -> str:
    if not isinstance(revision, str) or not _COMMIT_HASH.match(revision.lower()):
        raise ValueError(
            f"revision = {revision!r} is not a commit hash: a chain is loaded pinned to the 40-hex commit it was "
            "pushed as, because a branch or tag can move and the analyses would silently use other SAEs. "
            "push_chain returns the commit hash; otherwise find it on the repo page under 'Files and versions' -> "
            "'History', or with `huggingface_hub.HfApi().list_repo_commits(repo_id)`."
        )
    return revision.lower()


def _safe_relative(rel: str) -> PurePosixPath:
    path = PurePosixPath(rel)
    if path.is_absolute() or not path.parts or any(part in ("", ".", "..") for part in path.parts):
        raise ChainIntegrityError(f"{INDEX_FILE} lists the unsafe path {rel!r}; refusing to use this chain.")
    return path


def _sae_lens_version() -> str:
    try:
        return metadata.version("sae-lens")
    except metadata.PackageNotFoundError:  # pragma: no cover - sae_lens is a hard dependency
        return "unknown"


# ----------------------------------------------------------------------------------------------
# Model card
# ----------------------------------------------------------------------------------------------


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


def model_card(
    run: RunConfig,
    chain_manifest: Mapping[str, Any],
    *,
    repo_id: str | None = None,
    cache_manifest: Mapping[str, Any] | None = None,
    sae_cfg: Mapping[str, Any] | None = None,
) -> str:
    """The model card (``README.md``) of a pushed chain: YAML front matter, provenance, hyperparameters, metrics.

    ``chain_manifest`` is the chain's ``manifest.json`` (its ``links`` give the per-link metrics table);
    ``cache_manifest`` the run's ``cache/manifest.json`` (resolved Hub commits of the model, when recorded);
    ``sae_cfg`` the first link's SAELens ``cfg.json`` (dictionary size and architecture).
    """
    repo = repo_id or "<owner>/<name>"
    chain = run.chain
    hook = run.cache.hook_name
    links = list(chain_manifest.get("links", []))
    steps = [int(s) for s in chain_manifest.get("steps", run.sae_steps)]
    tags = ["sae-track", "sparse-autoencoder", "saelens", "saetrack", "interpretability", "training-dynamics"]
    front = ["---", "library_name: saelens", "tags:", *(f"- {tag}" for tag in tags)]
    if run.model.source == "hub" and run.model.repo_id:
        front.append(f"base_model: {run.model.repo_id}")
    front.append("---")
    model_name = run.model.repo_id if run.model.source == "hub" else f"saetrack-{run.preset}"
    lines = [
        *front,
        "",
        f"# SAE-Track chain: `{model_name}`, `{hook}`",
        "",
        "A chain of sparse autoencoders over a language model's training checkpoints, trained with "
        "[saetrack](https://arxiv.org/abs/2412.17626) (SAE-Track, Xu et al., *Tracking the Feature Dynamics in LLM "
        "Training*). The first SAE is randomly initialised; every later link starts from the previous link's "
        "weights and trains on its own checkpoint's activations, so feature *i* of one link is (mostly) feature "
        "*i* of the next.",
        "",
        f"- preset: `{run.preset}`, seed {run.seed}, {len(steps)} links, "
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
        "## SAE hyperparameters",
        "",
    ]
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
    first = f"step{steps[0]}" if steps else "step0"
    lines += [
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
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Staging and pushing
# ----------------------------------------------------------------------------------------------


def _link_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def stage_chain(run_dir: Path, run: RunConfig, dest: Path, *, repo_id: str | None = None) -> Path:
    """Write the exact folder a push uploads into ``dest`` (new or empty) and return it.

    The finished chain of ``run`` in ``run_dir/chain`` (checked with :func:`~saetrack.chain.load_chain`; every
    link's files checked against its manifest's hashes) is copied byte for byte — chain ``manifest.json`` and every
    ``step{N}/`` with all its files — plus :data:`CARD_FILE` (:func:`model_card`; ``repo_id`` fills its load
    snippets) and :data:`INDEX_FILE`.
    """
    run_dir, dest = Path(run_dir), Path(dest)
    folders = load_chain(run_dir, run)
    chain_dir = run_dir / paths.CHAIN_DIR
    manifest = store.read_manifest(chain_dir) or {}
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"staging folder {dest} is not empty; stage into a new or empty folder.")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(chain_dir / paths.MANIFEST, dest / paths.MANIFEST)
    sae_ids = []
    for step, folder in folders.items():
        link = store.read_manifest(folder)
        if link is None or link.get("config_hash") != manifest.get("config_hash"):
            raise store.StaleArtifactError(
                f"chain link {folder} is unfinished or from another config; rerun notebook 02."
            )
        for name, digest in link.get("files", {}).items():
            if not (folder / name).is_file() or store.file_sha256(folder / name) != digest:
                raise store.StaleArtifactError(
                    f"chain link file {folder / name} is missing or differs from its manifest's SHA-256; "
                    "rerun notebook 02 (force=True) before pushing."
                )
        sae_id = paths.step_dir_name(step)
        (dest / sae_id).mkdir()
        for file in _link_files(folder):
            shutil.copyfile(file, dest / sae_id / file.name)
        sae_ids.append(sae_id)
    cache_manifest_path = run_dir / paths.CACHE_DIR / paths.MANIFEST
    cache_manifest = store.read_json(cache_manifest_path) if cache_manifest_path.is_file() else None
    first_cfg = dest / sae_ids[0] / "cfg.json"
    sae_cfg = json.loads(first_cfg.read_text()) if first_cfg.is_file() else None
    card = model_card(run, manifest, repo_id=repo_id, cache_manifest=cache_manifest, sae_cfg=sae_cfg)
    (dest / CARD_FILE).write_text(card, encoding="utf-8")
    files = {
        p.relative_to(dest).as_posix(): store.file_sha256(p)
        for p in sorted(dest.rglob("*"))
        if p.is_file() and p.relative_to(dest).as_posix() != INDEX_FILE
    }
    index = {
        "saetrack_layout_version": LAYOUT_VERSION,
        "saetrack_version": __version__,
        "sae_lens_version": _sae_lens_version(),
        "preset": run.preset,
        "hook_name": run.cache.hook_name,
        "chain_config_hash": manifest.get("config_hash"),
        "steps": [int(s) for s in folders],
        "sae_ids": sae_ids,
        "run_config": run.to_dict(),
        "files": files,
    }
    store.write_json(dest / INDEX_FILE, index)
    return dest


def _remote_files(api: Any, repo_id: str, revision: str | None, token: str | None) -> list[str]:
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        return list(api.list_repo_files(repo_id, revision=revision, repo_type="model", token=token))
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError):
        return []


def push_chain(
    run_dir: Path,
    run: RunConfig,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool = True,
    overwrite: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    api: Any | None = None,
) -> str:
    """Push the finished chain of ``run`` to the Hub model repo ``repo_id`` in one commit; return its commit hash.

    The folder :func:`stage_chain` writes is uploaded with ``HfApi.upload_folder`` to branch ``revision``
    (default ``main``; created if missing). The repo is created if missing (``private`` applies then only). If any
    file to be uploaded already exists in the repo at that revision, nothing is uploaded and
    :class:`RemoteFilesExistError` lists the clashing paths, unless ``overwrite=True`` (files not in this upload
    are left untouched). ``token`` goes to ``huggingface_hub`` as given (``None``: ``HF_TOKEN`` or the stored
    login) and is never printed, logged or stored. ``api`` replaces ``huggingface_hub.HfApi()`` (tests).
    Load the result with :func:`load_hub_chain` and the returned hash.
    """
    validate_repo_id(repo_id)
    if revision is not None and (not revision or _COMMIT_HASH.match(revision.lower())):
        raise ValueError(f"revision = {revision!r} is invalid: push to a branch name (or None for 'main').")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    with tempfile.TemporaryDirectory(prefix="saetrack-hub-") as tmp:
        staged = stage_chain(Path(run_dir), run, Path(tmp) / "chain", repo_id=repo_id)
        uploads = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file())
        log.info(
            "pushing %d files (%d links) of preset %s to %s", len(uploads), len(run.sae_steps), run.preset, repo_id
        )
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model", token=token)
        if revision not in (None, "main"):
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model", token=token)
        clashes = sorted(set(uploads) & set(_remote_files(api, repo_id, revision, token)))
        if clashes and not overwrite:
            shown = ", ".join(clashes[:20]) + (f", ... ({len(clashes)} in all)" if len(clashes) > 20 else "")
            raise RemoteFilesExistError(
                f"{repo_id} at revision {revision or 'main'!r} already holds files this push would replace: {shown}. "
                "Nothing was uploaded. Pass overwrite=True (run_all.py: --hub-overwrite) to replace them, or push "
                "to another repo or branch."
            )
        message = commit_message or (
            f"saetrack chain {run.preset}: {len(run.sae_steps)} SAEs at {run.cache.hook_name} "
            f"(config {chain_config_hash(run)})"
        )
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(staged),
            revision=revision,
            repo_type="model",
            commit_message=message,
            token=token,
        )
    commit = str(getattr(info, "oid", "") or "")
    if not _COMMIT_HASH.match(commit):
        raise RuntimeError(f"the upload to {repo_id} returned no commit hash (got {commit!r}).")
    log.info("pushed %s at commit %s", repo_id, commit)
    return commit


# ----------------------------------------------------------------------------------------------
# Downloading and installing
# ----------------------------------------------------------------------------------------------


def _read_index(folder: Path) -> dict[str, Any]:
    path = folder / INDEX_FILE
    if not path.is_file():
        raise ChainIntegrityError(f"{folder} has no {INDEX_FILE}: it is not a chain pushed by saetrack.hub.")
    index = store.read_json(path)
    version = index.get("saetrack_layout_version")
    if version != LAYOUT_VERSION:
        raise ChainIntegrityError(
            f"{path} has layout version {version!r}; this saetrack reads version {LAYOUT_VERSION}. "
            "Upgrade saetrack (or load a chain pushed by this version)."
        )
    return index


def verify_chain_files(folder: Path) -> dict[str, Any]:
    """Check every file listed in ``folder``'s :data:`INDEX_FILE` against its SHA-256; return the index.

    A missing file, a changed file or an unsafe path raises :class:`ChainIntegrityError` naming the file.
    """
    folder = Path(folder)
    index = _read_index(folder)
    files = index.get("files") or {}
    for sae_id in index.get("sae_ids", []):
        if f"{sae_id}/cfg.json" not in files or f"{sae_id}/sae_weights.safetensors" not in files:
            raise ChainIntegrityError(f"{INDEX_FILE} in {folder} lists no SAELens files for link {sae_id!r}.")
    if paths.MANIFEST not in files:
        raise ChainIntegrityError(f"{INDEX_FILE} in {folder} does not list the chain {paths.MANIFEST}.")
    for rel, digest in sorted(files.items()):
        path = folder / _safe_relative(rel)
        if not path.is_file():
            raise ChainIntegrityError(f"file {rel} of the pushed chain is missing from {folder}.")
        actual = store.file_sha256(path)
        if actual != digest:
            raise ChainIntegrityError(
                f"file {rel} of the pushed chain is corrupt: SHA-256 {actual} differs from the {digest} recorded at "
                f"push time (in {folder}). Delete it from the cache and download again."
            )
    return index


def download_chain(
    repo_id: str,
    revision: str,
    *,
    cache_dir: str | Path | None = None,
    token: str | None = None,
) -> Path:
    """Download (or reuse from the HF cache) the chain pushed to ``repo_id`` at commit ``revision``; return its folder.

    ``revision`` must be a 40-hex commit hash (what :func:`push_chain` returns): a branch name raises
    ``ValueError``, since a branch can move. Every file is checked against the SHA-256 in :data:`INDEX_FILE`
    (:func:`verify_chain_files`). With ``HF_HUB_OFFLINE=1`` only the cache is used.
    """
    validate_repo_id(repo_id)
    commit = _check_commit(revision)
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(repo_id, revision=commit, cache_dir=cache_dir, token=token, repo_type="model"))
    verify_chain_files(folder)
    return folder


def run_config_of(snapshot: Path) -> RunConfig:
    """The full :class:`~saetrack.config.RunConfig` a pushed chain was trained with (to rebuild the exact run)."""
    return RunConfig.from_dict(_read_index(Path(snapshot))["run_config"])


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, Mapping):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


def _config_differences(pushed: Mapping[str, Any], ours: Mapping[str, Any]) -> list[str]:
    flat_pushed = _flatten({k: pushed.get(k) for k in _HASHED_SECTIONS})
    flat_ours = _flatten({k: ours.get(k) for k in _HASHED_SECTIONS})
    return [
        f"{name}: pushed {flat_pushed.get(name, '<absent>')!r}, this run {flat_ours.get(name, '<absent>')!r}"
        for name in sorted(set(flat_pushed) | set(flat_ours))
        if flat_pushed.get(name, "<absent>") != flat_ours.get(name, "<absent>")
    ]


def install_chain(snapshot: Path, run_dir: Path, run: RunConfig) -> dict[int, Path]:
    """Install a downloaded chain as ``run_dir/chain`` (atomically, replacing any chain there); return its links.

    The pushed chain's config hash must equal ``chain_config_hash(run)``, else :class:`ChainConfigMismatchError`
    names the differing fields (corpus, suite, model, cache, chain sections and seed). Files are checked against
    their SHA-256 (:func:`verify_chain_files`) and copied byte for byte: the chain ``manifest.json`` and every
    ``step{N}/`` — exactly what notebook 02 would have written, so notebook 02 finds the chain current and
    notebooks 03-05 use it (they also need the run's activation cache, notebook 01). Returns
    :func:`~saetrack.chain.load_chain` of the installed chain.
    """
    snapshot, run_dir = Path(snapshot), Path(run_dir)
    index = verify_chain_files(snapshot)
    manifest = store.read_json(snapshot / paths.MANIFEST)
    expected = chain_config_hash(run)
    pushed_hash = manifest.get("config_hash")
    if pushed_hash != expected:
        differences = _config_differences(index.get("run_config", {}), run.to_dict())
        detail = (
            "; ".join(differences)
            if differences
            else "the chain, cache, model, corpus and suite fields agree, so the activation cache's token plan or "
            "the saetrack version differ"
        )
        raise ChainConfigMismatchError(
            f"the chain in {snapshot} was trained for another config (hash {pushed_hash}, this run's is {expected}): "
            f"{detail}. Build the run from the pushed config (saetrack.hub.run_config_of(snapshot))."
        )
    if index.get("chain_config_hash") != pushed_hash:
        raise ChainIntegrityError(f"{INDEX_FILE} in {snapshot} belongs to another chain than its {paths.MANIFEST}.")
    sae_ids = list(index.get("sae_ids", []))
    wanted = [paths.step_dir_name(int(step)) for step in manifest.get("steps", [])]
    if sae_ids != wanted:
        raise ChainIntegrityError(f"{INDEX_FILE} in {snapshot} lists links {sae_ids}, the chain manifest {wanted}.")
    with store.atomic_dir(run_dir / paths.CHAIN_DIR) as tmp:
        for rel in index["files"]:
            parts = _safe_relative(rel).parts
            if rel == paths.MANIFEST or (len(parts) == 2 and parts[0] in sae_ids):
                target = tmp.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(snapshot.joinpath(*parts), target)
    log.info("installed chain %s (%d links) into %s", pushed_hash, len(sae_ids), run_dir / paths.CHAIN_DIR)
    return load_chain(run_dir, run)


def load_hub_chain(repo_id: str, revision: str, run_dir: Path, run: RunConfig, **kw: Any) -> dict[int, Path]:
    """:func:`download_chain` (``kw``: ``cache_dir``, ``token``) then :func:`install_chain`; returns step -> folder."""
    return install_chain(download_chain(repo_id, revision, **kw), run_dir, run)
